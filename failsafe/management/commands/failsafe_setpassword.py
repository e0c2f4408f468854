from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed


class Command(FailsafeCommand):
    help = "Set or change the failsafe password (asked for, or read from stdin; never argv)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the new password from stdin's first line and, when changing it, "
            "the current one from the second",
        )

    def run(self, actor, *, password_stdin, **options):
        changing = services.failsafe_password_is_set()
        if password_stdin:
            password = self.read_secret("", from_stdin=True)
            current = self.read_secret("", from_stdin=True) if changing else None
        else:
            current = (
                self.read_secret("Current failsafe password: ", from_stdin=False)
                if changing
                else None
            )
            password = self.read_secret("New failsafe password: ", from_stdin=False, confirm=True)
        result = services.set_failsafe_password(
            actor=actor, password=password, current_password=current
        )
        self.emit(seed.password(result), self.style.SUCCESS(result.message))
