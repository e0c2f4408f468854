from failsafe import presenters, services
from failsafe.management.base import FailsafeCommand


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
        payload = presenters.backup_list(backups)
        lines = [presenters.backup_line(b) for b in backups] or ["No backups yet."]
        self.emit(payload, "\n".join(lines))
