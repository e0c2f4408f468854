"""The SuperAdmin's terminal page: the seed's command language in the browser.

Plain form posts rendered on the server. The first connection asks for the failsafe password
before anything else; later connections open with `failsafe status`. Each command line runs
through failsafe.terminal.run_command, and its JSON answer joins a history kept in the
session (a database row). Of a typed line, the history keeps only what the terminal's grammar
calls public (command words, a backup id, known flags); the rest shows as ********. A secret
the command asks for (the failsafe password of `restore` and `marksafe`) is asked for in a
password input; the form that asks carries only the public line, and the page never renders
a typed secret back.
"""

import json

from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from accounts.permissions import superadmin_required

from . import services
from .exceptions import REFUSALS
from .forms import FailsafePasswordForm
from .models import AuditEvent
from .render import seed
from .render.text import one_line
from .terminal import (
    COMMANDS,
    MASK,
    MAX_COMMAND_LENGTH,
    RESTORE,
    parse_line,
    run_command,
    split_inline_secret,
)
from .web import request_actor

HISTORY_KEY = "failsafe_terminal_history_v2"
# Histories kept before the grammar hid everything but the public words could hold secrets:
# a session that still has one drops it on its next visit.
LEGACY_HISTORY_KEYS = ("failsafe_terminal_history",)
HISTORY_LENGTH = 20
# An answer longer than this (a long backup list) is cut in the history, not on the wire.
OUTPUT_LIMIT = 50_000
COMMAND_SHOWN = 200
SECRET_FIELD_PREFIX = "secret_"


def terminal_actor(request) -> services.Actor:
    return request_actor(request, AuditEvent.Source.TERMINAL)


# An answer of more lines than this opens folded, under its summary.
FOLDED_AFTER_LINES = 15


def summary(payload: dict) -> list[str]:
    """What a person reads first of an answer, above its JSON: the message, the ids, and for
    an investigation its issues and first recommendation."""
    if not payload.get("Success", True):
        return [payload.get("Error") or payload.get("Message") or "Refused"]
    lines = [payload["Message"]] if payload.get("Message") else []
    if "SystemStatus" in payload:
        lines.append(f"System status: {payload['SystemStatus']}")
        lines += payload.get("Problems") or []
    if "Backups" in payload:
        total = payload.get("TotalBackups", len(payload["Backups"]))
        lines.append(f"{total} backup{'' if total == 1 else 's'}")
    if payload.get("BackupId"):
        lines.append(f"Backup {payload['BackupId']}")
    investigation = payload.get("Investigation") or {}
    comparison = investigation.get("Comparison") or payload.get("Comparison") or {}
    issues = comparison.get("Issues")
    if issues is not None:
        lines.append(
            f"{len(issues)} issue{'' if len(issues) == 1 else 's'}"
            + (": " + "; ".join(issues[:3]) + (" …" if len(issues) > 3 else "") if issues else "")
        )
    if investigation.get("Recommendations"):
        lines.append(investigation["Recommendations"][0])
    if payload.get("PreRestoreBackupId"):
        lines.append(f"Pre-restore backup {payload['PreRestoreBackupId']}")
    return lines


def _entry(command: str, reply_ok: bool, payload: dict) -> dict:
    output = json.dumps(payload, indent=2, default=str)
    if len(output) > OUTPUT_LIMIT:
        output = output[:OUTPUT_LIMIT] + f"\n... ({len(output) - OUTPUT_LIMIT} characters more)"
    if len(command) > COMMAND_SHOWN:
        command = command[:COMMAND_SHOWN] + "…"
    lines = output.count("\n") + 1
    return {
        "command": command,
        "ok": reply_ok,
        "output": output,
        "summary": summary(payload),
        "lines": lines,
        "folded": lines > FOLDED_AFTER_LINES,
    }


def _history(request) -> list[dict]:
    return list(request.session.get(HISTORY_KEY, []))


def _remember(request, entry: dict) -> None:
    request.session[HISTORY_KEY] = (_history(request) + [entry])[-HISTORY_LENGTH:]


def _session_survived(request) -> bool:
    # A restore ends every session, this one included; saving it then would fail.
    key = request.session.session_key
    return bool(key) and request.session.exists(key)


