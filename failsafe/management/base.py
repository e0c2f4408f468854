"""What every `manage.py failsafe_*` command shares: the acting SuperAdmin, --json, refusals.

A command parses its arguments, calls one service and prints the result; a refusal becomes
a one-line CommandError (non-zero exit).
"""

import getpass
import json
import sys
from contextlib import AbstractContextManager, nullcontext

from django.core.management.base import BaseCommand, CommandError

from .. import journal, services
from ..exceptions import REFUSALS, as_refusal
from ..models import AuditEvent
from ..progress import Progress, TerminalProgress
from ..render.text import one_line


class FailsafeCommand(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="the acting SuperAdmin (default: the only one, else the server license's owner)",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the JSON the terminal language answers"
        )

    def handle(self, *args, **options):
        self.options = options
        try:
            actor = self.acting(options)
            # What the command changes, the change journal (PostgreSQL) records as the actor's.
            with journal.attributed(actor.username):
                self.run(actor, **options)
        except REFUSALS as exc:
            raise CommandError(one_line(exc)) from None
        except (CommandError, KeyboardInterrupt):
            raise
        except Exception as exc:
            # Not a refusal of the services (they convert their own failures): a failure in
            # the command itself is still one line, not a traceback.
            raise CommandError(one_line(as_refusal(exc, doing="The command"))) from None

    def acting(self, options) -> services.Actor:
        """The acting SuperAdmin: the one --user names, the only one, or the license's owner."""
        user = services.resolve_superadmin(options.get("user"))
        if not options.get("user") and services.several_superadmins():
            # With several SuperAdmins, who acts is never a surprise: said on stderr, so a
            # script still reads only the result on stdout.
            self.stderr.write(
                f"Acting as {user.get_username()}, the server license's owner "
                "(--user names another SuperAdmin)"
            )
        return services.Actor(user=user, source=AuditEvent.Source.CLI)

    def run(self, actor, **options):
        raise NotImplementedError("each failsafe command implements run()")

    def emit(self, payload: dict, human: str | None = None) -> None:
        """The terminal language's JSON with --json; otherwise the human text (or the JSON,
        indented)."""
        if self.options.get("json") or human is None:
            self.stdout.write(json.dumps(payload, indent=2, default=str))
        else:
            self.stdout.write(human)

    def progress(self) -> AbstractContextManager[Progress | None]:
        """The progress display to pass to a long service call, opened around it.

        Rows, bytes, rate and time left on stderr, when stdout and stderr are both
        terminals and --json is off; otherwise None, and nothing extra is printed, so
        what a script or a pipe reads stays exactly the result.
        """
        if self.options.get("json") or not (self.stdout.isatty() and self.stderr.isatty()):
            return nullcontext(None)
        from rich.console import Console

        # OutputWrapper ends every write with a newline: rich needs the stream itself.
        return TerminalProgress(console=Console(file=self.stderr._out))

    def read_secret(self, prompt: str, *, from_stdin: bool, confirm: bool = False) -> str:
        """A secret comes from stdin (one line) or a prompt; never from argv."""
        if from_stdin:
            return sys.stdin.readline().rstrip("\r\n")
        if not sys.stdin.isatty():
            raise CommandError(
                f"{prompt.rstrip(': ')}: no terminal to ask on; use the --*-stdin option"
            )
        secret = getpass.getpass(prompt)
        if confirm and getpass.getpass("Confirm: ") != secret:
            raise CommandError("The two entries do not match; nothing was changed")
        return secret
