from failsafe import services
from failsafe.management.base import FailsafeCommand


class Command(FailsafeCommand):
    help = "Mark a backup as safe: the baseline for future comparisons."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("backup_id")

    def run(self, actor, *, backup_id, **options):
        backup = services.mark_safe(actor=actor, backup_id=backup_id)
        payload = {
            "Success": True,
            "Message": "Backup marked as safe environment",
            "BackupId": str(backup.id),
        }
        self.emit(payload, self.style.SUCCESS(f"Backup {backup.id} marked as safe environment"))
