"""Comparing a baseline snapshot with the live database: issues, changes and details."""

import datetime
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from accounts.models import Role
from failsafe import capture
from failsafe.api.serializers import ComparisonSerializer
from failsafe.capture import live_snapshot
from failsafe.compare import ComparisonResult, compare
from failsafe.exceptions import ArchiveCorrupt
from failsafe.render import seed
from failsafe.snapshot import ModelSpec, Section, Snapshot
from licensing.models import License
from tests.factories import LicenseFactory, SuperAdminFactory, UserFactory

User = get_user_model()
BASELINE_ID = "450e8400-e29b-41d4-a716-446655440000"


def take_baseline() -> Snapshot:
    """What a backup holds: the live state and sections, materialized before anything changes."""
    sections = [Section(s.spec, list(s.rows)) for s in capture.live_sections()]
    return Snapshot(BASELINE_ID, capture.system_state(), sections)


def live() -> Snapshot:
    return Snapshot("live", capture.system_state(), capture.live_sections())


def compare_with_live(baseline: Snapshot) -> ComparisonResult:
    return compare(baseline=baseline, current=live(), baseline_backup_id=BASELINE_ID)


def details(result: ComparisonResult) -> dict:
    """The record-level detail as the seed's JSON shows it."""
    return seed.comparison(result)["Details"]


def user_details(result: ComparisonResult) -> dict:
    return details(result)[capture.model_label(User)]


@pytest.mark.django_db
def test_users_and_licenses_gone_are_issues_with_the_seed_texts(superadmin, population):
    baseline = take_baseline()
    User.objects.filter(username__in=["dave", "erin"]).delete()
    License.objects.filter(owner__username="alice").delete()

    result = compare_with_live(baseline)

    assert result.message == "Issues detected"
    assert result.issues[:2] == [
        "User count decreased: 6 -> 4",
        "License count decreased: 4 -> 3",
    ]
    assert result.has_safe_backup is True
    assert result.safe_backup_id == BASELINE_ID
    assert user_details(result)["Removed"] == {"Count": 2, "Records": ["dave", "erin"]}
    # dave owned a license: it lost its owner, so it shows as modified too.
    assert "2 users removed" in result.changes
    assert "1 license removed" in result.changes
    assert "1 license modified" in result.changes


@pytest.mark.django_db
def test_identical_snapshots_report_nothing(superadmin, population):
    baseline = take_baseline()

    result = compare_with_live(baseline)

    assert result.message == "No critical issues detected"
    assert result.issues == []
    assert result.changes == []
    assert all(
        detail["Added"]["Count"] == detail["Removed"]["Count"] == detail["Modified"]["Count"] == 0
        for detail in details(result).values()
    )


@pytest.mark.django_db
def test_additions_are_changes_not_issues(superadmin, population):
    baseline = take_baseline()
    UserFactory(username="frank")
    Group.objects.create(name="auditors")

    result = compare_with_live(baseline)

    assert result.issues == []
    assert result.message == "No critical issues detected"
    assert "User count increased: 6 -> 7" in result.changes
    assert "1 user added" in result.changes
    assert "1 group added" in result.changes
    assert user_details(result)["Added"] == {"Count": 1, "Records": ["frank"]}
    assert details(result)["auth.group"]["Added"] == {"Count": 1, "Records": ["auditors"]}


@pytest.mark.django_db
def test_modified_records_are_named_with_each_field_from_and_to(superadmin, population):
    group = Group.objects.create(name="support")
    baseline = take_baseline()
    bob = User.objects.get(username="bob")
    bob.email = "bob@new.example.com"
    bob.save()
    bob.groups.add(group)
    license = License.objects.get(owner=bob)
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    License.objects.filter(pk=license.pk).update(expires_at=expires, max_users=9)
    group.name = "helpdesk"
    group.save()

    result = compare_with_live(baseline)

    assert user_details(result)["Modified"] == {
        "Count": 1,
        "Records": [
            {
                "Record": "bob",
                "Fields": {
                    "email": {"From": "bob@example.com", "To": "bob@new.example.com"},
                    # A relation names what it points at, as the current side names it.
                    "groups": {"From": [], "To": ["helpdesk"]},
                },
            }
        ],
    }
    license_record = details(result)["licensing.license"]["Modified"]["Records"][0]
    assert license_record["Record"] == license.key
    assert license_record["Fields"]["max_users"] == {"From": 5, "To": 9}
    assert license_record["Fields"]["expires_at"]["From"] is None
    assert license_record["Fields"]["expires_at"]["To"].startswith("2030-01-02T03:04:05")
    assert details(result)["auth.group"]["Modified"]["Records"] == [
        {"Record": "helpdesk", "Fields": {"name": {"From": "support", "To": "helpdesk"}}}
    ]
    assert {"1 user modified", "1 license modified", "1 group modified"} <= set(result.changes)
    assert result.issues == []
    json.dumps(seed.comparison(result))  # every value is JSON-safe


