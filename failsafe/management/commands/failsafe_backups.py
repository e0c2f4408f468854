from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "List the backups, newest first."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--type", choices=["EMERGENCY", "SCHEDULED", "MANUAL", "PRE_RESTORE"])
        parser.add_argument("--safe", action="store_true", help="only the safe ones")

    def run(self, actor, *, type, safe, **options):
        backups = list(
            services.list_backups(actor=actor, backup_type=type, safe=True if safe else None)
        )
        filters = " ".join(
            part for part in (f"--type {type}" if type else "", "--safe" if safe else "") if part
        )
        safe = services.last_safe_backup()
        self.emit(
            seed.backup_list(backups, last_safe_id=str(safe.id) if safe else None),
            text.backup_list(backups, filters=filters),
        )
