from django.core.management.base import CommandError

from failsafe import presenters, services
from failsafe.management.base import FailsafeCommand


class Command(FailsafeCommand):
    help = "Show the audit trail, or --verify its HMAC chain."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--verify", action="store_true")
        parser.add_argument("--limit", type=int, default=50, help="how many newest events to show")

    def run(self, actor, *, verify, limit, **options):
        if verify:
            result = services.verify_audit_chain(actor=actor)
            payload = {
                "Valid": result.ok,
                "Checked": result.checked,
                "FirstBrokenSeq": result.first_broken_seq,
                "Reason": result.reason or None,
            }
            human = (
                f"Audit chain intact: {result.checked} events verified"
                if result.ok
                else f"AUDIT CHAIN BROKEN at event #{result.first_broken_seq}: {result.reason}"
            )
            self.emit(payload, human)
            if not result.ok:
                raise CommandError(
                    f"Audit chain broken at event #{result.first_broken_seq}: {result.reason}"
                )
            return
        events = list(services.audit_events(actor=actor)[: max(limit, 0)])
        payload = {"Events": [presenters.audit_event(e) for e in events]}
        self.emit(
            payload, "\n".join(presenters.audit_line(e) for e in events) or "No audit events."
        )
