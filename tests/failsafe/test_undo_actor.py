"""Selective restore by actor and time: `--undo-actor NAME --since TIME` puts back what one
admin changed through the Django admin since then (the admin log, the audit trail and, on
PostgreSQL, the change journal name the records), and nothing else."""

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from accounts.models import Role
from failsafe import audit, services
from failsafe.exceptions import InvalidSelection
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed, text
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD, UserFactory
from tests.undo import SIGN_UPS, two_admins_at_work

User = get_user_model()
# Each request commits, as in production: on PostgreSQL the journal's user of a request
# (a transaction-local setting) would otherwise linger on the test's later statements.
pytestmark = pytest.mark.django_db(transaction=True)


def world():
    users = {
        u.username: (u.pk, u.role, u.is_active, u.password, u.email, u.first_name)
        for u in User.objects.all()
    }
    licenses = {lic.key: (lic.status, lic.owner_id) for lic in License.objects.all()}
    return users, licenses, Backup.objects.count()


@pytest.fixture
def incident(client, actor, armed, population):
    return two_admins_at_work(client, actor)


def restore(actor, backup, **options):
    return services.restore(actor=actor, backup_id=backup.pk, password=FAILSAFE_PASSWORD, **options)


def test_undo_actor_reverts_exactly_mallorys_changes(actor, incident):
    safe, since = incident
    dave_license = License.objects.get(owner=None).key

    preview = restore(actor, safe, undo_actor="mallory", since=since.isoformat(), dry_run=True)
    records = {(r.label, r.record): r for r in preview.plan.records}
    users = {
        ("accounts.user", "dave"),
        ("accounts.user", "erin"),
        ("accounts.user", "carol"),
    }
    if connection.vendor == "postgresql":
        # The journal also saw what deleting dave did to his license (its owner cleared).
        users.add(("licensing.license", dave_license))
    assert set(records) == users
    assert records[("accounts.user", "dave")].action == "insert"
    assert records[("accounts.user", "carol")].action == "update"
    assert "role" in records[("accounts.user", "carol")].columns
    assert all(r.selected_by == "mallory" and r.entries >= 1 for r in records.values())
    shown = text.restore_plan(preview)
    assert "insert accounts.user dave" in shown and "by mallory]" in shown
    rendered = seed.restore(preview)
    assert "SelectedBy" in str(rendered) and "mallory" in str(rendered)

    result = restore(actor, safe, undo_actor="mallory", since=since.isoformat())

    assert result.selective and result.pre_restore_backup is not None
    names = set(User.objects.values_list("username", flat=True))
    assert {"dave", "erin"} <= names
    assert {f"signup{n:02d}" for n in range(SIGN_UPS)} <= names
    assert User.objects.get(username="carol").role == Role.USER
    bob = User.objects.get(username="bob")
    assert bob.email == "bob@new.example.com"  # alice's edit stays
    assert bob.first_name == "Robert"  # mallory's edit before --since stays
    assert sorted(result.contained_accounts) == ["carol", "dave", "erin"]
    owner = License.objects.get(key=dave_license).owner
    if connection.vendor == "postgresql":
        assert owner.username == "dave"
    else:  # the admin log names the user deleted, not the license his deletion changed
        assert owner is None
    event = AuditEvent.objects.filter(action=audit.ACTION_RESTORE).order_by("-seq").first()
    assert event.details["undo_actor"] == "mallory"
    assert event.details["only"]["accounts.user"] == 3


def test_undo_actor_alice_reverts_only_her_edit(actor, incident):
    safe, since = incident
    restore(actor, safe, undo_actor="alice", since=since)
    bob = User.objects.get(username="bob")
    assert bob.email != "bob@new.example.com"
    # A record comes back whole, as the backup holds it: mallory's earlier rename goes too.
    assert bob.first_name == ""
    assert not User.objects.filter(username__in=["dave", "erin"]).exists()
    assert User.objects.get(username="carol").role == Role.SUPERADMIN


REFUSALS = [
    ({"undo_actor": "nobody", "since": "2020-01-01T00:00:00Z"}, "Unknown user 'nobody'"),
    ({"undo_actor": "mallory", "since": "2999-01-01T00:00:00Z"}, "is in the future"),
    ({"undo_actor": "mallory", "since": "yesterday"}, "is not an ISO time"),
    ({"undo_actor": "mallory"}, "needs --since"),
    ({"since": "2020-01-01T00:00:00Z"}, "needs --undo-actor"),
    (
        {"undo_actor": "mallory", "since": "2020-01-01", "only": ["accounts.user:dave"]},
        "Choose one selection",
    ),
    ({"undo_actor": "mallory", "since": "2020-01-01", "damage": []}, "Choose one selection"),
]


@pytest.mark.parametrize(("options", "message"), REFUSALS)
def test_bad_input_refuses_in_one_line_and_changes_nothing(actor, incident, options, message):
    safe, _since = incident
    before = world()
    with pytest.raises(InvalidSelection) as refused:
        restore(actor, safe, **options)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert world() == before


def test_nothing_touched_since_then_says_so_in_one_line(actor, incident):
    safe, _since = incident
    later = timezone.now()
    before = world()
    with pytest.raises(InvalidSelection) as refused:
        restore(actor, safe, undo_actor="alice", since=later.isoformat())
    assert str(refused.value).startswith("alice changed no captured record since ")
    assert world() == before


def test_a_deleted_user_still_in_the_logs_is_not_unknown(actor, incident):
    safe, since = incident
    ghost = UserFactory(username="ghost")
    audit.record(
        action="failsafe.status",
        outcome=AuditEvent.Outcome.SUCCESS,
        source=AuditEvent.Source.CLI,
        actor=ghost,
        target="",
    )
    ghost.delete()
    with pytest.raises(InvalidSelection) as refused:
        restore(actor, safe, undo_actor="ghost", since=since - datetime.timedelta(minutes=1))
    assert str(refused.value).startswith("ghost changed no captured record since ")
