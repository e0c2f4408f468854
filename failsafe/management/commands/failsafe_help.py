from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text
from failsafe.terminal import COMMANDS

MANAGE_COMMANDS = [
    "failsafe_status",
    "failsafe_setpassword [--password-stdin]",
    "failsafe_backups [--type T] [--safe]",
    "failsafe_backup [--type MANUAL|SCHEDULED] [--reason R]",
    "failsafe_trigger [--passkey-stdin] [--reason R]",
    "failsafe_investigation BACKUP_ID",
    "failsafe_marksafe BACKUP_ID [--password-stdin] [--accept-issues]",
    "failsafe_compare [BACKUP_ID|live] [--against BACKUP_ID|live]",
    "failsafe_restore BACKUP_ID [--dry-run] [--yes] [--password-stdin] [--allow-cascade]"
    " [--without-pre-restore-backup [--confirm BACKUP_ID]]"
    " [--only MODEL:KEY,KEY [--at ISO_TIME] | --damage [KINDS]"
    " | --undo-actor NAME --since ISO_TIME]"
    " [--accept-conflicts] [--force-password-reset]",
    "failsafe_verify [BACKUP_ID|--all] [--repair | --replica NAME]",
    "failsafe_drill [BACKUP_ID]",
    "failsafe_replicate [--replica NAME]",
    "failsafe_delete BACKUP_ID [--yes] [--force] [--password-stdin]",
    "failsafe_gc [--dry-run] [--password-stdin]",
    "failsafe_prune [--dry-run] [--password-stdin] [--acknowledge ID | --pin ID | --unpin ID]",
    "failsafe_audit [--verify] [--limit N]",
    "failsafe_unlock [--account USERNAME | --logins USERNAME] [--password-stdin]",
    "failsafe_keys status|rotate|export FILE|import FILE [--password-stdin] [--passphrase-stdin]",
    "failsafe_recover --from URL [--dry-run] [--password-stdin]",
    "failsafe_notify [--test]",
    "failsafe_run_due [--list]",
    "failsafe_terminal [-c COMMAND]",
]


class Command(FailsafeCommand):
    help = "The failsafe commands, as the terminal's help_failsafe shows them."

    def run(self, actor, **options):
        self.emit(seed.help(COMMANDS), text.help(COMMANDS, MANAGE_COMMANDS))
