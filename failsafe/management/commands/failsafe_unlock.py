from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Lift a lockout caused by wrong passkeys or failsafe passwords."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--account", metavar="USERNAME", help="default: every account")

    def run(self, actor, *, account, **options):
        lifted = services.unlock(actor=actor, account=account)
        self.emit(seed.unlocked(lifted), self.style.SUCCESS(text.unlocked(lifted)))
