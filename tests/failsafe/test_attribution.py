"""Attribution an operator can trust: the who-did-what list names only what touched the
changed records, with outcomes; changes nobody is on record for say so; records go by their
natural keys, and a bulk consequence of a deletion is one line."""

import datetime
import json

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from accounts.models import Role
from failsafe import audit, capture, services
from failsafe.compare import compare
from failsafe.investigate import NO_RECORDED_ACTOR, Investigation, investigate
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed, text
from failsafe.snapshot import Section, Snapshot
from licensing.exceptions import InvalidFailsafePassword
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD, LicenseFactory, SuperAdminFactory, UserFactory

User = get_user_model()
pytestmark = pytest.mark.django_db

STAFF = [f"staff{number:02d}" for number in range(12)]
LOST_OWNERS = "12 licenses lost their owner when their users were deleted"


@pytest.fixture
def attack(client, actor, armed, population, keyset):
    """The seed's attack, through the Django admin, beside changes from the shell.

    mallory, a SuperAdmin, logs in, deletes twelve licensed users and promotes carol in the
    admin (admin log entries); from the shell, alice's license is revoked, bob's handed to alice,
    and erin's e-mail changed (no audit, no admin log); root reads the status, the backup
    list and a comparison before triggering.
    """
    mallory = SuperAdminFactory(username="mallory")
    for username in STAFF:
        LicenseFactory(owner=UserFactory(username=username))
    safe = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)

    client.force_login(mallory)
    changelist = reverse("admin:accounts_user_changelist")
    doomed = list(User.objects.filter(username__in=STAFF).values_list("pk", flat=True))
    deleted = client.post(
        changelist, {"action": "delete_selected", "_selected_action": doomed, "post": "yes"}
    )
    assert deleted.status_code == 302 and not User.objects.filter(username__in=STAFF).exists()
    carol = User.objects.get(username="carol")
    promoted = client.post(
        reverse("admin:accounts_user_change", args=[carol.pk]),
        {
            "username": "carol",
            "email": carol.email,
            "first_name": "",
            "last_name": "",
            "role": Role.SUPERADMIN,
            "is_active": "on",
        },
    )
    assert promoted.status_code == 302
    assert User.objects.get(username="carol").role == Role.SUPERADMIN

    alice = User.objects.get(username="alice")
    License.objects.filter(owner=alice).update(status=License.Status.REVOKED)
    License.objects.filter(owner__username="bob").update(owner=alice)
    User.objects.filter(username="erin").update(email="erin@elsewhere.example.com")

    services.status(actor=actor)
    services.list_backups(actor=actor)
    services.compare(actor=actor)
    return services.trigger(actor=actor, passkey=armed, reason="the seed's attack")


def test_who_did_what_lists_only_the_admins_work_on_the_changed_records(attack):
    cause = attack.investigation.root_cause

    assert list(cause.by_actor) == ["mallory"]
    hints = cause.by_actor["mallory"]
    deletions = [(h.source, h.outcome, h.target) for h in hints if h.outcome == "deleted"]
    assert sorted(deletions) == [("admin-log", "deleted", f"accounts.user {u}") for u in STAFF]
    (promotion,) = [h for h in hints if h.outcome == "changed"]
    assert (promotion.source, promotion.target) == ("admin-log", "accounts.user carol")
    assert "Role" in promotion.action
    assert len(hints) == 13
    # root's status read, backup list, comparison and trigger touched no record.
    assert not any(h.action.startswith("failsafe.") for h in hints)


def test_changes_nobody_is_on_record_for_are_said_to_have_no_recorded_actor(attack):
    cause = attack.investigation.root_cause
    # Both alice's now, in pk order: her own (revoked), then bob's (handed to her).
    revoked, handed_over = License.objects.filter(owner__username="alice").order_by("pk")
    assert revoked.status == License.Status.REVOKED

    unattributed = cause.no_recorded_actor
    # mallory's own record changed too: logging in set her last_login, which no admin log
    # entry records.
    assert unattributed.records == {
        "accounts.user": ["erin", "mallory"],
        "licensing.license": [revoked.key, handed_over.key],
    }
    assert unattributed.count == 4
    assert unattributed.not_checked == 0
    assert unattributed.summary == (
        f"4 changes with {NO_RECORDED_ACTOR}: erin, mallory, {revoked.key}, {handed_over.key}"
    )
    # The twelve licenses whose owners mallory deleted follow her deletions: not listed.
    listed = [name for names in unattributed.records.values() for name in names]
    assert not set(listed) & set(_staff_license_keys(attack))

    rendered = seed.investigation(attack.investigation)["RootCause"]
    assert rendered["NoRecordedActor"]["Summary"] == unattributed.summary
    assert rendered["NoRecordedActor"]["Count"] == 4
    assert {h["Outcome"] for h in rendered["ByActor"]["mallory"]} == {"deleted", "changed"}

    report = text.trigger(attack)
    assert f"  {unattributed.summary}" in report
    # The unattributed line follows mallory's, as its own entry, never as one of hers.
    assert report.index("  mallory:") < report.index(f"  4 changes with {NO_RECORDED_ACTOR}")
    assert "[admin-log] deleted: Deleted. on accounts.user staff00" in report


