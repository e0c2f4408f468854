"""The change journal (PostgreSQL only): changes nothing in Python sees (raw SQL, bulk ORM
calls) reach the investigation with their database role and time; a change through the
admin carries its Django user; a failsafe command's changes carry the acting SuperAdmin.
On SQLite there is no journal, and the investigation says nothing of one."""

import datetime
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import DatabaseError, connection, connections, transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from accounts.models import Role
from failsafe import journal, services
from failsafe.api.serializers import InvestigationSerializer
from failsafe.investigate import Investigation
from failsafe.models import Backup
from failsafe.render import seed, text
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD

User = get_user_model()
pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the change journal is PostgreSQL's triggers; SQLite sites have none",
)
on_sqlite = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="what a site without a change journal sees"
)


@pytest.fixture
def safe(actor, armed, population):
    """A safe backup of conftest's population, taken before any change below."""
    backup = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=backup.pk, password=FAILSAFE_PASSWORD)
    return backup


def triggered(actor, armed):
    return services.trigger(actor=actor, passkey=armed, reason="journal test")


def entries_on(report, target):
    return [entry for entry in report.root_cause.journal.entries if entry.target == target]


@on_postgresql
def test_a_raw_sql_change_is_in_the_investigation_with_its_database_role_and_time(
    actor, armed, safe
):
    before = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_user SET role = %s WHERE username = %s", [Role.SUPERADMIN, "carol"]
        )
        cursor.execute("DELETE FROM accounts_user WHERE username = %s", ["erin"])
    after = timezone.now()

    result = triggered(actor, armed)
    report = result.investigation

    assert "User promoted to SuperAdmin: carol" in report.comparison.issues
    (promoted,) = entries_on(report, "accounts.user carol")
    assert promoted.operation == journal.UPDATE
    assert promoted.columns == ("role",)
    assert promoted.database_role == "postgres" and promoted.username == ""
    assert promoted.who == "database role postgres"
    assert before <= promoted.when <= after
    (deleted,) = entries_on(report, "accounts.user erin")
    assert deleted.operation == journal.DELETE and deleted.who == "database role postgres"

    # Every door shows it; the kept investigation still has it after a restart.
    said = text.trigger(result)
    assert "Change journal" in said
    assert "database role postgres: update: role on accounts.user carol" in said
    rendered = seed.investigation(report)["RootCause"]["Journal"]["Entries"]
    assert {"Who": "database role postgres", "What": "update: role"}.items() <= next(
        entry for entry in rendered if entry["Target"] == "accounts.user carol"
    ).items()
    kept = Investigation.from_data(Backup.objects.get(pk=result.backup.pk).investigation)
    assert kept.root_cause.journal == report.root_cause.journal
    client = APIClient()
    client.force_authenticate(actor.user)
    body = client.get(
        reverse("api:backup-investigation", kwargs={"backup_id": result.backup.id})
    ).json()
    served = next(
        entry
        for entry in body["root_cause"]["journal"]["entries"]
        if entry["target"] == "accounts.user carol"
    )
    assert {
        "who": "database role postgres",
        "database_role": "postgres",
        "user": "",
        "operation": "update",
        "columns": ["role"],
        "what": "update: role",
    }.items() <= served.items()


@on_postgresql
def test_a_bulk_orm_update_is_in_the_investigation_and_never_shows_a_password_hash(
    actor, armed, safe
):
    License.objects.filter(owner__username="alice").update(status=License.Status.REVOKED)
    new_hash = make_password("taken over", hasher="md5")
    User.objects.filter(username="bob").update(password=new_hash)

    result = triggered(actor, armed)
    report = result.investigation

    (revoked,) = [e for e in report.root_cause.journal.entries if e.target.startswith("licensing")]
    assert revoked.what == "update: status" and revoked.who == "database role postgres"
    (rehashed,) = entries_on(report, "accounts.user bob")
    assert rehashed.columns == ("password",)
    everything = [
        json.dumps(seed.trigger(result), default=str),
        text.trigger(result),
        json.dumps(report.to_data()),
        JSONRenderer().render(InvestigationSerializer(report).data).decode(),
    ]
    assert all(new_hash not in said and new_hash.split("$")[-1] not in said for said in everything)


