import argparse

from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


def _username(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("a username is required")
    return value


class Command(FailsafeCommand):
    help = (
        "Lift a lockout caused by wrong passkeys or failsafe passwords, or with --logins, "
        "the login lockout of a username."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--account", metavar="USERNAME", help="default: every account")
        which.add_argument(
            "--logins",
            metavar="USERNAME",
            type=_username,
            help="lift the login lockout of USERNAME (and of the addresses its failures came "
            "from) instead",
        )
        parser.add_argument("--password-stdin", action="store_true")

    def run(self, actor, *, account, logins, password_stdin, **options):
        password = self.read_secret("Failsafe password: ", from_stdin=password_stdin)
        lifted = services.unlock(actor=actor, account=account, password=password, logins=logins)
        self.emit(seed.unlocked(lifted), self.style.SUCCESS(text.unlocked(lifted)))
