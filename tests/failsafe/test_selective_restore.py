"""Selective restore through the service: only the selected records come back, everything
else in the live data stays; conflicts and bad selections refuse with nothing changed."""

import pytest
from django.contrib.auth import get_user_model

from accounts.models import Role
from failsafe import services
from failsafe.exceptions import InvalidSelection, RestoreConflict
from failsafe.models import Backup
from licensing.exceptions import InvalidFailsafePassword
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD
from tests.selective import SIGN_UPS, attack

User = get_user_model()

pytestmark = pytest.mark.django_db


def restore(actor, backup, **options):
    return services.restore(actor=actor, backup_id=backup.pk, password=FAILSAFE_PASSWORD, **options)


def world():
    """What a test compares before and after: every user's row and every license's status."""
    users = {
        u.username: (u.pk, u.role, u.is_active, u.password, u.email) for u in User.objects.all()
    }
    licenses = {lic.key: (lic.status, lic.owner_id) for lic in License.objects.all()}
    return users, licenses, Backup.objects.count()


def test_damage_brings_back_the_deleted_and_demotes_the_promoted_keeping_the_sign_ups(
    actor, armed, population
):
    attacked = attack(actor, armed)
    dave_license = License.objects.get(owner=None, status=License.Status.ACTIVE)
    assert dave_license  # the license of deleted dave lost its owner

    result = restore(actor, attacked.safe, damage=[])

    assert result.selective and result.message == "Selected records restored"
    names = set(User.objects.values_list("username", flat=True))
    assert {"dave", "erin"} <= names
    assert set(attacked.sign_ups) <= names
    assert User.objects.count() == 6 + SIGN_UPS
    assert User.objects.get(username="carol").role == Role.USER
    assert not License.objects.filter(status=License.Status.REVOKED).exists()
    dave_license.refresh_from_db()
    assert dave_license.owner.username == "dave"
    plan = result.plan
    actions = {(r.label, r.record): r.action for r in plan.records}
    assert actions[("accounts.user", "dave")] == "insert"
    assert actions[("accounts.user", "carol")] == "update"
    carol = next(r for r in plan.records if r.record == "carol")
    assert "role" in carol.columns
    assert not any(r.record.startswith("signup") for r in plan.records)
    assert sorted(result.contained_accounts) == ["carol", "dave", "erin"]
    assert result.pre_restore_backup is not None


def test_damage_with_added_also_deletes_the_sign_ups(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=3)
    restore(actor, attacked.safe, damage=["removed,modified,added"])
    assert not User.objects.filter(username__startswith="signup").exists()
    assert User.objects.count() == 6


def test_only_restores_exactly_two_users(actor, armed, population):
    attacked = attack(actor, armed)
    users_before, licenses_before, _ = world()

    result = restore(actor, attacked.safe, only=["accounts.user:dave,erin"])

    users, licenses, _ = world()
    assert set(users) - set(users_before) == {"dave", "erin"}
    assert {name: users[name] for name in users_before} == users_before
    assert licenses == licenses_before  # still revoked: not selected
    assert User.objects.get(username="carol").role == Role.SUPERADMIN
    assert [(r.record, r.action) for r in result.plan.records] == [
        ("dave", "insert"),
        ("erin", "insert"),
    ]


def test_only_by_pk_and_by_license_key(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    carol = User.objects.get(username="carol")
    alice_license = License.objects.get(owner__username="alice")
    restore(
        actor,
        attacked.safe,
        only=[f"accounts.user:#{carol.pk}", f"licensing.license:{alice_license.key}"],
    )
    assert User.objects.get(pk=carol.pk).role == Role.USER
    alice_license.refresh_from_db()
    assert alice_license.status == License.Status.ACTIVE
    assert License.objects.filter(status=License.Status.REVOKED).count() == 2


def test_dry_run_plans_without_changing_anything(actor, armed, population):
    attacked = attack(actor, armed)
    before = world()
    result = services.restore(
        actor=actor, backup_id=attacked.safe.pk, dry_run=True, only=["accounts.user:carol"]
    )
    assert world() == before
    assert [r.describe() for r in result.plan.records] == [
        "update accounts.user carol (is_superuser, is_staff, role)"
    ]
    assert result.contained_accounts == ["carol"]


def test_a_record_changed_again_after_the_damage_is_a_conflict(actor, armed, population):
    attacked = attack(actor, armed)
    carol = User.objects.get(username="carol")
    carol.email = "carol@elsewhere.example"
    carol.save()
    before = world()

    preview = services.restore(actor=actor, backup_id=attacked.safe.pk, dry_run=True, damage=[])
    assert preview.plan.conflicts == [
        f"accounts.user carol was changed again (email) after backup {attacked.emergency.pk}"
    ]
    with pytest.raises(RestoreConflict, match="carol was changed again"):
        restore(actor, attacked.safe, damage=[])
    assert world() == before  # nothing restored, no pre-restore backup left behind

    restore(actor, attacked.safe, damage=[], accept_conflicts=True)
    carol.refresh_from_db()
    assert carol.role == Role.USER and carol.email == "carol@example.com"


def test_a_unique_value_taken_by_another_record_refuses_naming_both(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    impostor = User.objects.create_user(username="dave", email="fake@example.com")
    before = world()
    with pytest.raises(RestoreConflict) as refused:
        restore(actor, attacked.safe, damage=["removed"])
    text = str(refused.value)
    assert "accounts.user dave (#" in text and f"accounts.user dave (#{impostor.pk})" in text
    assert world() == before


@pytest.mark.parametrize(
    ("selection", "words"),
    [
        (["accounts.nobody:alice"], "Unknown model 'accounts.nobody'"),
        (["accounts.user:zed"], "accounts.user: no record 'zed'"),
        (["accounts.user:#424242"], "no record '#424242'"),
        (["accounts.user:"], "names no record"),
        (["alice"], "Cannot read the selection 'alice'"),
        ([], "Nothing selected"),
    ],
)
def test_bad_selections_refuse_with_nothing_changed(actor, armed, population, selection, words):
    attacked = attack(actor, armed, sign_ups=2)
    before = world()
    with pytest.raises(InvalidSelection, match=words):
        restore(actor, attacked.safe, only=selection)
    assert world() == before


def test_a_selection_leaving_a_dangling_reference_refuses(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    dave_license = License.objects.get(owner=None, status=License.Status.ACTIVE)
    before = world()
    with pytest.raises(InvalidSelection, match=r"its owner points at accounts.user #\d+"):
        restore(actor, attacked.safe, only=[f"licensing.license:{dave_license.key}"])
    assert world() == before


def test_unknown_damage_kind_and_both_selections_refuse(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    with pytest.raises(InvalidSelection, match="Unknown kind of damage 'stolen'"):
        restore(actor, attacked.safe, damage=["stolen"])
    with pytest.raises(InvalidSelection, match="not both"):
        restore(actor, attacked.safe, damage=[], only=["accounts.user:dave"])


def test_nothing_damaged_is_an_empty_selection(actor, armed, population):
    safe = services.create_backup(actor=actor, reason="known good")
    with pytest.raises(InvalidSelection, match="Nothing to restore"):
        restore(actor, safe, damage=[])


def test_selective_restore_needs_the_failsafe_password(actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    before = world()
    with pytest.raises(InvalidFailsafePassword):
        services.restore(
            actor=actor, backup_id=attacked.safe.pk, password="wrong", only=["accounts.user:dave"]
        )
    assert world() == before
