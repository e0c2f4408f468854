from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Take a backup of the captured models now."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--type", choices=["MANUAL", "SCHEDULED"], default="MANUAL")
        parser.add_argument("--reason", default="")

    def run(self, actor, *, type, reason, **options):
        with self.progress() as progress:
            backup = services.create_backup(
                actor=actor, backup_type=type, reason=reason, progress=progress
            )
        self.emit(seed.backup_created(backup), self.style.SUCCESS(text.backup_created(backup)))
