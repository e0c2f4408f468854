"""The seed's terminal language: seven commands, one line each, JSON answers.

`manage.py failsafe_terminal` and the web terminal both run lines through `run_command`, so
the language is defined once. Secrets typed inline (the seed's `help_failsafe -start
<passkey>`) are accepted where the line itself is private (an interactive prompt, an HTTPS
body); where it would land in argv, the caller forbids them and the secret is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied

from licensing.exceptions import LicensingError

from . import services
from .exceptions import REFUSALS, FailsafeError, LockedOut
from .render import seed
from .render.text import one_line

MAX_COMMAND_LENGTH = 1000
HELP_HINT = "Type help_failsafe for the list of commands"
MASK = "********"

COMMANDS = [
    ("failsafe status", "Check system status: password set, backups, last safe backup"),
    ("failsafe setpassword <password>", "Set or change the failsafe password (8+ characters)"),
    ("failsafe backups", "List all backups, newest first"),
    ("failsafe marksafe <backup-id>", "Mark a backup as safe: the baseline for comparisons"),
    ("failsafe restore <backup-id>", "Restore from a backup (asks for the failsafe password)"),
    ("help_failsafe", "Show this help"),
    ("help_failsafe -start <passkey>", "Emergency: back up now, compare, investigate"),
]

# ask_secret(name, prompt) returns the secret or None when it cannot be asked for.
SecretAsker = Callable[[str, str], "str | None"]


class TerminalUsageError(FailsafeError):
    """The line is empty, too long, unknown, or lacks an argument."""


@dataclass
class TerminalReply:
    ok: bool
    payload: dict
    error: Exception | None = None

    @property
    def message(self) -> str:
        """The refusal's one line ("" when the command succeeded)."""
        return one_line(self.error) if self.error is not None else ""

    @property
    def kind(self) -> str:
        """usage, denied, locked, failed or ok: what a door maps to its own status codes."""
        if self.ok:
            return "ok"
        if isinstance(self.error, LockedOut):
            return "locked"
        if isinstance(self.error, TerminalUsageError):
            return "usage"
        if isinstance(self.error, PermissionDenied | LicensingError):
            return "denied"
        return "failed"


# The subcommands of `failsafe` that take no secret; any other line with arguments after
# its first two words has them masked, so a typo such as `failsafe setpasword <pw>` still
# keeps the password out of a history.
_PUBLIC_SUBCOMMANDS = {"status", "backups", "marksafe", "restore"}
# The secret a line may carry inline, named as run_command's ask_secret names it.
_INLINE_SECRETS = {
    "help_failsafe": ("passkey", "Server license passkey"),
    "failsafe": ("password", "New failsafe password"),
}


def split_inline_secret(line: str) -> tuple[str, str, tuple[str, str] | None]:
    """(the line to show, the line without its secret, (name, label) of that secret or None)."""
    words = line.split()
    if len(words) > 2:
        head = words[0].lower()
        secret_bearing = head == "help_failsafe" or (
            head == "failsafe" and words[1].lower() not in _PUBLIC_SUBCOMMANDS
        )
        if secret_bearing:
            bare = f"{words[0]} {words[1]}"
            return f"{bare} {MASK}", bare, _INLINE_SECRETS[head]
    shown = " ".join(words)
    return shown, shown, None


def run_command(
    line: str,
    *,
    actor: services.Actor,
    ask_secret: SecretAsker | None = None,
    allow_inline_secrets: bool = True,
) -> TerminalReply:
    try:
        payload = _dispatch(
            _checked(line), actor=actor, ask=ask_secret, inline=allow_inline_secrets
        )
    except REFUSALS as exc:
        return TerminalReply(False, seed.refusal(one_line(exc)), exc)
    return TerminalReply(True, payload)


def _checked(line: str | None) -> str:
    if line is None or not line.strip():
        raise TerminalUsageError(f"Empty command. {HELP_HINT}")
    if len(line) > MAX_COMMAND_LENGTH:
        raise TerminalUsageError(f"Command too long (over {MAX_COMMAND_LENGTH} characters)")
    return line.strip()


def _secret(inline: str, *, name: str, prompt: str, ask, allow_inline: bool) -> str:
    if inline:
        if not allow_inline:
            raise TerminalUsageError(
                "Secrets are not accepted on the command line: leave it out and type it when asked"
            )
        return inline
    secret = ask(name, prompt) if ask else None
    if not secret:
        raise TerminalUsageError(f"{prompt.rstrip(': ')} required")
    return secret


def _dispatch(line: str, *, actor, ask, inline) -> dict:
    words = line.split()
    head = words[0].lower()
    if head == "help_failsafe":
        if len(words) == 1:
            return seed.help(COMMANDS)
        if words[1] == "-start":
            passkey = line.split(None, 2)[2].strip() if len(words) > 2 else ""
            passkey = _secret(
                passkey,
                name="passkey",
                prompt="Server license passkey: ",
                ask=ask,
                allow_inline=inline,
            )
            return seed.trigger(services.trigger(actor=actor, passkey=passkey))
        raise TerminalUsageError(f"Unknown option {words[1]!r} for help_failsafe. {HELP_HINT}")
    if head != "failsafe" or len(words) < 2:
        raise TerminalUsageError(f"Unknown command: {words[0][:40]!r}. {HELP_HINT}")

    sub, args = words[1].lower(), words[2:]
    if sub == "status":
        return seed.status(services.status(actor=actor))
    if sub == "backups":
        return seed.backup_list(list(services.list_backups(actor=actor)))
    if sub == "setpassword":
        return _set_password(line, actor=actor, ask=ask, inline=inline)
    if sub in ("marksafe", "restore"):
        if not args:
            raise TerminalUsageError(f"Usage: failsafe {sub} <backup-id>")
        backup_id = args[0]
        if sub == "marksafe":
            return seed.marked_safe(services.mark_safe(actor=actor, backup_id=backup_id))
        if "--dry-run" in args[1:]:
            return seed.restore(services.restore(actor=actor, backup_id=backup_id, dry_run=True))
        # Validate the id before asking for the password, so a typo costs no secret.
        services.get_backup(backup_id)
        password = _secret(
            "", name="failsafe_password", prompt="Failsafe password: ", ask=ask, allow_inline=inline
        )
        return seed.restore(
            services.restore(actor=actor, backup_id=backup_id, password=password)
        )
    raise TerminalUsageError(f"Unknown command: 'failsafe {sub[:40]}'. {HELP_HINT}")


def _set_password(line: str, *, actor, ask, inline) -> dict:
    parts = line.split(None, 2)
    password = _secret(
        parts[2].strip() if len(parts) > 2 else "",
        name="password",
        prompt="New failsafe password: ",
        ask=ask,
        allow_inline=inline,
    )
    current = None
    if services.failsafe_password_is_set():
        current = _secret(
            "",
            name="current_password",
            prompt="Current failsafe password: ",
            ask=ask,
            allow_inline=inline,
        )
    return seed.password(
        services.set_failsafe_password(actor=actor, password=password, current_password=current)
    )