@pytest.mark.django_db
def test_superadmin_changes_are_issues_naming_the_account(superadmin, population):
    SuperAdminFactory(username="sam")
    SuperAdminFactory(username="sue")
    SuperAdminFactory(username="sid")
    baseline = take_baseline()
    sam = User.objects.get(username="sam")
    sam.role = Role.USER
    sam.save()
    User.objects.filter(username="sue").update(is_active=False)
    User.objects.filter(username="sid").delete()
    alice = User.objects.get(username="alice")
    alice.role = Role.SUPERADMIN
    alice.save()
    SuperAdminFactory(username="eve")
    carol = User.objects.get(username="carol")
    carol.role = Role.ADMIN
    carol.save()

    result = compare_with_live(baseline)

    assert result.message == "Issues detected"
    for issue in (
        "SuperAdmin demoted: sam (SUPERADMIN -> USER)",
        "SuperAdmin deactivated: sue",
        "SuperAdmin removed: sid",
        "User promoted to SuperAdmin: alice",
        "SuperAdmin added: eve",
    ):
        assert issue in result.issues
    assert "Role changed: carol (USER -> ADMIN)" in result.changes
    assert not any("carol" in issue for issue in result.issues)
    assert sorted(result.superadmins) == ["alice", "eve", "sam", "sid", "sue"]


@pytest.mark.django_db
def test_revoking_many_licenses_at_once_is_an_issue(superadmin, population):
    baseline = take_baseline()
    licenses = list(License.objects.order_by("pk"))
    License.objects.filter(pk__in=[lic.pk for lic in licenses[:2]]).update(
        status=License.Status.REVOKED
    )
    License.objects.filter(pk=licenses[2].pk).update(status=License.Status.SUSPENDED)

    result = compare_with_live(baseline)

    keys = ", ".join(lic.key for lic in licenses[:3])
    assert result.issues == [f"3 licenses revoked or suspended: {keys}"]
    assert not any(change.startswith("License revoked") for change in result.changes)


@pytest.mark.django_db
def test_revoking_fewer_licenses_than_the_threshold_is_only_a_change(superadmin, population):
    baseline = take_baseline()
    first, second = License.objects.order_by("pk")[:2]
    License.objects.filter(pk=first.pk).update(status=License.Status.REVOKED)
    License.objects.filter(pk=second.pk).update(status=License.Status.SUSPENDED)

    result = compare_with_live(baseline)

    assert result.issues == []
    assert f"License revoked: {first.key}" in result.changes
    assert f"License suspended: {second.key}" in result.changes
    assert "2 licenses modified" in result.changes


@pytest.mark.django_db
def test_a_bulk_revocation_names_ten_licenses_then_says_how_many_more(superadmin, population):
    owner = User.objects.get(username="bob")
    LicenseFactory.create_batch(8, owner=owner)
    baseline = take_baseline()
    License.objects.update(status=License.Status.REVOKED)

    result = compare_with_live(baseline)

    keys = list(License.objects.order_by("pk").values_list("key", flat=True))
    assert result.issues == [f"12 licenses revoked or suspended: {', '.join(keys[:10])} and 2 more"]


@pytest.mark.django_db
def test_changed_passwords_show_as_changed_and_never_the_hash(superadmin, population):
    baseline = take_baseline()
    old_hash = User.objects.get(username="alice").password
    alice = User.objects.get(username="alice")
    alice.set_password("a brand new passphrase")
    alice.save()
    new_hash = User.objects.get(username="alice").password

    result = compare_with_live(baseline)

    assert result.issues == []
    assert "Password changed: alice" in result.changes
    record = user_details(result)["Modified"]["Records"][0]
    assert record == {"Record": "alice", "Fields": {"password": "changed"}}
    for rendered in (seed.comparison(result), ComparisonSerializer(result).data):
        text = json.dumps(rendered)
        assert old_hash not in text and new_hash not in text


@pytest.mark.django_db
def test_many_password_hashes_changed_at_once_is_an_issue(superadmin, population, settings):
    settings.FAILSAFE = {"BULK_PASSWORD_CHANGE_THRESHOLD": 3}
    baseline = take_baseline()
    hashes = list(User.objects.values_list("password", flat=True))
    for user in User.objects.filter(username__in=["alice", "bob", "carol"]):
        user.set_password("attacker chosen passphrase")
        user.save()
    hashes += list(User.objects.values_list("password", flat=True))

    result = compare_with_live(baseline)

    assert result.issues == ["3 password hashes changed: alice, bob, carol"]
    assert not any(change.startswith("Password changed") for change in result.changes)
    text = json.dumps(seed.comparison(result))
    assert not any(password_hash in text for password_hash in hashes)


