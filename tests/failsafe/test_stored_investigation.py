"""Investigations kept with their emergency backups: stored as data, read back exactly."""

import json

import pytest
from django.core.management.base import CommandError

from failsafe import services
from failsafe.exceptions import FailsafeError, InvestigationNotFound, NotSuperAdmin
from failsafe.investigate import Investigation
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed
from tests.factories import UserFactory
from tests.helpers import run
from tests.investigations import attacked_trigger

pytestmark = pytest.mark.django_db


@pytest.fixture
def triggered(actor, armed, population):
    return attacked_trigger(actor, armed)


def test_the_investigation_has_every_part_and_round_trips_exactly(triggered):
    report = triggered.investigation
    # Something in every part, so the round trip below checks each of them.
    assert report.comparison.issues and report.comparison.changes
    users = report.comparison.details["accounts.user"]
    assert users.removed.records == ["dave", "erin"]
    assert any(change.secret for record in users.modified.records for change in record.fields)
    assert report.comparison.findings >= {"superadmins_changed", "passwords_changed"}
    assert report.comparison.superadmins == ["carol"]
    assert report.comparison.affected_pks["accounts.user"]
    # carol's admin log entry on herself; root's own backup and marking touched no record.
    assert list(report.root_cause.by_actor) == ["carol"]
    assert report.root_cause.no_recorded_actor.records["accounts.user"]
    assert report.comparison.safe_backup_created_at is not None

    data = report.to_data()

    assert json.loads(json.dumps(data)) == data  # plain JSON, nothing else
    assert Investigation.from_data(json.loads(json.dumps(data))) == report


def test_the_kept_investigation_reads_back_after_a_restart(triggered):
    # A fresh row from the database: nothing of this process's objects.
    row = Backup.objects.get(pk=triggered.backup.pk)

    kept = Investigation.from_data(row.investigation)

    assert kept == triggered.investigation
    assert seed.investigation(kept) == seed.investigation(triggered.investigation)
    # The order of models and actors is part of the report, on PostgreSQL's jsonb too.
    assert list(kept.comparison.details) == list(triggered.investigation.comparison.details)
    assert list(kept.root_cause.by_actor) == list(triggered.investigation.root_cause.by_actor)


@pytest.mark.parametrize(
    "data",
    [{}, {"version": 2}, {"version": 1, "status": "Investigating"}, {"version": 1, **{"x": 1}}],
)
def test_what_is_not_a_stored_investigation_is_refused(data):
    with pytest.raises(ValueError, match="not a stored investigation"):
        Investigation.from_data(data)


def test_the_service_reads_it_for_superadmins_and_audits_it(triggered, actor):
    report = services.stored_investigation(actor=actor, backup_id=str(triggered.backup.id)[:8])

    assert report == triggered.investigation
    event = AuditEvent.objects.filter(action="failsafe.investigation").get()
    assert (event.outcome, event.target) == ("SUCCESS", str(triggered.backup.id)[:8])
    assert event.details["backup_id"] == str(triggered.backup.id)

    plain = services.Actor(user=UserFactory(username="plain"))
    with pytest.raises(NotSuperAdmin):
        services.stored_investigation(actor=plain, backup_id=triggered.backup.id)


def test_a_backup_without_one_or_with_a_damaged_one_is_refused_in_one_line(triggered, actor):
    manual = services.create_backup(actor=actor)
    with pytest.raises(InvestigationNotFound, match="has no stored investigation"):
        services.stored_investigation(actor=actor, backup_id=manual.id)

    Backup.objects.filter(pk=triggered.backup.pk).update(investigation={"version": 1})
    with pytest.raises(FailsafeError, match="cannot be read: not a stored investigation"):
        services.stored_investigation(actor=actor, backup_id=triggered.backup.id)


# --- the command --------------------------------------------------------------------------


def test_failsafe_investigation_prints_the_kept_report(triggered):
    backup_id = str(triggered.backup.id)
    report = triggered.investigation

    # The attack made carol a second SuperAdmin: root names itself.
    text = run("failsafe_investigation", backup_id[:8], "--user", "root")

    assert text.startswith(f"Investigating against the last safe backup {report.last_safe_backup}")
    for issue in report.comparison.issues:
        assert f"  - {issue}" in text
    assert f"  - {report.recommendations[0]}" in text
    assert "Who did what since " in text and "  carol:" in text
    assert "Changed role." in text

    printed = json.loads(run("failsafe_investigation", backup_id, "--json", "--user", "root"))

    assert printed == json.loads(json.dumps(seed.investigation(report), default=str))
    assert printed["Comparison"]["Issues"] == report.comparison.issues


def test_failsafe_investigation_refuses_in_one_line(triggered, actor):
    manual = services.create_backup(actor=actor)
    with pytest.raises(CommandError, match=f"^Backup {manual.id} has no stored investigation"):
        run("failsafe_investigation", str(manual.id), "--user", "root")
    with pytest.raises(CommandError, match="^Invalid backup id: 'nonsense'$"):
        run("failsafe_investigation", "nonsense", "--user", "root")


def test_failsafe_help_lists_it(superadmin):
    assert "failsafe_investigation BACKUP_ID" in run("failsafe_help")