def _page(request, **context) -> TemplateResponse:
    context.setdefault("history", _history(request))
    context.setdefault("commands", COMMANDS)
    context.setdefault("max_length", MAX_COMMAND_LENGTH)
    return TemplateResponse(request, "failsafe/terminal.html", context)


def _prompt_url() -> str:
    return reverse("failsafe:terminal") + "#prompt"


@sensitive_post_parameters()
@sensitive_variables()
@superadmin_required
def terminal(request):
    for key in LEGACY_HISTORY_KEYS:
        request.session.pop(key, None)
    if not services.failsafe_password_is_set():
        return _first_connection(request)
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "clear":
            request.session.pop(HISTORY_KEY, None)
            return redirect(_prompt_url())
        if action == "command":
            return _run(request)
        return redirect(_prompt_url())
    if not request.session.get(HISTORY_KEY):
        # A new connection opens with the system status, as the seed's flow says.
        reply = run_command("failsafe status", actor=terminal_actor(request))
        _remember(request, _entry("failsafe status", reply.ok, reply.payload))
    return _page(request)


@sensitive_variables()
def _first_connection(request):
    """No failsafe password yet: ask for it (twice) before anything else."""
    form = FailsafePasswordForm(
        request.POST if request.POST.get("action") == "setup" else None, changing=False
    )
    if form.is_bound and form.is_valid():
        try:
            result = services.set_failsafe_password(
                actor=terminal_actor(request), password=form.cleaned_data["password"]
            )
        except REFUSALS as exc:
            form.add_error(None, one_line(exc))
        else:
            entry = _entry(f"failsafe setpassword {MASK}", True, seed.password(result))
            _remember(request, entry)
            return redirect(_prompt_url())
    return _page(request, setup_form=form)


@sensitive_variables()
def _run(request):
    line = request.POST.get("command", "")
    if not line.strip():
        # Enter on an empty prompt does nothing, as in a terminal.
        return redirect(_prompt_url())
    shown, bare, inline_secret = split_inline_secret(line)
    supplied = {
        name[len(SECRET_FIELD_PREFIX) :]: value
        for name, value in request.POST.items()
        if name.startswith(SECRET_FIELD_PREFIX) and value
    }
    asked: list[tuple[str, str]] = []

    def ask(name, prompt):
        asked.append((name, prompt.strip().rstrip(":")))
        return supplied.get(name)

    reply = run_command(line, actor=terminal_actor(request), ask_secret=ask)
    if not reply.ok and any(name not in supplied for name, _ in asked):
        return _ask_for_secrets(
            request,
            reply,
            shown=shown,
            bare=bare,
            inline_secret=inline_secret,
            asked=asked,
            plan=_restore_preview(request, line),
        )

    entry = _entry(shown, reply.ok, reply.payload)
    if _session_survived(request):
        _remember(request, entry)
        return redirect(_prompt_url())
    # The command ended every session (a restore): show its answer now, touch nothing.
    return _page(request, history=_history(request) + [entry], sessions_ended=True)


def _restore_preview(request, line: str):
    """For `failsafe restore <id>`, the plan (a dry run) shown before the password is asked
    for, as the admin's confirmation page does; None for any other line."""
    parsed = parse_line(line)
    if parsed.syntax is not RESTORE or parsed.error is not None:
        return None
    try:
        return services.restore(
            actor=terminal_actor(request), backup_id=parsed.backup_id, dry_run=True
        ).plan
    except REFUSALS:
        return None  # the restore itself will say why, once asked


def _ask_for_secrets(request, reply, *, shown, bare, inline_secret, asked, plan=None):
    """Ask, in password inputs, for every secret the command needs; the form runs it again.

    A secret typed inline is asked for again too, so the form carries the line without it.
    """
    fields = [inline_secret] if inline_secret else []
    fields += [(name, label) for name, label in asked if name not in dict(fields)]
    # The first time, asking is enough; after a submission, say what was left empty.
    resubmitted = any(key.startswith(SECRET_FIELD_PREFIX) for key in request.POST)
    return _page(
        request,
        pending={
            "command": bare,
            "shown": shown,
            "fields": [(SECRET_FIELD_PREFIX + name, label) for name, label in fields],
            "error": reply.message if resubmitted else None,
            "plan": plan,
        },
    )