def _staff_license_keys(attack) -> list[str]:
    licenses = attack.investigation.comparison.details["licensing.license"]
    return [record.record for record in licenses.modified.records if record.follows_deletions_only]


def test_records_are_named_by_natural_key_and_the_bulk_consequence_is_one_line(attack):
    comparison = attack.investigation.comparison
    licenses = comparison.details["licensing.license"]

    # Twelve records followed the deletions; each is kept in the detail, owner by username.
    assert len(_staff_license_keys(attack)) == 12
    by_key = {record.record: record for record in licenses.modified.records}
    owners = sorted(
        (change.old, change.new)
        for key in _staff_license_keys(attack)
        for change in by_key[key].fields
    )
    assert owners == [(username, None) for username in STAFF]
    (consequence,) = licenses.consequences
    assert (consequence.field, consequence.target, consequence.count) == (
        "owner",
        "accounts.user",
        12,
    )
    assert consequence.summary == LOST_OWNERS
    assert sorted(consequence.records) == sorted(_staff_license_keys(attack))
    # bob's license handed to alice from the shell: a plain change, named by usernames.
    (handed_over,) = [
        record
        for record in licenses.listed_modified
        if any(change.name == "owner" for change in record.fields)
    ]
    (owner,) = [change for change in handed_over.fields if change.name == "owner"]
    assert (owner.old, owner.new, owner.follows_deletion) == ("bob", "alice", False)

    assert comparison.changes.count(LOST_OWNERS) == 1
    assert text.trigger(attack).count(LOST_OWNERS) == 1
    rendered = seed.trigger(attack)["Investigation"]["Comparison"]
    assert rendered["Changes"].count(LOST_OWNERS) == 1
    license_detail = rendered["Details"]["licensing.license"]
    assert license_detail["Consequences"][0]["Summary"] == LOST_OWNERS
    fields = {r["Record"]: r["Fields"] for r in license_detail["Modified"]["Records"]}
    assert fields[handed_over.record]["owner"] == {"From": "bob", "To": "alice"}
    assert "owner_id" not in json.dumps(rendered)


def test_the_admin_page_shows_outcomes_no_recorded_actor_and_one_consequence_line(
    attack, client, superadmin
):
    client.force_login(superadmin)
    page = client.get(reverse("admin:failsafe_backup_investigation", args=[attack.backup.pk]))

    assert page.status_code == 200
    content = page.content.decode()
    assert content.count(escape(LOST_OWNERS)) == 1
    assert "<td>deleted</td>" in content and "<td>changed</td>" in content
    assert "failsafe.status" not in content and "failsafe.backups" not in content
    summary = attack.investigation.root_cause.no_recorded_actor.summary
    assert f'id="no-recorded-actor">{escape(summary)}</p>' in content
    # The handed-over license reads by usernames; the twelve are one line, not twelve.
    assert "<code>owner</code> bob &rarr; alice" in content
    assert content.count("&rarr; (none)") == 0


def test_the_stored_investigation_keeps_outcomes_and_unattributed_changes(attack):
    kept = Investigation.from_data(Backup.objects.get(pk=attack.backup.pk).investigation)

    assert kept == attack.investigation
    assert kept.root_cause.no_recorded_actor.count == 4
    assert kept.comparison.details["licensing.license"].consequences[0].summary == LOST_OWNERS


# --- outcomes of the failsafe's own events on the records ---------------------------------


def _take_baseline(backup: Backup) -> Snapshot:
    sections = [Section(s.spec, list(s.rows)) for s in capture.live_sections()]
    return Snapshot(str(backup.id), capture.system_state(), sections)


def _compare_with_live(baseline: Snapshot):
    current = Snapshot("live", capture.system_state(), capture.live_sections())
    return compare(baseline=baseline, current=current, baseline_backup_id=baseline.name)


def _safe_backup() -> Backup:
    return Backup.objects.create(
        type=Backup.Type.MANUAL,
        status=Backup.Status.COMPLETE,
        is_safe=True,
        created_at=timezone.now() - datetime.timedelta(minutes=5),
    )


