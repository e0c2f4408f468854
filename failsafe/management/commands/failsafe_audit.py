from django.core.management.base import CommandError

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Show the audit trail, or --verify its HMAC chain against the anchors kept outside "
        "the database."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--verify", action="store_true")
        parser.add_argument("--limit", type=int, default=50, help="how many newest events to show")

    def run(self, actor, *, verify, limit, **options):
        if verify:
            result = services.verify_audit_chain(actor=actor)
            self.emit(seed.audit_chain(result), text.audit_chain(result))
            if result.ok:
                return
            if result.first_broken_seq is None:
                raise CommandError(f"Audit chain not verified: {result.reason}")
            raise CommandError(
                f"Audit chain broken at event #{result.first_broken_seq}: {result.reason}"
            )
        events = list(services.audit_events(actor=actor)[: max(limit, 0)])
        self.emit(seed.audit_events(events), text.audit_events(events))
