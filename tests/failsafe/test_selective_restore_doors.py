"""Selective restore and containment through the command and the terminal language."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from accounts.models import Role
from failsafe.models import Backup
from failsafe.terminal import parse_line, run_command
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run
from tests.selective import SIGN_UPS, attack, sign_in

User = get_user_model()

pytestmark = pytest.mark.django_db


def snapshot():
    return (
        sorted(User.objects.values_list("username", "role", "must_change_password")),
        sorted(License.objects.values_list("key", "status")),
        Backup.objects.count(),
    )


def term(actor, line):
    return run_command(
        line,
        actor=actor,
        ask_secret=lambda name, prompt: FAILSAFE_PASSWORD if name == "failsafe_password" else None,
    )


def test_command_damage_keeps_the_sign_ups_and_lists_the_contained(actor, armed, population):
    attacked = attack(actor, armed)
    printed = run(
        "failsafe_restore",
        "--user",
        "root",
        str(attacked.safe.pk),
        "--damage",
        "--force-password-reset",
        "--yes",
        "--password-stdin",
        "--json",
        stdin=FAILSAFE_PASSWORD + "\n",
    )
    payload = json.loads(printed)
    assert payload["Message"] == "Selected records restored"
    assert sorted(payload["ContainedAccounts"]) == ["carol", "dave", "erin"]
    assert payload["PasswordReset"] is True
    assert User.objects.get(username="carol").role == Role.USER
    assert User.objects.filter(username__startswith="signup").count() == SIGN_UPS


def test_command_only_in_text(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    printed = run(
        "failsafe_restore",
        "--user",
        "root",
        str(attacked.safe.pk),
        "--only",
        "accounts.user:dave,erin",
        "--yes",
        "--password-stdin",
        stdin=FAILSAFE_PASSWORD + "\n",
    )
    assert "Selected records restored" in printed
    assert "  - insert accounts.user dave" in printed
    assert "Accounts contained:" in printed and "dave (restored)" in printed
    assert User.objects.get(username="carol").role == Role.SUPERADMIN


def test_command_dry_run_lists_records_and_conflicts(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    carol = User.objects.get(username="carol")
    carol.last_name = "Changed"
    carol.save()
    printed = run(
        "failsafe_restore",
        "--user",
        "root",
        str(attacked.safe.pk),
        "--damage",
        "removed,modified",
        "--dry-run",
    )
    assert "Conflicts:" in printed and "carol was changed again (last_name)" in printed
    with pytest.raises(CommandError, match="re-run with --accept-conflicts"):
        run(
            "failsafe_restore",
            "--user",
            "root",
            str(attacked.safe.pk),
            "--damage",
            "--yes",
            "--password-stdin",
            stdin=FAILSAFE_PASSWORD + "\n",
        )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--only", "accounts.nobody:x"], "^Unknown model 'accounts.nobody'"),
        (["--only", "accounts.user:zed"], "^accounts.user: no record 'zed'"),
        (["--only", "accounts.user:"], "names no record"),
        (["--damage", "stolen"], "^Unknown kind of damage 'stolen'"),
    ],
)
def test_command_bad_selections(actor, armed, population, args, words):
    attacked = attack(actor, armed, sign_ups=0)
    before = snapshot()
    with pytest.raises(CommandError, match=words) as refused:
        run(
            "failsafe_restore",
            "--user",
            "root",
            str(attacked.safe.pk),
            *args,
            "--yes",
            "--password-stdin",
            stdin=FAILSAFE_PASSWORD + "\n",
        )
    assert "\n" not in str(refused.value)
    assert snapshot() == before


def test_terminal_only_and_damage(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=3)
    carol_in = sign_in(User.objects.get(username="carol"))
    line = f"failsafe restore {attacked.safe.pk} --only accounts.user:dave,erin --dry-run"
    assert parse_line(line).shown == line  # the selection is public, nothing masked
    preview = term(actor, line)
    assert preview.ok, preview.payload
    assert [r["Record"] for r in preview.payload["Plan"]["Records"]] == ["dave", "erin"]
    assert User.objects.filter(username="dave").count() == 0

    reply = term(actor, f"failsafe restore {attacked.safe.pk} --damage --force-password-reset")
    assert reply.ok, reply.payload
    assert sorted(reply.payload["ContainedAccounts"]) == ["carol", "dave", "erin"]
    assert reply.payload["SessionsFlushed"] == 1 and reply.payload["TokensRevoked"] == 1
    assert User.objects.filter(username__startswith="signup").count() == 3
    assert not User.objects.filter(username="carol", role=Role.SUPERADMIN).exists()
    assert carol_in  # its session and token are what the two counts above ended


def test_terminal_bad_selections(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    before = snapshot()
    for line, words in (
        (f"failsafe restore {attacked.safe.pk} --only", "--only needs a value"),
        (f"failsafe restore {attacked.safe.pk} --only accounts.user:zed", "no record 'zed'"),
        (f"failsafe restore {attacked.safe.pk} --only nope.thing:x", "Unknown model 'nope.thing'"),
    ):
        reply = term(actor, line)
        assert not reply.ok
        assert words in reply.payload["Error"], reply.payload
    assert snapshot() == before


def test_terminal_hides_an_option_value_that_is_not_a_selection(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    secret = "Hunter2-typed-in-the-wrong-place"
    line = f"failsafe restore {attacked.safe.pk} --only {secret}"
    assert secret not in parse_line(line).shown
    reply = term(actor, line)
    assert not reply.ok and secret not in json.dumps(reply.payload)
    assert "--only takes MODEL:KEY,KEY" in reply.payload["Error"]
    damage = term(actor, f"failsafe restore {attacked.safe.pk} --damage {secret}")
    assert not damage.ok and secret not in json.dumps(damage.payload)
