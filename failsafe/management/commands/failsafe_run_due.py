from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Run once, in this process, every failsafe schedule that is due (the rows beat reads; "
        "edit them in the admin), as the system. For sites without a Celery worker: "
        "*/5 * * * * manage.py failsafe_run_due. Exits 0 when everything due ran or nothing "
        "was due, 1 when a task failed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="print the JSON the terminal language answers"
        )
        parser.add_argument(
            "--list",
            action="store_true",
            dest="list_only",
            help="list the schedules and which are due now; run nothing",
        )

    def acting(self, options) -> services.Actor:
        # Scheduled work is the system's, whoever's cron starts it; no SuperAdmin is needed.
        return services.Actor.system()

    def run(self, actor, *, list_only, **options):
        if list_only:
            states = services.list_schedules(actor=actor)
            self.emit(seed.schedules(states), text.schedules(states))
            return
        result = services.run_due(actor=actor)
        lines = [self.style.ERROR(line) if alarm else line for line, alarm in text.run_due(result)]
        self.emit(seed.run_due(result), "\n".join(lines))
        if not result.ok:
            failed = result.failed
            raise CommandError(
                f"{len(failed)} of {len(result.outcomes)} due schedules failed: "
                f"{failed[0].name}: {failed[0].message}"
            )
