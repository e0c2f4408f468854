import getpass
import json
import sys

from django.core.management.base import CommandError

from failsafe.management.base import FailsafeCommand
from failsafe.terminal import run_command


class Command(FailsafeCommand):
    help = "Speak the failsafe's terminal language: one command per line, or one with -c."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "-c", dest="command", metavar="COMMAND", help="run one command and exit"
        )

    def run(self, actor, *, command, **options):
        if command is not None:
            # argv is visible to other users of the machine: no secrets in it.
            reply = run_command(
                command, actor=actor, ask_secret=self._ask, allow_inline_secrets=False
            )
            self._print(reply.payload)
            if not reply.ok:
                raise CommandError(reply.message)
            return
        interactive = sys.stdin.isatty()
        if interactive:
            self.stdout.write("RaOS Failsafe terminal. Type help_failsafe, or exit to leave.")
        while True:
            if interactive:
                self.stdout.write("failsafe> ", ending="")
                self.stdout.flush()
            line = sys.stdin.readline()
            if not line or line.strip() in ("exit", "quit"):
                return
            if not line.strip():
                continue
            self._print(run_command(line, actor=actor, ask_secret=self._ask).payload)

    def _ask(self, name, prompt):
        if sys.stdin.isatty():
            return getpass.getpass(prompt)
        # Piped input: the secret is the next line.
        return sys.stdin.readline().rstrip("\r\n") or None

    def _print(self, payload):
        self.stdout.write(json.dumps(payload, indent=2, default=str))
