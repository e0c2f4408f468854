"""Selective restore by actor and time through the command and the terminal language."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from accounts.models import Role
from failsafe.models import Backup
from failsafe.terminal import parse_line, run_command
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run
from tests.undo import SIGN_UPS, two_admins_at_work

User = get_user_model()
# Each request commits, as in production (the journal's request user is transaction-local).
pytestmark = pytest.mark.django_db(transaction=True)


def snapshot():
    return (
        sorted(User.objects.values_list("username", "role", "email")),
        Backup.objects.count(),
    )


def term(actor, line):
    return run_command(
        line,
        actor=actor,
        ask_secret=lambda name, prompt: FAILSAFE_PASSWORD if name == "failsafe_password" else None,
    )


def undone() -> None:
    assert User.objects.filter(username__in=["dave", "erin"]).count() == 2
    assert User.objects.get(username="carol").role == Role.USER
    assert User.objects.get(username="bob").email == "bob@new.example.com"
    assert User.objects.filter(username__startswith="signup").count() == SIGN_UPS


def test_command_undo_actor(client, actor, armed, population):
    safe, since = two_admins_at_work(client, actor)
    args = ("failsafe_restore", "--user", "root", str(safe.pk), "--undo-actor", "mallory")
    printed = run(*args, "--since", since.isoformat(), "--dry-run")
    assert "insert accounts.user dave" in printed and "by mallory]" in printed
    assert User.objects.filter(username="dave").count() == 0

    printed = run(
        *args,
        "--since",
        since.isoformat(),
        "--yes",
        "--password-stdin",
        "--json",
        stdin=FAILSAFE_PASSWORD + "\n",
    )
    payload = json.loads(printed)
    assert payload["Message"] == "Selected records restored"
    dave = next(r for r in payload["Plan"]["Records"] if r["Record"] == "dave")
    assert dave["SelectedBy"] == "mallory" and dave["LogEntries"] >= 1
    undone()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--undo-actor", "nobody", "--since", "2020-01-01"), "Unknown user 'nobody'"),
        (("--undo-actor", "mallory", "--since", "2999-01-01"), "is in the future"),
        (("--undo-actor", "mallory", "--since", "soon"), "is not an ISO time"),
        (("--undo-actor", "mallory"), "needs --since ISO_TIME"),
        (("--undo-actor", "mallory", "--since", "2020-01-01", "--damage"), "Choose one"),
    ],
)
def test_command_refusals_change_nothing(client, actor, armed, population, extra, words):
    safe, _since = two_admins_at_work(client, actor)
    before = snapshot()
    with pytest.raises(CommandError, match=words) as refused:
        run(
            "failsafe_restore",
            "--user",
            "root",
            str(safe.pk),
            *extra,
            "--yes",
            "--password-stdin",
            stdin=FAILSAFE_PASSWORD + "\n",
        )
    assert "\n" not in str(refused.value)
    assert snapshot() == before


def test_terminal_undo_actor(client, actor, armed, population):
    safe, since = two_admins_at_work(client, actor)
    moment = since.isoformat()
    line = f"failsafe restore {safe.pk} --undo-actor mallory --since {moment}"
    assert parse_line(line).shown == line  # a username and a time are shown as typed
    preview = term(actor, line + " --dry-run")
    assert preview.ok, preview.payload
    assert {"dave", "erin", "carol"} <= {r["Record"] for r in preview.payload["Plan"]["Records"]}

    before = snapshot()
    for bad, words in (
        (f"failsafe restore {safe.pk} --undo-actor", "--undo-actor needs a value: a username"),
        (f"failsafe restore {safe.pk} --undo-actor mallory", "needs --since"),
        (f"failsafe restore {safe.pk} --undo-actor zed --since 2020-01-01", "Unknown user 'zed'"),
    ):
        reply = term(actor, bad)
        assert not reply.ok and words in reply.payload["Error"], reply.payload
    assert snapshot() == before

    reply = term(actor, line)
    assert reply.ok, reply.payload
    undone()
