from failsafe.management.base import FailsafeCommand
from failsafe.terminal import help_payload


class Command(FailsafeCommand):
    help = "The failsafe commands, as the seed's help_failsafe shows them."

    def run(self, actor, **options):
        payload = help_payload()
        width = max(len(c["Command"]) for c in payload["Commands"])
        lines = [payload["Message"]] + [
            f"  {c['Command']:<{width}}  {c['Description']}" for c in payload["Commands"]
        ]
        lines.append(
            "manage.py equivalents: failsafe_status, failsafe_setpassword, failsafe_backups, "
        )
        lines.append("  failsafe_backup, failsafe_trigger, failsafe_marksafe, failsafe_compare,")
        lines.append(
            "  failsafe_restore, failsafe_verify, failsafe_audit, failsafe_unlock,"
            " failsafe_terminal"
        )
        self.emit(payload, "\n".join(lines))