def test_a_denied_restore_is_listed_with_its_outcome_but_accounts_for_nothing(
    actor, armed, population, keyset
):
    safe = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)
    User.objects.filter(username="erin").delete()
    with pytest.raises(InvalidFailsafePassword):
        services.restore(actor=actor, backup_id=safe.pk, password="not the password")
    services.restore(actor=actor, backup_id=safe.pk, dry_run=True)

    report = services.trigger(actor=actor, passkey=armed).investigation
    cause = report.root_cause

    # The dry run changed nothing and aimed at nothing: only the refused attempt is listed.
    assert [(h.action, h.outcome, h.target) for h in cause.by_actor["root"]] == [
        ("failsafe.restore", "DENIED", str(safe.pk))
    ]
    assert cause.no_recorded_actor.records == {"accounts.user": ["erin"]}
    assert seed.root_cause(cause)["ByActor"]["root"][0]["Outcome"] == "DENIED"


def test_a_restore_accounts_for_the_models_it_changed_and_evidence_keeps_the_admin_log(
    superadmin, population
):
    backup = _safe_backup()
    baseline = _take_baseline(backup)
    dave = User.objects.get(username="dave")
    dave_pk = dave.pk
    dave.delete()
    Group.objects.create(name="newcomers")
    audit.record(
        action=audit.ACTION_RESTORE,
        outcome=AuditEvent.Outcome.SUCCESS,
        source=AuditEvent.Source.CLI,
        actor=superadmin,
        target="some-backup",
        details={"dry_run": False, "changes": {"auth.group": {"insert": 1, "update": 0}}},
    )
    audit.record(
        action=audit.ACTION_EVIDENCE,
        outcome=AuditEvent.Outcome.SUCCESS,
        source=AuditEvent.Source.CLI,
        actor=superadmin,
        target="admin log entry #7",
        details={
            "when": timezone.now() - datetime.timedelta(minutes=1),
            "by": "trudy",
            "record": f"accounts.user #{dave_pk} dave",
            "change": "",
            "flag": DELETION,
        },
    )

    cause = investigate(comparison=_compare_with_live(baseline), safe_backup=backup).root_cause

    assert [(h.source, h.action, h.target, h.outcome) for h in cause.by_actor["trudy"]] == [
        ("admin-log", "Deleted.", "accounts.user dave", "deleted")
    ]
    assert [(h.action, h.outcome) for h in cause.by_actor["root"]] == [
        ("failsafe.restore", "SUCCESS")
    ]
    # dave by trudy (kept evidence), the group by root's restore; dave's license followed
    # his deletion: nothing is left without an actor.
    assert cause.no_recorded_actor.count == 0
    assert cause.no_recorded_actor.summary == ""


def test_only_admin_log_entries_on_changed_records_count(superadmin, population):
    backup = _safe_backup()
    baseline = _take_baseline(backup)
    alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
    LogEntry.objects.log_actions(user_id=superadmin.pk, queryset=[bob], action_flag=DELETION)
    User.objects.filter(pk=alice.pk).update(first_name="Alice")

    cause = investigate(comparison=_compare_with_live(baseline), safe_backup=backup).root_cause

    # bob is unchanged: root's entry on him is not a hint; alice's change has no actor.
    assert cause.by_actor == {}
    assert cause.no_recorded_actor.summary == f"1 change with {NO_RECORDED_ACTOR}: alice"


def test_changes_beyond_the_named_records_are_said_not_to_be_checked(
    superadmin, population, settings
):
    settings.FAILSAFE = {"DETAIL_LIMIT": 2}
    backup = _safe_backup()
    baseline = _take_baseline(backup)
    User.objects.filter(username__in=["alice", "bob", "carol"]).update(last_name="X")

    cause = investigate(comparison=_compare_with_live(baseline), safe_backup=backup).root_cause

    assert cause.no_recorded_actor.count == 2
    assert cause.no_recorded_actor.not_checked == 1
    assert cause.no_recorded_actor.summary.endswith(
        "1 more changed records were not named by the comparison, so nobody could be looked "
        "up for them"
    )


def test_many_to_many_consequences_and_renamed_targets_are_named(superadmin, population):
    support, sales = Group.objects.create(name="support"), Group.objects.create(name="sales")
    for username in ("alice", "bob"):
        User.objects.get(username=username).groups.add(support, sales)
    backup = _safe_backup()
    baseline = _take_baseline(backup)
    support.delete()
    sales.name = "revenue"
    sales.save()
    carol = User.objects.get(username="carol")
    carol.groups.add(sales)

    comparison = _compare_with_live(baseline)
    users = comparison.details["accounts.user"]

    assert "2 users lost groups when those groups were deleted" in comparison.changes
    records = {record.record: record for record in users.modified.records}
    assert [(f.name, f.old, f.new) for f in records["alice"].fields] == [
        ("groups", ["sales", "support"], ["revenue"])
    ]
    assert records["alice"].follows_deletions_only
    # carol joined a renamed group: named as it is called now, a change of her own.
    assert [(f.name, f.old, f.new) for f in records["carol"].fields] == [
        ("groups", [], ["revenue"])
    ]
    assert [record.record for record in users.listed_modified] == ["carol"]
