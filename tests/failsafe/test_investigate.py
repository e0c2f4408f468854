"""The investigation report: recommendations from the issues, and who did what since."""

import datetime
import itertools

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from accounts.models import Role
from failsafe import capture
from failsafe.api.serializers import InvestigationSerializer
from failsafe.compare import ComparisonResult, compare
from failsafe.investigate import HINTS_PER_ACTOR, investigate
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed
from failsafe.snapshot import Section, Snapshot
from licensing.models import License
from tests.factories import SuperAdminFactory, UserFactory

User = get_user_model()
_seq = itertools.count(1)


def take_baseline(backup: Backup) -> Snapshot:
    sections = [Section(s.spec, list(s.rows)) for s in capture.live_sections()]
    return Snapshot(str(backup.id), capture.system_state(), sections)


def compare_with_live(baseline: Snapshot) -> ComparisonResult:
    current = Snapshot("live", capture.system_state(), capture.live_sections())
    return compare(baseline=baseline, current=current, baseline_backup_id=baseline.name)


def safe_backup(hours_ago: float = 1) -> Backup:
    return Backup.objects.create(
        type=Backup.Type.MANUAL,
        status=Backup.Status.COMPLETE,
        is_safe=True,
        created_at=timezone.now() - datetime.timedelta(hours=hours_ago),
    )


def audit(actor: str, action: str, target: str = "", *, when=None) -> AuditEvent:
    return AuditEvent.objects.create(
        seq=next(_seq),
        created_at=when or timezone.now(),
        actor_username=actor,
        source=AuditEvent.Source.CLI,
        action=action,
        target=target,
        outcome=AuditEvent.Outcome.SUCCESS,
        prev_hash="0" * 64,
        hash="x" * 64,
    )


def admin_log(user, obj, flag=CHANGE, message="", *, when=None) -> LogEntry:
    entry = LogEntry.objects.create(
        user=user,
        content_type=ContentType.objects.get_for_model(obj),
        object_id=str(obj.pk),
        object_repr=str(obj),
        action_flag=flag,
        change_message=message,
    )
    if when is not None:
        LogEntry.objects.filter(pk=entry.pk).update(action_time=when)
    return entry


@pytest.mark.django_db
def test_missing_users_and_licenses_recommend_restoring_the_safe_backup_first(
    superadmin, population
):
    backup = safe_backup()
    baseline = take_baseline(backup)
    User.objects.filter(username__in=["dave", "erin"]).delete()
    License.objects.filter(owner__username="alice").delete()

    report = seed.investigation(
        investigate(comparison=compare_with_live(baseline), safe_backup=backup)
    )

    assert report["Status"] == "Investigating"
    assert report["LastSafeBackup"] == str(backup.id)
    assert report["Comparison"]["Issues"][:2] == [
        "User count decreased: 6 -> 4",
        "License count decreased: 4 -> 3",
    ]
    # The original module's lines first, ours after them.
    assert report["Recommendations"] == [
        f"RECOMMENDED: Restore from last safe backup (ID: {backup.id})",
        "Investigate the following issues:",
        *[f"  - {issue}" for issue in report["Comparison"]["Issues"]],
        "Review audit logs for suspicious activity",
        "Consider issuing appropriate sanctions",
        "Investigate missing users and licenses",
    ]


@pytest.mark.django_db
def test_only_missing_users_are_named_when_only_users_went(superadmin, population):
    backup = safe_backup()
    baseline = take_baseline(backup)
    User.objects.filter(username="erin").delete()

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)

    assert "Investigate missing users" in report.recommendations
    assert "Investigate missing users and licenses" not in report.recommendations


@pytest.mark.django_db
def test_superadmin_changes_ask_to_verify_those_accounts(superadmin, population):
    SuperAdminFactory(username="sam")
    backup = safe_backup()
    baseline = take_baseline(backup)
    for username, role in (("alice", Role.SUPERADMIN), ("sam", Role.USER)):
        user = User.objects.get(username=username)
        user.role = role
        user.save()

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)

    assert report.recommendations[0] == (
        f"RECOMMENDED: Restore from last safe backup (ID: {backup.id})"
    )
    assert "Verify SuperAdmin accounts: alice, sam" in report.recommendations


@pytest.mark.django_db
def test_bulk_password_changes_recommend_a_reset(superadmin, population, settings):
    settings.FAILSAFE = {"BULK_PASSWORD_CHANGE_THRESHOLD": 2}
    backup = safe_backup()
    baseline = take_baseline(backup)
    for user in User.objects.filter(username__in=["alice", "bob"]):
        user.set_password("taken over")
        user.save()

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)

    assert "Force a password reset for the affected users" in report.recommendations
    assert "Review audit logs for suspicious activity" in report.recommendations


@pytest.mark.django_db
def test_a_schema_difference_recommends_a_matching_backup(superadmin, population):
    backup = safe_backup()
    baseline = take_baseline(backup)
    baseline.state["SystemMetrics"]["Migrations"]["accounts"].append("0099_future")

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)

    assert (
        "Restore only from a backup taken under the current schema, or migrate first"
        in report.recommendations
    )


@pytest.mark.django_db
def test_an_unreadable_safe_backup_asks_to_verify_backups_not_to_restore_it(db):
    backup = safe_backup()
    comparison = ComparisonResult.unreadable_baseline(str(backup.id), "Archive is truncated")

    report = investigate(comparison=comparison, safe_backup=backup)

    # No "RECOMMENDED: Restore" from the very backup that cannot be read.
    assert report.recommendations == [
        "Investigate the following issues:",
        f"  - Last safe backup {backup.id} is unreadable: Archive is truncated",
        "Review audit logs for suspicious activity",
        "Consider issuing appropriate sanctions",
        "Verify backups with manage.py failsafe_verify --all and mark a readable backup as safe",
    ]


