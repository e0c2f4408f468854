"""Selective restore to a moment between two backups (`--at`, PostgreSQL's change journal):
the selected records come back as the journal had them then; a moment in the future or
before the backup, or a server without the journal, is refused with nothing changed."""

import datetime
import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from failsafe import services
from failsafe.exceptions import InvalidSelection
from failsafe.models import Backup
from failsafe.terminal import parse_line, run_command
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run

User = get_user_model()
pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="--at reads the change journal, PostgreSQL's triggers; SQLite sites have none",
)
on_sqlite = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="what a site without a change journal answers"
)


def world():
    return sorted(User.objects.values_list("username", "email", "role")), Backup.objects.count()


@pytest.fixture
def between(actor, armed, population):
    """A backup; bob's e-mail changed at T1, then again at T2; the moment between them."""
    backup = services.create_backup(actor=actor, reason="before the changes")
    User.objects.filter(username="bob").update(email="bob@t1.example.com")
    User.objects.filter(username="alice").update(email="alice@t1.example.com")
    moment = timezone.now()
    User.objects.filter(username="bob").update(email="bob@t2.example.com")
    return backup, moment


@on_postgresql
def test_at_restores_a_record_to_its_state_between_two_backups(actor, between):
    backup, moment = between
    carol_before = User.objects.get(username="carol").email
    plan = services.restore(
        actor=actor, backup_id=backup.pk, dry_run=True, only=["accounts.user:bob,carol"], at=moment
    ).plan
    said = {record.record: record.describe() for record in plan.records}
    assert said["bob"].startswith("update accounts.user bob (email) [as at ")
    assert "from the change journal; groups" in said["bob"]
    assert "from the backup (not journaled)" in said["bob"]
    assert said["carol"].startswith("unchanged accounts.user carol")
    assert "no journal entry between the backup and" in said["carol"]

    printed = run(
        "failsafe_restore",
        "--user",
        "root",
        str(backup.pk),
        "--only",
        "accounts.user:bob,carol",
        "--at",
        moment.isoformat(),
        "--yes",
        "--password-stdin",
        "--json",
        stdin=FAILSAFE_PASSWORD + "\n",
    )

    payload = json.loads(printed)
    assert payload["Message"] == "Selected records restored"
    sources = {r["Record"]: r["Source"] for r in payload["Plan"]["Records"]}
    assert "from the change journal" in sources["bob"]
    assert "the backup's row" in sources["carol"]
    assert User.objects.get(username="bob").email == "bob@t1.example.com"
    # Not selected: stays as it is now.
    assert User.objects.get(username="alice").email == "alice@t1.example.com"
    # No journal entry since the backup: the backup's row, and the plan says so.
    assert User.objects.get(username="carol").email == carol_before


@on_postgresql
def test_at_through_the_api(actor, between):
    backup, moment = between
    client = APIClient()
    client.force_authenticate(actor.user)
    url = reverse("api:backup-restore", kwargs={"backup_id": backup.id})
    answer = client.post(
        url,
        {
            "only": ["accounts.user:bob"],
            "at": moment.isoformat(),
            "failsafe_password": FAILSAFE_PASSWORD,
        },
        format="json",
    )
    assert answer.status_code == 200, answer.content
    (record,) = answer.json()["plan"]["records"]
    assert record["action"] == "update" and "from the change journal" in record["source"]
    assert User.objects.get(username="bob").email == "bob@t1.example.com"


def term(actor, line):
    return run_command(
        line,
        actor=actor,
        ask_secret=lambda name, prompt: FAILSAFE_PASSWORD if name == "failsafe_password" else None,
    )


@on_postgresql
def test_at_through_the_terminal(actor, between):
    backup, moment = between
    line = f"failsafe restore {backup.pk} --only accounts.user:bob --at {moment.isoformat()}"
    assert parse_line(line).shown == line  # a selection and a time are shown as typed
    preview = term(actor, line + " --dry-run")
    assert preview.ok, preview.payload
    (record,) = preview.payload["Plan"]["Records"]
    assert "from the change journal" in record["Source"]
    assert User.objects.get(username="bob").email == "bob@t2.example.com"

    reply = term(actor, line)
    assert reply.ok, reply.payload
    assert User.objects.get(username="bob").email == "bob@t1.example.com"
    assert User.objects.get(username="alice").email == "alice@t1.example.com"


@on_postgresql
def test_at_in_the_future_or_before_the_backup_changes_nothing(actor, between):
    backup, _moment = between
    before = world()
    for at, said in (
        (timezone.now() + datetime.timedelta(hours=1), "is in the future"),
        (backup.created_at - datetime.timedelta(seconds=1), f"is before backup {backup.id}"),
    ):
        with pytest.raises(InvalidSelection, match=said):
            services.restore(
                actor=actor,
                backup_id=backup.pk,
                password=FAILSAFE_PASSWORD,
                only=["accounts.user:bob"],
                at=at,
            )
    assert world() == before


@on_sqlite
def test_at_on_sqlite_is_refused_in_one_line_and_changes_nothing(actor, armed, population):
    backup = services.create_backup(actor=actor, reason="before")
    User.objects.filter(username="bob").update(email="bob@later.example.com")
    before = world()
    client = APIClient()
    client.force_authenticate(actor.user)
    answer = client.post(
        reverse("api:backup-restore", kwargs={"backup_id": backup.id}),
        {
            "only": ["accounts.user:bob"],
            "at": timezone.now().isoformat(),
            "failsafe_password": FAILSAFE_PASSWORD,
        },
        format="json",
    )
    assert answer.json() == {
        "detail": "--at needs the PostgreSQL change journal; this server runs SQLite"
    }
    assert world() == before
    reply = term(actor, f"failsafe restore {backup.pk} --only accounts.user:bob --at 2026-12-03")
    assert not reply.ok
    assert reply.payload["Error"] == (
        "--at needs the PostgreSQL change journal; this server runs SQLite"
    )
    assert world() == before


@on_postgresql
def test_at_keeps_deleted_what_was_deleted_then_and_brings_back_what_was_deleted_after(
    actor, armed, population
):
    backup = services.create_backup(actor=actor, reason="before the deletions")
    User.objects.filter(username="erin").delete()
    moment = timezone.now()
    User.objects.filter(username="dave").delete()

    plan = services.restore(
        actor=actor, backup_id=backup.pk, dry_run=True, only=["accounts.user:dave,erin"], at=moment
    ).plan
    actions = {record.record: record.action for record in plan.records}
    assert actions == {"dave": "insert", "erin": "unchanged"}

    result = services.restore(
        actor=actor,
        backup_id=backup.pk,
        password=FAILSAFE_PASSWORD,
        only=["accounts.user:dave,erin"],
        at=moment,
    )

    assert result.selective
    assert User.objects.filter(username="dave").exists()
    assert not User.objects.filter(username="erin").exists()


@on_postgresql
def test_at_restores_a_license_with_its_owner_as_it_was_then(actor, armed, population):
    backup = services.create_backup(actor=actor, reason="before")
    license = License.objects.get(owner__username="alice")
    bob = User.objects.get(username="bob")
    License.objects.filter(pk=license.pk).update(owner=bob)
    moment = timezone.now()
    License.objects.filter(pk=license.pk).update(owner=None, status=License.Status.REVOKED)

    services.restore(
        actor=actor,
        backup_id=backup.pk,
        password=FAILSAFE_PASSWORD,
        only=[f"licensing.license:{license.key}"],
        at=moment,
    )

    license.refresh_from_db()
    assert license.owner == bob and license.status == License.Status.ACTIVE
