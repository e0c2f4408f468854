"""Containment: a restore ends the sessions and revokes the API tokens of every account
whose password hash, role, active flag or groups it changed, lists them, and with
force_password_reset makes them change their password."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from knox.models import AuthToken

from failsafe import services
from failsafe.models import AuditEvent
from failsafe.render import seed, text
from tests.factories import FAILSAFE_PASSWORD, SuperAdminFactory
from tests.selective import attack, sign_in

User = get_user_model()

pytestmark = pytest.mark.django_db


def alive(session_key, digest) -> tuple[bool, bool]:
    return (
        Session.objects.filter(session_key=session_key).exists(),
        AuthToken.objects.filter(digest=digest).exists(),
    )


def test_selective_restore_contains_exactly_the_accounts_it_changed(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=2)
    carol = sign_in(User.objects.get(username="carol"))
    alice = sign_in(User.objects.get(username="alice"))
    newcomer = sign_in(User.objects.get(username="signup00"))

    result = services.restore(
        actor=actor,
        backup_id=attacked.safe.pk,
        password=FAILSAFE_PASSWORD,
        damage=[],
        force_password_reset=True,
    )

    assert alive(*carol) == (False, False)
    assert alive(*alice) == (True, True)
    assert alive(*newcomer) == (True, True)
    assert result.sessions_flushed == 1 and result.tokens_revoked == 1
    assert sorted(result.contained_accounts) == ["carol", "dave", "erin"]
    flagged = set(User.objects.filter(must_change_password=True).values_list("username", flat=True))
    assert flagged == {"carol", "dave", "erin"}
    payload = seed.restore(result)
    assert sorted(payload["ContainedAccounts"]) == ["carol", "dave", "erin"]
    assert payload["PasswordReset"] is True
    words = text.restore(result)
    assert "carol" in words and "must change their password" in words


def test_a_password_and_a_group_change_are_contained_without_reset(actor, armed, population):
    editors = Group.objects.create(name="editors")
    safe = services.create_backup(actor=actor, reason="known good")
    bob = User.objects.get(username="bob")
    bob.set_password("the attacker's own")
    bob.save()
    alice = User.objects.get(username="alice")
    alice.groups.add(editors)
    bob_in, alice_in = sign_in(bob), sign_in(alice)
    erin_in = sign_in(User.objects.get(username="erin"))

    result = services.restore(
        actor=actor,
        backup_id=safe.pk,
        password=FAILSAFE_PASSWORD,
        only=["accounts.user:alice,bob,erin"],
    )

    assert alive(*bob_in) == (False, False)
    assert alive(*alice_in) == (False, False)
    assert alive(*erin_in) == (True, True)  # selected but unchanged
    assert [a.describe() for a in result.plan.accounts] == ["alice (groups)", "bob (password)"]
    assert not User.objects.filter(must_change_password=True).exists()


def test_full_restore_ends_every_session_and_lists_the_changed_accounts(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    carol = sign_in(User.objects.get(username="carol"))
    alice = sign_in(User.objects.get(username="alice"))

    result = services.restore(
        actor=actor,
        backup_id=attacked.safe.pk,
        password=FAILSAFE_PASSWORD,
        force_password_reset=True,
    )

    assert alive(*carol) == (False, False)
    assert alive(*alice) == (False, False)  # a full restore still ends everyone's
    assert sorted(result.contained_accounts) == ["carol", "dave", "erin"]
    assert set(
        User.objects.filter(must_change_password=True).values_list("username", flat=True)
    ) == {
        "carol",
        "dave",
        "erin",
    }


def test_the_plan_says_when_the_restore_changes_the_actors_own_account(
    actor, superadmin, armed, population
):
    safe = services.create_backup(actor=actor, reason="known good")
    superadmin.set_password("a new one for root")
    superadmin.save()
    preview = services.restore(actor=actor, backup_id=safe.pk, dry_run=True)
    assert preview.plan.own_account == ["password"]
    assert "your own account (password)" in preview.own_account_warning
    assert "your own account (password)" in text.restore_plan(preview)
    assert seed.restore(preview)["Plan"]["OwnAccount"] == ["password"]

    selective = services.restore(
        actor=actor, backup_id=safe.pk, dry_run=True, only=["accounts.user:alice"]
    )
    assert selective.plan.own_account == []


def test_a_full_restore_of_many_accounts_lists_a_few_counts_the_rest_and_resets_them_all(
    armed, population, settings
):
    # Into an emptied database a full restore changes every account: the plan names
    # DETAIL_LIMIT of them (and always the acting SuperAdmin's) and counts the others, and
    # a password reset still reaches every one.
    settings.FAILSAFE = {**settings.FAILSAFE, "DETAIL_LIMIT": 3}
    User.objects.bulk_create(
        [User(username=f"member{n:02d}", password="md5$x$y") for n in range(12)]
    )
    zoe = SuperAdminFactory(username="zoe")  # the newest account: past the first three
    actor = services.Actor(user=zoe, source=AuditEvent.Source.CLI)
    safe = services.create_backup(actor=actor, reason="known good")
    zoe.set_password("zoe's password, now")
    zoe.save()
    User.objects.exclude(pk=zoe.pk).delete()

    result = services.restore(
        actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD, force_password_reset=True
    )

    assert len(result.plan.accounts) + result.plan.accounts_unlisted == User.objects.count()
    assert len(result.plan.accounts) == 4 and "zoe" in result.contained_accounts
    assert result.plan.own_account == ["password"]
    assert seed.restore(result)["Plan"]["AccountsNotListed"] == result.plan.accounts_unlisted
    assert f"and {result.plan.accounts_unlisted} more" in text.restore(result)
    assert not User.objects.filter(must_change_password=False).exists()