@pytest.mark.django_db
def test_without_a_safe_backup_it_asks_for_one_and_looks_at_the_last_day(superadmin):
    audit("root", "failsafe.trigger", when=timezone.now() - datetime.timedelta(hours=2))
    audit("root", "failsafe.backup", when=timezone.now() - datetime.timedelta(hours=30))

    report = investigate(comparison=ComparisonResult.no_safe_backup(), safe_backup=None)
    rendered = seed.investigation(report)

    assert rendered["LastSafeBackup"] is None
    assert rendered["Comparison"]["Message"] == "No safe backup found for comparison"
    assert rendered["Recommendations"] == [
        "Mark this backup as safe if system is functioning correctly",
        "Run comprehensive system checks",
        "Mark a known-good backup as safe: manage.py failsafe_marksafe <backup-id>",
    ]
    since = datetime.datetime.fromisoformat(rendered["RootCause"]["Since"])
    assert timezone.now() - since >= datetime.timedelta(hours=24)
    assert timezone.now() - since < datetime.timedelta(hours=25)
    # Nothing to compare, so no changed record: the SuperAdmin's own trigger is no hint.
    assert rendered["RootCause"]["ByActor"] == {}


@pytest.mark.django_db
def test_no_issues_means_no_action(superadmin, population):
    backup = safe_backup()
    baseline = take_baseline(backup)
    UserFactory(username="newcomer")

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)

    assert report.comparison.message == "No critical issues detected"
    assert report.recommendations == [
        "System appears stable",
        "Consider marking this backup as safe",
        "Continue monitoring for anomalies",
        "No action required; if this state is known to be good, mark the new backup as safe",
    ]


@pytest.mark.django_db
def test_root_cause_groups_what_each_actor_did_to_the_changed_records(superadmin, population):
    alice, bob, carol, *_ = population[0]
    SuperAdminFactory(username="sam")
    backup = safe_backup(hours_ago=1)
    baseline = take_baseline(backup)
    sam = User.objects.get(username="sam")
    sam.role = Role.USER
    sam.save()
    admin_log(alice, sam, message='[{"changed": {"fields": ["Role"]}}]')
    admin_log(alice, carol, message='[{"changed": {"fields": ["Email address"]}}]')  # unchanged
    admin_log(alice, sam, when=timezone.now() - datetime.timedelta(hours=3))  # before the backup
    erin = User.objects.get(username="erin")
    admin_log(bob, erin, flag=DELETION)
    erin.delete()
    audit("mallory", "failsafe.restore", target="some-backup")
    audit("mallory", "failsafe.compare", when=timezone.now() - datetime.timedelta(hours=2))

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)
    cause = seed.investigation(report)["RootCause"]

    assert datetime.datetime.fromisoformat(cause["Since"]) == backup.created_at
    by_actor = cause["ByActor"]
    assert set(by_actor) == {"alice", "bob", "mallory"}
    assert [(h["Source"], h["Action"], h["Target"]) for h in by_actor["alice"]] == [
        ("admin-log", "Changed Role.", "accounts.user sam")
    ]
    assert [(h["Source"], h["Action"], h["Target"]) for h in by_actor["bob"]] == [
        ("admin-log", "Deleted.", "accounts.user erin")
    ]
    assert [(h["Source"], h["Action"], h["Target"]) for h in by_actor["mallory"]] == [
        ("audit", "failsafe.restore", "some-backup")
    ]
    assert cause["Omitted"] == {}


@pytest.mark.django_db
def test_root_cause_lists_a_bounded_number_per_actor_and_says_how_many_more(superadmin, population):
    backup = safe_backup(hours_ago=1)
    baseline = take_baseline(backup)
    User.objects.filter(username="erin").delete()
    for _ in range(HINTS_PER_ACTOR + 3):
        audit("mallory", "failsafe.restore")

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)
    cause = seed.investigation(report)["RootCause"]

    assert len(cause["ByActor"]["mallory"]) == HINTS_PER_ACTOR
    assert cause["Omitted"] == {"mallory": 3}


@pytest.mark.django_db
def test_api_json_mirrors_the_seed_block_in_snake_case(superadmin, population):
    backup = safe_backup()
    baseline = take_baseline(backup)
    User.objects.filter(username="erin").delete()
    audit("root", "failsafe.restore", target="some-backup")

    report = investigate(comparison=compare_with_live(baseline), safe_backup=backup)
    rendered, api = seed.investigation(report), InvestigationSerializer(report).data

    assert set(rendered) == {
        "Status",
        "LastSafeBackup",
        "Comparison",
        "Recommendations",
        "RootCause",
    }
    assert api["status"] == rendered["Status"] == "Investigating"
    assert api["last_safe_backup"] == rendered["LastSafeBackup"] == str(backup.id)
    assert api["recommendations"] == rendered["Recommendations"]
    assert api["comparison"]["issues"] == rendered["Comparison"]["Issues"]
    assert api["root_cause"]["by_actor"]["root"][0]["action"] == "failsafe.restore"
    assert api["root_cause"]["by_actor"]["root"][0]["source"] == "audit"
    assert api["root_cause"]["by_actor"]["root"][0]["outcome"] == "SUCCESS"
    assert (
        api["root_cause"]["no_recorded_actor"]["summary"]
        == rendered["RootCause"]["NoRecordedActor"]["Summary"]
    )
