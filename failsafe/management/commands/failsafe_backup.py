from failsafe import presenters, services
from failsafe.management.base import FailsafeCommand


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
        payload = {
            "Success": True,
            "Message": "Backup created",
            "BackupId": str(backup.id),
            "Timestamp": presenters.iso(backup.created_at),
            "State": backup.state,
        }
        self.emit(payload, self.style.SUCCESS(f"Backup created: {presenters.backup_line(backup)}"))
