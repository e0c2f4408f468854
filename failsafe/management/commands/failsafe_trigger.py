from failsafe import services
from failsafe.management.base import FailsafeCommand
from failsafe.render import seed, text


class Command(FailsafeCommand):
    help = (
        "Emergency: back up now and investigate against the last safe backup (needs the passkey)."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--passkey-stdin", action="store_true", help="read the passkey from stdin"
        )
        parser.add_argument("--reason", default="")

    def run(self, actor, *, passkey_stdin, reason, **options):
        passkey = self.read_secret("Server license passkey: ", from_stdin=passkey_stdin)
        with self.progress() as progress:
            result = services.trigger(
                actor=actor, passkey=passkey, reason=reason, progress=progress
            )
        self.emit(seed.trigger(result), text.trigger(result))
