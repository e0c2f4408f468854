from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Restore drill: restore a backup (default: the newest safe one) into a scratch "
        "database, check every captured model's rows against its archive, and record the "
        "result. The live data is not touched. Exits non-zero when the drill failed."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "backup_id", nargs="?", default=None, help="default: the newest safe backup"
        )

    def run(self, actor, *, backup_id, **options):
        with self.progress() as progress:
            drill = services.run_drill(actor=actor, backup_id=backup_id, progress=progress)
        self.emit(seed.drill(drill), text.drill(drill))
        if not drill.passed:
            raise CommandError(drill.summary)
