from failsafe.management.base import FailsafeCommand
from failsafe.terminal import help_payload

MANAGE_COMMANDS = [
    "failsafe_status",
    "failsafe_setpassword [--password-stdin]",
    "failsafe_backups [--type T] [--safe]",
    "failsafe_backup [--type MANUAL|SCHEDULED] [--reason R]",
    "failsafe_trigger [--passkey-stdin] [--reason R]",
    "failsafe_marksafe BACKUP_ID",
    "failsafe_compare [BACKUP_ID|live] [--against BACKUP_ID|live]",
    "failsafe_restore BACKUP_ID [--dry-run] [--yes] [--password-stdin] [--allow-cascade]",
    "failsafe_verify [BACKUP_ID|--all]",
    "failsafe_delete BACKUP_ID [--yes] [--force]",
    "failsafe_gc [--dry-run]",
    "failsafe_audit [--verify] [--limit N]",
    "failsafe_unlock [--account USERNAME]",
    "failsafe_terminal [-c COMMAND]",
]


class Command(FailsafeCommand):
    help = "The failsafe commands, as the seed's help_failsafe shows them."

    def run(self, actor, **options):
        payload = help_payload()
        width = max(len(c["Command"]) for c in payload["Commands"])
        lines = [payload["Message"]] + [
            f"  {c['Command']:<{width}}  {c['Description']}" for c in payload["Commands"]
        ]
        lines.append("manage.py equivalents:")
        lines += [f"  {name}" for name in MANAGE_COMMANDS]
        self.emit(payload, "\n".join(lines))
