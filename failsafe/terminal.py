"""The seed's terminal language: seven commands, one line each, JSON answers.

`manage.py failsafe_terminal`, the web terminal and the API's terminal endpoint all run lines
through `run_command`, so the language is defined once, and so is what of a line is public
(`parse_line`): the command words, a backup id and the command's known flags. Everything else
typed on a line may be a secret, so it is neither stored, nor shown, nor quoted in an error.

Secrets typed inline (the seed's `help_failsafe -start <passkey>` and
`failsafe setpassword <password>`) are accepted where the line itself is private (an
interactive prompt, an HTTPS body); where it would land in argv, the caller forbids them and
the secret is asked for. The failsafe password of `restore` and `marksafe` is always asked for.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied

from licensing.exceptions import FailsafePasswordNotSet, InvalidPasskey, LicensingError

from . import services
from .exceptions import (
    REFUSALS,
    AmbiguousBackupId,
    BackupNotFound,
    FailsafeError,
    InvalidBackupId,
    LockedOut,
)
from .render import seed
from .render.text import one_line

MAX_COMMAND_LENGTH = 1000
HELP_HINT = "Type help_failsafe for the list of commands"
# The original module's words, which scripts written against it compare.
UNKNOWN_COMMAND = "Unknown failsafe command. Type 'help' or 'help_failsafe' for available commands."
INVALID_ID = "Invalid backup ID format"
MASK = "********"

COMMANDS = [
    ("failsafe status", "Check system status: password set, backups, last safe backup"),
    ("failsafe setpassword <password>", "Set or change the failsafe password (8+ characters)"),
    ("failsafe backups", "List all backups, newest first"),
    ("failsafe backup [reason]", "Take a backup now; the reason is stored and listed with it"),
    (
        "failsafe marksafe <backup-id>",
        "Mark a backup as safe: the baseline for comparisons (asks for the failsafe password;"
        " --accept-issues when it differs from the last safe backup)",
    ),
    (
        "failsafe restore <backup-id>",
        "Restore from a backup (asks for the failsafe password; --dry-run shows the plan;"
        " --only accounts.user:alice,bob restores only those records, --damage"
        " [removed,modified,added] only what the backup and the live data differ in;"
        " --undo-actor NAME --since ISO_TIME only what that user changed since then;"
        " --only … --at ISO_TIME those records as they were at that moment (PostgreSQL);"
        " --accept-conflicts, --force-password-reset)",
    ),
    (
        "failsafe drill [backup-id]",
        "Restore drill: restore a backup (default: the newest safe one) into a scratch"
        " database and check every row against its archive; the live data is not touched",
    ),
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


# --- the grammar: what of a line is public --------------------------------------------


@dataclass(frozen=True)
class Syntax:
    """One command: its words, and what may follow them."""

    words: tuple[str, ...]
    takes_backup_id: bool = False
    # The backup id may be left out (the command then picks one itself).
    backup_id_optional: bool = False
    flags: frozenset[str] = frozenset()
    # Options followed by a value (public: record keys and kinds, never secrets), and those
    # of them whose value may be left out.
    options: frozenset[str] = frozenset()
    optional_values: frozenset[str] = frozenset()
    # (name, label) of the secret the rest of the line holds, named as ask_secret names it.
    secret: tuple[str, str] | None = None
    # The rest of the line is a label the command stores and shows (a backup's reason).
    label: bool = False

    @property
    def name(self) -> str:
        return " ".join(self.words)


TRIGGER = Syntax(("help_failsafe", "-start"), secret=("passkey", "Server license passkey"))
SET_PASSWORD = Syntax(("failsafe", "setpassword"), secret=("password", "New failsafe password"))
MARK_SAFE = Syntax(
    ("failsafe", "marksafe"), takes_backup_id=True, flags=frozenset({"--accept-issues"})
)
RESTORE = Syntax(
    ("failsafe", "restore"),
    takes_backup_id=True,
    flags=frozenset({"--dry-run", "--accept-conflicts", "--force-password-reset"}),
    options=frozenset({"--only", "--damage", "--undo-actor", "--since", "--at"}),
    optional_values=frozenset({"--damage"}),
)
DRILL = Syntax(("failsafe", "drill"), takes_backup_id=True, backup_id_optional=True)
HELP = Syntax(("help_failsafe",))
HELP_SHORT = Syntax(("help",))
STATUS = Syntax(("failsafe", "status"))
BACKUPS = Syntax(("failsafe", "backups"))
BACKUP = Syntax(("failsafe", "backup"), label=True)
# Longest first, so `help_failsafe -start` is found before `help_failsafe`.
GRAMMAR = (
    TRIGGER,
    SET_PASSWORD,
    MARK_SAFE,
    RESTORE,
    DRILL,
    STATUS,
    BACKUPS,
    BACKUP,
    HELP,
    HELP_SHORT,
)
REASON_MAX_LENGTH = 1000

# A backup id as `failsafe backups` lists it, or a prefix of at least 8 hex digits of one.
_ID_TEMPLATE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
_ID_MIN_LENGTH = 8


def looks_like_backup_id(word: str) -> bool:
    if not _ID_MIN_LENGTH <= len(word) <= len(_ID_TEMPLATE):
        return False
    return all(
        char == "-" if slot == "-" else char in string.hexdigits
        for char, slot in zip(word, _ID_TEMPLATE, strict=False)
    )


@dataclass(frozen=True)
class ParsedLine:
    """A line read by the grammar: its public words, its secret, and what is wrong with it."""

    syntax: Syntax | None
    # The words as typed, None where a word is hidden (not a command word, an id or a flag).
    words: tuple[str | None, ...]
    secret: str = ""
    backup_id: str = ""
    flags: frozenset[str] = frozenset()
    # (option, value) of each option with a value, in the order typed.
    options: tuple[tuple[str, str], ...] = ()
    label_text: str = ""
    # A refusal that quotes nothing typed; None when the line can run.
    error: FailsafeError | None = None

    @property
    def shown(self) -> str:
        """The line as a history or a form may show it: each hidden run is one MASK."""
        shown: list[str] = []
        for word in self.words:
            if word is not None:
                shown.append(word)
            elif not shown or shown[-1] != MASK:
                shown.append(MASK)
        return " ".join(shown)

    @property
    def bare(self) -> str:
        """The public words alone: what a form may carry to run the line again."""
        return " ".join(word for word in self.words if word is not None)


def _find_syntax(words: list[str]) -> Syntax | None:
    lowered = [word.lower() for word in words]
    for syntax in GRAMMAR:
        if tuple(lowered[: len(syntax.words)]) == syntax.words:
            return syntax
    return None


def parse_line(line: str) -> ParsedLine:
    """Read a line; never raises, so even a refused line can be shown without its secrets."""
    words = line.split()
    syntax = _find_syntax(words)
    if syntax is None:
        if words and words[0].lower() == "failsafe":
            shown = (words[0], None) if len(words) > 1 else (words[0],)
            return ParsedLine(
                None,
                shown,
                error=TerminalUsageError(UNKNOWN_COMMAND),
            )
        # Not even the first word is a command: it may be a secret typed at the wrong prompt.
        return ParsedLine(
            None,
            (None,) if words else (),
            error=TerminalUsageError(UNKNOWN_COMMAND),
        )

    count = len(syntax.words)
    public, rest = tuple(words[:count]), words[count:]
    if syntax.secret is not None:
        if not rest:
            return ParsedLine(syntax, public)
        # The whole rest of the line, inner spaces kept: a password may contain them.
        secret = line.split(None, count)[count].strip()
        return ParsedLine(syntax, public + (None,), secret=secret)
    if syntax.label:
        # The reason is the backup's visible label, stored and listed: public by design.
        reason = line.split(None, count)[count].strip() if rest else ""
        return ParsedLine(syntax, public + tuple(rest), label_text=reason)
    if not syntax.takes_backup_id:
        if not rest:
            return ParsedLine(syntax, public)
        if syntax is HELP:
            message = "Unknown option for help_failsafe: the only one is -start <passkey>"
        else:
            message = f"{syntax.name} takes no arguments"
        return ParsedLine(syntax, public + (None,), error=TerminalUsageError(message))

    if syntax.backup_id_optional:
        usage = f"Usage: {syntax.name} [<backup-id>]"
        if not rest:
            return ParsedLine(syntax, public)
    else:
        usage = f"Usage: {syntax.name} <backup-id>"
    if not rest:
        return ParsedLine(syntax, public, error=TerminalUsageError(usage))
    shown: list[str | None] = list(public)
    error: FailsafeError | None = None
    backup_id = rest[0]
    if looks_like_backup_id(backup_id):
        shown.append(backup_id)
    else:
        shown.append(None)
        error = InvalidBackupId(f"{INVALID_ID}: give it as failsafe backups lists it")
    flags = set()
    options: list[tuple[str, str]] = []
    tail = rest[1:]
    position = 0
    while position < len(tail):
        word = tail[position]
        position += 1
        if word.lower() in syntax.options:
            shown.append(word)
            has_value = position < len(tail) and not tail[position].startswith("--")
            if has_value and not _option_value_looks_public(word.lower(), tail[position]):
                # Not the shape of a selection: it may be a secret typed in the wrong place.
                shown.append(None)
                position += 1
                error = error or TerminalUsageError(
                    f"{word.lower()} takes MODEL:KEY,KEY (accounts.user:alice,bob) or, for "
                    "--damage, kinds (removed,modified,added); --undo-actor a username, "
                    "--since and --at an ISO time (2026-12-03T14:00:00Z)"
                )
            elif has_value:
                shown.append(tail[position])
                options.append((word.lower(), tail[position]))
                position += 1
            elif word.lower() in syntax.optional_values:
                options.append((word.lower(), ""))
            else:
                error = error or TerminalUsageError(
                    f"{word.lower()} needs a value: "
                    + _VALUE_HINTS.get(word.lower(), "MODEL:KEY,KEY (accounts.user:alice,bob)")
                )
        elif word.lower() in syntax.flags:
            shown.append(word)
            flags.add(word.lower())
        else:
            shown.append(None)
            known = sorted(syntax.flags) + [f"{option} …" for option in sorted(syntax.options)]
            error = error or TerminalUsageError(
                f"{usage} [{' '.join(known)}]; "
                "the failsafe password is asked for, never typed on the line"
                if syntax.flags
                else usage
            )
    return ParsedLine(
        syntax,
        tuple(shown),
        backup_id=backup_id,
        flags=frozenset(flags),
        options=tuple(options),
        error=error,
    )


_LABEL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_.")
_VALUE_HINTS = {
    "--undo-actor": "a username",
    "--since": "an ISO time (2026-12-03T14:00:00Z)",
    "--at": "an ISO time (2026-12-03T14:00:00Z)",
}
# Django's username characters; an ISO time's.
_USERNAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "@.+-_")
_TIME_CHARACTERS = frozenset(string.digits + "-:T.Z+ tz")


def _option_value_looks_public(option: str, value: str) -> bool:
    """Whether an option's value has the shape of a selection, and so is shown: a model
    label and keys for --only, words for --damage."""
    if option == "--damage":
        return all(word.isalpha() and len(word) <= 16 for word in value.split(",") if word)
    if option == "--undo-actor":
        return 0 < len(value) <= 150 and set(value) <= _USERNAME_CHARACTERS
    if option in ("--since", "--at"):
        return 0 < len(value) <= 40 and set(value) <= _TIME_CHARACTERS
    label, colon, _keys = value.partition(":")
    return bool(colon) and "." in label and set(label) <= _LABEL_CHARACTERS


def split_inline_secret(line: str) -> tuple[str, str, tuple[str, str] | None]:
    """(the line to show, the line without its secret, (name, label) of that secret or None)."""
    parsed = parse_line(line)
    inline = parsed.syntax.secret if parsed.secret and parsed.syntax else None
    return parsed.shown, parsed.bare, inline


# --- running a line ---------------------------------------------------------------------


def run_command(
    line: str,
    *,
    actor: services.Actor,
    ask_secret: SecretAsker | None = None,
    allow_inline_secrets: bool = True,
) -> TerminalReply:
    try:
        payload = _dispatch(
            parse_line(_checked(line)), actor=actor, ask=ask_secret, inline=allow_inline_secrets
        )
    except REFUSALS as exc:
        message, action = _original_words(exc)
        return TerminalReply(False, seed.refusal(message, error=one_line(exc), action=action), exc)
    return TerminalReply(True, payload)


def _original_words(exc: Exception) -> tuple[str, str | None]:
    """(Message, Action) of a refusal as the original module words it, where it has words
    for it; our own one line otherwise (it is in `Error` either way)."""
    if isinstance(exc, FailsafePasswordNotSet):
        return (
            "Failsafe password not set. Please set failsafe password first using "
            "'failsafe setpassword <password>'",
            "Setup Required",
        )
    if isinstance(exc, InvalidPasskey):
        return "Invalid server license passkey", "Access Denied"
    if isinstance(exc, BackupNotFound):
        return "Backup not found", None
    if isinstance(exc, InvalidBackupId) and not isinstance(exc, AmbiguousBackupId):
        return INVALID_ID, None
    return one_line(exc), None


def _checked(line: str | None) -> str:
    if line is None or not line.strip():
        return "help"  # as the original module answers an empty line
    if len(line) > MAX_COMMAND_LENGTH:
        raise TerminalUsageError(f"Command too long (over {MAX_COMMAND_LENGTH} characters)")
    return line.strip()


# What a door that cannot ask answers when a command's secret is missing: the original's usage.
USAGE_WITHOUT_SECRET = {
    "passkey": "Usage: help_failsafe -start <SERVER_LICENSE_PASSKEY>",
    "password": "Usage: failsafe setpassword <password>",
}


def _secret(inline: str, *, name: str, prompt: str, ask, allow_inline: bool) -> str:
    if inline:
        if not allow_inline:
            raise TerminalUsageError(
                "Secrets are not accepted on the command line: leave it out and type it when asked"
            )
        return inline
    secret = ask(name, prompt) if ask else None
    if not secret:
        raise TerminalUsageError(USAGE_WITHOUT_SECRET.get(name, f"{prompt.rstrip(': ')} required"))
    return secret


def _dispatch(parsed: ParsedLine, *, actor, ask, inline) -> dict:
    if parsed.error is not None:
        raise parsed.error
    syntax = parsed.syntax
    if syntax in (HELP, HELP_SHORT):
        return seed.help(COMMANDS)
    if syntax is TRIGGER:
        passkey = _secret(
            parsed.secret,
            name="passkey",
            prompt="Server license passkey: ",
            ask=ask,
            allow_inline=inline,
        )
        return seed.trigger(services.trigger(actor=actor, passkey=passkey))
    if syntax is STATUS:
        return seed.status(services.status(actor=actor))
    if syntax is BACKUPS:
        backups = list(services.list_backups(actor=actor))
        safe = services.last_safe_backup()
        return seed.backup_list(backups, last_safe_id=str(safe.id) if safe else None)
    if syntax is BACKUP:
        backup = services.create_backup(actor=actor, reason=parsed.label_text[:REASON_MAX_LENGTH])
        return seed.backup_created(backup)
    if syntax is SET_PASSWORD:
        return _set_password(parsed.secret, actor=actor, ask=ask, inline=inline)

    backup_id = parsed.backup_id
    if syntax is DRILL:
        return seed.drill(services.run_drill(actor=actor, backup_id=backup_id or None))
    selection = _selection(parsed)
    if syntax is RESTORE and "--dry-run" in parsed.flags:
        return seed.restore(
            services.restore(actor=actor, backup_id=backup_id, dry_run=True, **selection)
        )
    # Validate the id before asking for the password, so a typo costs no secret.
    services.get_backup(backup_id)
    password = _secret(
        "", name="failsafe_password", prompt="Failsafe password: ", ask=ask, allow_inline=inline
    )
    if syntax is MARK_SAFE:
        return seed.marked_safe(
            services.mark_safe(
                actor=actor,
                backup_id=backup_id,
                password=password,
                accept_issues="--accept-issues" in parsed.flags,
            )
        )
    return seed.restore(
        services.restore(
            actor=actor,
            backup_id=backup_id,
            password=password,
            accept_conflicts="--accept-conflicts" in parsed.flags,
            force_password_reset="--force-password-reset" in parsed.flags,
            **selection,
        )
    )


def _selection(parsed: ParsedLine) -> dict:
    """`--only`, `--damage`, `--undo-actor`, `--since` and `--at` of a restore line, for the
    service."""
    only = [value for option, value in parsed.options if option == "--only"]
    damage = [value for option, value in parsed.options if option == "--damage"]
    has_damage = any(option == "--damage" for option, _value in parsed.options)
    undo_actor = [value for option, value in parsed.options if option == "--undo-actor"]
    since = [value for option, value in parsed.options if option == "--since"]
    at = [value for option, value in parsed.options if option == "--at"]
    return {
        "only": only or None,
        "damage": [value for value in damage if value] if has_damage else None,
        "undo_actor": undo_actor[-1] if undo_actor else None,
        "since": since[-1] if since else None,
        "at": at[-1] if at else None,
    }


def _set_password(new_password: str, *, actor, ask, inline) -> dict:
    password = _secret(
        new_password,
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