@on_postgresql
def test_a_change_through_the_admin_carries_its_django_user(client, actor, armed, safe):
    client.force_login(actor.user)
    carol = User.objects.get(username="carol")
    changed = client.post(
        reverse("admin:accounts_user_change", args=[carol.pk]),
        {
            "username": "carol",
            "email": carol.email,
            "first_name": "",
            "last_name": "",
            "role": Role.ADMIN,
            "is_active": "on",
        },
    )
    assert changed.status_code == 302

    result = triggered(actor, armed)
    report = result.investigation

    (entry,) = entries_on(report, "accounts.user carol")
    assert entry.username == "root" and entry.who == "root"
    assert entry.database_role == "postgres"
    assert "role" in entry.columns
    assert "root: update:" in "\n".join(text.journal_lines(report.root_cause.journal))
    page = client.get(reverse("admin:failsafe_backup_investigation", args=[result.backup.pk]))
    journal_table = page.content.decode().split('id="change-journal"')[1].split("</table>")[0]
    assert "accounts.user carol" in journal_table and "<td>root</td>" in journal_table


@on_postgresql
def test_a_failsafe_commands_changes_carry_its_superadmin(actor, armed, safe):
    with journal.attributed(actor.username):
        User.objects.filter(username="dave").update(email="dave@elsewhere.example.com")

    report = triggered(actor, armed).investigation

    (entry,) = entries_on(report, "accounts.user dave")
    assert entry.who == "root" and entry.what == "update: email"


@on_postgresql
def test_only_changes_since_the_safe_backup_on_the_changed_records_are_listed(
    actor, armed, population
):
    User.objects.filter(username__in=["alice", "bob"]).update(email="before@example.com")
    safe = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)
    User.objects.filter(username="bob").update(email="after@example.com")

    report = triggered(actor, armed).investigation

    (entry,) = report.root_cause.journal.entries
    assert entry.target == "accounts.user bob" and entry.when >= safe.created_at


@on_postgresql
def test_a_journal_that_cannot_be_read_is_said_and_the_trigger_still_answers(actor, armed, safe):
    User.objects.filter(username="bob").update(email="after@example.com")
    with connection.cursor() as cursor:
        # Rolled back with the test's transaction.
        cursor.execute("ALTER TABLE journal_userevent RENAME TO journal_userevent_away")

    result = triggered(actor, armed)

    cause = result.investigation.root_cause
    assert cause.journal.entries == []
    assert cause.journal.problem.startswith("The change journal could not be read: ")
    assert "journal_userevent" in cause.journal.problem and "SELECT" not in cause.journal.problem
    assert cause.journal.problem in text.trigger(result)
    assert Backup.objects.filter(pk=result.backup.pk).exists()


@on_postgresql
def test_the_journal_refuses_to_be_rewritten(population):
    User.objects.filter(username="alice").update(email="once@example.com")
    event_model = journal._event_models()["accounts.user"]
    assert event_model.objects.filter(email="once@example.com").exists()
    with pytest.raises(DatabaseError), transaction.atomic():
        event_model.objects.all().delete()
    with pytest.raises(DatabaseError), transaction.atomic():
        event_model.objects.update(email="forged@example.com")
    assert event_model.objects.filter(email="once@example.com").exists()


@on_sqlite
def test_without_postgresql_there_is_no_journal_and_the_investigation_says_nothing_of_one(
    actor, armed, safe
):
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_user SET role = %s WHERE username = %s", [Role.SUPERADMIN, "carol"]
        )

    result = triggered(actor, armed)
    report = result.investigation

    assert not journal.available()
    assert report.root_cause.journal is None
    assert journal.entries(since=datetime.datetime.now(datetime.UTC), records={}) is None
    assert "Journal" not in seed.investigation(report)["RootCause"]
    assert "journal" not in text.trigger(result).lower()
    assert InvestigationSerializer(report).data["root_cause"]["journal"] is None
    kept = Investigation.from_data(Backup.objects.get(pk=result.backup.pk).investigation)
    assert kept.root_cause.journal is None


@on_postgresql
def test_every_session_defines_the_setting_the_journal_triggers_read(population):
    # Undefined, each journal trigger's read of it fails and rolls back a subtransaction,
    # which walks every deferred foreign-key event queued so far: a restore of 100 000
    # users took minutes instead of seconds.
    fresh = connections.create_connection("default")
    try:
        with fresh.cursor() as cursor:
            cursor.execute("SELECT current_setting('pgtrigger.ignore', true)")
            assert cursor.fetchone() == ("{}",)
    finally:
        fresh.close()
    from journal.models import UserEvent

    before = UserEvent.objects.count()
    with transaction.atomic():
        changed = User.objects.exclude(username="root").update(first_name="Renamed")
    assert UserEvent.objects.count() == before + changed  # the journal misses nothing