@pytest.mark.django_db
def test_detail_lists_stop_at_the_limit_but_count_everything(superadmin, population, settings):
    settings.FAILSAFE = {"DETAIL_LIMIT": 2}
    baseline = take_baseline()
    UserFactory.create_batch(5)
    User.objects.filter(username__in=["alice", "bob", "carol"]).update(first_name="Renamed")

    result = compare_with_live(baseline)

    users = user_details(result)
    assert users["Added"]["Count"] == 5
    assert len(users["Added"]["Records"]) == 2
    assert users["Modified"]["Count"] == 3
    assert [r["Record"] for r in users["Modified"]["Records"]] == ["alice", "bob"]
    assert users["Truncated"] is True
    assert "5 users added" in result.changes
    assert "3 users modified" in result.changes
    assert details(result)["licensing.license"]["Truncated"] is False


@pytest.mark.django_db
def test_a_different_captured_schema_is_an_issue(superadmin, population):
    baseline = take_baseline()
    baseline.state["SystemMetrics"]["Migrations"]["accounts"].append("0003_gone")
    current = live()
    current.state["SystemMetrics"]["Migrations"]["licensing"].append("0009_new")

    result = compare(baseline=baseline, current=current, baseline_backup_id=BASELINE_ID)

    assert result.message == "Issues detected"
    assert result.issues == ["Captured schema differs: accounts: -0003_gone; licensing: +0009_new"]


@pytest.mark.django_db
def test_a_model_captured_with_other_columns_is_not_compared_record_by_record(
    superadmin, population
):
    baseline = take_baseline()
    user_section = baseline.sections[1]
    dropped = user_section.spec.fields.index("email")
    user_section.spec = ModelSpec(
        user_section.spec.label,
        tuple(f for f in user_section.spec.fields if f != "email"),
        user_section.spec.m2m,
    )
    user_section.rows = [row[:dropped] + row[dropped + 1 :] for row in user_section.rows]
    License.objects.filter(owner__username="alice").update(max_users=50)

    result = compare_with_live(baseline)

    assert "Record-level comparison of users skipped: captured columns differ (+email)" in (
        result.changes
    )
    assert capture.model_label(User) not in result.details
    assert details(result)["licensing.license"]["Modified"]["Count"] == 1


@pytest.mark.django_db
def test_snapshots_of_different_models_are_an_issue(superadmin, population):
    baseline = take_baseline()
    baseline.sections = baseline.sections[:2]  # no licenses section

    result = compare_with_live(baseline)

    assert result.issues == [
        "Record-level comparison stopped: Snapshots capture different models: "
        "nothing where the other has licensing.license"
    ]


@pytest.mark.django_db
def test_a_corrupt_archive_is_not_swallowed(superadmin, population):
    baseline = take_baseline()
    users = baseline.sections[1]

    def truncated_rows(rows):
        yield from rows[:2]
        raise ArchiveCorrupt("Archive is truncated")

    baseline.sections[1] = Section(users.spec, truncated_rows(users.rows))

    with pytest.raises(ArchiveCorrupt, match="truncated"):
        compare_with_live(baseline)


def test_degenerate_results_carry_the_seed_messages():
    nothing = seed.comparison(ComparisonResult.no_safe_backup())
    assert nothing == {
        "HasSafeBackup": False,
        "SafeBackupId": None,
        "SafeBackupTimestamp": None,
        "Message": "No safe backup found for comparison",
        "Issues": ["This is the first backup - no baseline to compare against"],
        "Changes": [],
        "Details": {},
        "Baseline": None,
        "Current": None,
    }
    unreadable = ComparisonResult.unreadable_baseline(BASELINE_ID, "Archive checksum mismatch")
    assert seed.comparison(unreadable)["Message"] == "Issues detected"
    assert unreadable.issues == [
        f"Last safe backup {BASELINE_ID} is unreadable: Archive checksum mismatch"
    ]


@pytest.mark.django_db
def test_api_json_has_the_same_content_in_snake_case(superadmin, population):
    baseline = take_baseline()
    User.objects.filter(username="bob").update(last_name="Builder")
    User.objects.filter(username="erin").delete()

    result = compare_with_live(baseline)
    api = ComparisonSerializer(result).data

    assert set(api) == {
        "has_safe_backup",
        "safe_backup_id",
        "message",
        "issues",
        "changes",
        "details",
        "baseline",
        "current",
    }
    assert (api["baseline"], api["current"]) == (f"backup {BASELINE_ID}", "live now")
    assert api["issues"] == result.issues
    users = api["details"][capture.model_label(User)]
    assert users["removed"] == {"count": 1, "records": ["erin"]}
    assert users["modified"]["records"] == [
        {"record": "bob", "fields": {"last_name": {"from": "", "to": "Builder"}}}
    ]
    assert users["truncated"] is False


@pytest.mark.django_db(transaction=True)
def test_live_snapshot_compares_against_the_database_as_it_is_now():
    UserFactory(username="alice")
    UserFactory(username="bob")
    baseline = take_baseline()
    User.objects.filter(username="bob").delete()

    with live_snapshot() as current:
        assert current.name == "live"
        result = compare(baseline=baseline, current=current, baseline_backup_id=BASELINE_ID)

    assert result.issues == ["User count decreased: 2 -> 1"]
    assert user_details(result)["Removed"] == {"Count": 1, "Records": ["bob"]}
