from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = "Lift a lockout caused by wrong passkeys or failsafe passwords."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--account", metavar="USERNAME", help="default: every account")
        parser.add_argument("--password-stdin", action="store_true")

    def run(self, actor, *, account, password_stdin, **options):
        password = self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        lifted = services.unlock(actor=actor, account=account, password=password)
        self.emit(seed.unlocked(lifted), self.style.SUCCESS(text.unlocked(lifted)))
