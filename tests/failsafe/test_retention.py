"""Retention: the plan (which backups the rules keep, and why) and pruning for real."""

import datetime
import zoneinfo
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from failsafe import oplock, retention, services
from failsafe.archive import get_store
from failsafe.exceptions import (
    FailsafeError,
    InvalidRetentionPolicy,
    NotSuperAdmin,
    OperationInProgress,
)
from failsafe.models import AuditEvent, Backup
from failsafe.render import text
from failsafe.services import retention as retention_service
from licensing.exceptions import FailsafePasswordNotSet, InvalidFailsafePassword
from tests.factories import FAILSAFE_PASSWORD, AdminFactory

from .test_gc import backup_dir, chunks_of, stored_chunks

pytestmark = pytest.mark.django_db

User = get_user_model()
UTC = datetime.UTC
HOUR = datetime.timedelta(hours=1)
# Two years of hourly backups, on the hour: 17 520 of them.
FIRST = datetime.datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
LAST = datetime.datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
NOW = LAST + HOUR
DEFAULT_COUNTS = {
    "keep_last": 24,
    "keep_hourly": 48,
    "keep_daily": 14,
    "keep_weekly": 8,
    "keep_monthly": 12,
    "keep_yearly": 3,
}


def only(**counts) -> dict:
    """A RETENTION setting with every rule off but those given (left out, a rule would
    take its default)."""
    return {name: counts.get(name, 0) for name in DEFAULT_COUNTS}


def hourly_history(first=FIRST, last=LAST) -> list[Backup]:
    rows = []
    moment = first
    while moment <= last:
        rows.append(
            Backup(type=Backup.Type.SCHEDULED, status=Backup.Status.COMPLETE, created_at=moment)
        )
        moment += HOUR
    return Backup.objects.bulk_create(rows, batch_size=2000)


def extra(moment, backup_type=Backup.Type.MANUAL, status=Backup.Status.COMPLETE, **fields):
    return Backup.objects.create(type=backup_type, status=status, created_at=moment, **fields)


def at(moment) -> Backup:
    return Backup.objects.get(created_at=moment, type=Backup.Type.SCHEDULED)


# --- what the rules say, computed independently of failsafe.retention -------------------

BUCKET_KEYS = {
    "keep_hourly": lambda local: (local.year, local.month, local.day, local.hour),
    "keep_daily": lambda local: (local.year, local.month, local.day),
    "keep_weekly": lambda local: tuple(local.isocalendar())[:2],
    "keep_monthly": lambda local: (local.year, local.month),
    "keep_yearly": lambda local: (local.year,),
}


def expected_by_rules(backups, counts: dict, zone: str = "UTC") -> set:
    """The ids restic's rules keep: the newest `keep_last`; per bucket kind, the newest
    backup of each of the N latest buckets holding one, and the oldest backup when there
    are fewer than N such buckets. Only complete backups count."""
    tz = zoneinfo.ZoneInfo(zone)
    complete = sorted(
        (b for b in backups if b.status == Backup.Status.COMPLETE),
        key=lambda b: (b.created_at, str(b.pk)),
        reverse=True,
    )
    kept = {b.pk for b in complete[: counts["keep_last"]]}
    for name, key in BUCKET_KEYS.items():
        newest = {}
        for backup in complete:
            newest.setdefault(key(backup.created_at.astimezone(tz)), backup)
        latest = sorted(newest, reverse=True)[: counts[name]]
        kept |= {newest[bucket].pk for bucket in latest}
        if len(newest) < counts[name]:
            kept.add(complete[-1].pk)
    return kept


def plan_now(**kwargs) -> retention.Plan:
    return retention.plan(Backup.objects.all(), now=NOW, **kwargs)


def decision_of(plan: retention.Plan, backup: Backup) -> retention.Decision:
    return next(d for d in plan.decisions if d.backup.pk == backup.pk)


def kept_by(plan: retention.Plan, prefix: str) -> int:
    return sum(1 for d in plan.kept if any(r.startswith(prefix) for r in d.reasons))


# --- the plan --------------------------------------------------------------------------


def test_two_years_of_hourly_backups_keep_exactly_what_the_rules_say():
    backups = hourly_history()
    assert len(backups) == 17_520

    plan = plan_now()

    kept = {d.backup.pk for d in plan.kept}
    assert kept == expected_by_rules(backups, DEFAULT_COUNTS)
    # Counted by hand: the 48 newest hours (the 24 last among them), 12 more days (Dec
    # 18-29), 5 more weeks (W46-W50; W51-W53 end on a kept day), 11 more months (Jan-Nov
    # 2026), the newest of 2025 and, with one year to spare, the oldest backup.
    assert len(kept) == 48 + 12 + 5 + 11 + 2 == 78
    assert len(plan.forgotten) == 17_520 - 78
    assert [kept_by(plan, rule) for rule in ("last ", "hourly ", "daily ", "weekly ")] == [
        24,
        48,
        14,
        8,
    ]
    assert [kept_by(plan, rule) for rule in ("monthly ", "yearly ")] == [12, 3]
    assert decision_of(plan, at(LAST)).reasons == [
        "last 24",
        "hourly 2026-12-31 23h",
        "daily 2026-12-31",
        "weekly 2026-W53",
        "monthly 2026-12",
        "yearly 2026",
    ]
    assert decision_of(plan, at(LAST - 30 * HOUR)).reasons == ["hourly 2026-12-30 17h"]
    assert decision_of(plan, at(datetime.datetime(2026, 12, 6, 23, tzinfo=UTC))).reasons == [
        "weekly 2026-W49"
    ]
    assert decision_of(plan, at(datetime.datetime(2025, 12, 31, 23, tzinfo=UTC))).reasons == [
        "yearly 2025"
    ]
    assert decision_of(plan, at(FIRST)).reasons == ["yearly 2025 (oldest)"]
    forgotten = decision_of(plan, at(datetime.datetime(2026, 6, 15, 12, tzinfo=UTC)))
    assert (forgotten.keep, forgotten.reasons) == (False, ["no rule keeps it"])
    # Newest first, every backup once.
    assert [d.backup.created_at for d in plan.decisions[:2]] == [LAST, LAST - HOUR]
    assert len(plan.decisions) == 17_520


def test_protected_backups_are_never_forgotten_and_older_safe_ones_follow_the_rules(settings):
    hourly_history()
    safe_times = [
        FIRST,
        datetime.datetime(2025, 3, 10, 10, tzinfo=UTC),
        datetime.datetime(2025, 5, 10, 10, tzinfo=UTC),
        datetime.datetime(2025, 6, 10, 10, tzinfo=UTC),
        datetime.datetime(2025, 7, 10, 10, tzinfo=UTC),
    ]
    Backup.objects.filter(created_at__in=safe_times).update(is_safe=True)
    pinned = at(datetime.datetime(2025, 8, 10, 10, tzinfo=UTC))
    Backup.objects.filter(pk=pinned.pk).update(pinned=True)
    unreviewed = extra(datetime.datetime(2025, 9, 10, 10, 30, tzinfo=UTC), Backup.Type.EMERGENCY)
    reviewed = extra(
        datetime.datetime(2025, 9, 11, 10, 30, tzinfo=UTC),
        Backup.Type.EMERGENCY,
        reviewed_at=NOW - 100 * HOUR,
        reviewed_by_username="root",
    )
    young_pre_restore = extra(NOW - datetime.timedelta(days=10, hours=11), Backup.Type.PRE_RESTORE)
    old_pre_restore = extra(NOW - datetime.timedelta(days=40, hours=11), Backup.Type.PRE_RESTORE)
    running = extra(datetime.datetime(2025, 10, 10, 10, 30, tzinfo=UTC), status="RUNNING")
    old_failure = extra(datetime.datetime(2025, 10, 11, 10, 30, tzinfo=UTC), status="FAILED")
    new_failure = extra(LAST + datetime.timedelta(minutes=30), status="FAILED")

    plan = plan_now()

    everything = list(Backup.objects.all())
    protected = {
        at(safe_times[4]).pk,
        at(safe_times[3]).pk,
        at(safe_times[2]).pk,
        pinned.pk,
        unreviewed.pk,
        young_pre_restore.pk,
        running.pk,
        new_failure.pk,
    }
    assert {d.backup.pk for d in plan.kept} == expected_by_rules(everything, DEFAULT_COUNTS) | (
        protected
    )
    assert not protected & {d.backup.pk for d in plan.forgotten}
    reasons = {d.backup.pk: (d.keep, d.reasons) for d in plan.decisions}
    for moment in safe_times[2:]:
        assert reasons[at(moment).pk] == (True, ["safe (newest 3)"])
    # Safe, but older than the newest three: kept only if a rule keeps it.
    assert reasons[at(safe_times[1]).pk] == (False, ["no rule keeps it"])
    assert reasons[at(FIRST).pk] == (True, ["yearly 2025 (oldest)"])
    assert reasons[pinned.pk] == (True, ["pinned"])
    assert reasons[unreviewed.pk] == (True, ["emergency, not reviewed"])
    assert reasons[reviewed.pk] == (False, ["no rule keeps it"])
    assert reasons[young_pre_restore.pk] == (True, ["pre-restore younger than 30 days"])
    assert reasons[old_pre_restore.pk] == (False, ["no rule keeps it"])
    assert reasons[running.pk] == (True, ["running"])
    assert reasons[old_failure.pk] == (False, ["failed, a later backup completed"])
    assert reasons[new_failure.pk] == (True, ["failed, no backup completed since"])


def test_buckets_are_counted_in_the_servers_time_zone(settings):
    # 23:30 on 30 June and 00:30 on 1 July in Berlin; the same day in UTC.
    june = extra(datetime.datetime(2026, 6, 30, 21, 30, tzinfo=UTC))
    july = extra(datetime.datetime(2026, 6, 30, 22, 30, tzinfo=UTC))
    older = extra(datetime.datetime(2026, 6, 29, 12, 0, tzinfo=UTC))
    settings.FAILSAFE = {"RETENTION": only(keep_daily=2)}

    settings.TIME_ZONE = "Europe/Berlin"
    berlin = plan_now()
    assert [(d.backup.pk, d.keep, d.reasons) for d in berlin.decisions] == [
        (july.pk, True, ["daily 2026-07-01"]),
        (june.pk, True, ["daily 2026-06-30"]),
        (older.pk, False, ["no rule keeps it"]),
    ]
    assert berlin.policy.time_zone == "Europe/Berlin"

    settings.TIME_ZONE = "UTC"
    utc = plan_now()
    assert [(d.backup.pk, d.keep, d.reasons) for d in utc.decisions] == [
        (july.pk, True, ["daily 2026-06-30"]),
        (june.pk, False, ["no rule keeps it"]),
        (older.pk, True, ["daily 2026-06-29"]),
    ]


def test_a_short_history_keeps_the_oldest_backup_while_a_rule_has_buckets_to_spare(settings):
    backups = hourly_history(first=LAST - 71 * HOUR)  # three days, 72 backups
    settings.FAILSAFE = {"RETENTION": only(keep_daily=7)}

    plan = plan_now()

    assert [d.reasons for d in plan.kept] == [
        ["daily 2026-12-31"],
        ["daily 2026-12-30"],
        ["daily 2026-12-29"],
        ["daily 2026-12-29 (oldest)"],
    ]
    assert {d.backup.pk for d in plan.kept} == expected_by_rules(backups, only(keep_daily=7))


def test_minus_one_keeps_every_bucket_and_no_rule_at_all_keeps_everything(settings):
    hourly_history(first=LAST - 71 * HOUR)
    settings.FAILSAFE = {"RETENTION": only(keep_hourly=-1)}
    assert len(plan_now().kept) == 72
    assert plan_now().kept[0].reasons == ["hourly 2026-12-31 23h"]

    settings.FAILSAFE = {"RETENTION": only()}
    plan = plan_now()
    assert (len(plan.kept), len(plan.forgotten)) == (72, 0)
    assert plan.kept[-1].reasons == ["every retention rule is off"]


def test_the_newest_safe_backup_is_kept_even_when_keep_safe_says_none(settings):
    hourly_history(first=LAST - 9 * HOUR)
    oldest = at(LAST - 9 * HOUR)
    Backup.objects.filter(pk=oldest.pk).update(is_safe=True)
    settings.FAILSAFE = {"RETENTION": only(keep_last=1), "KEEP_SAFE": 0}

    plan = plan_now()

    assert decision_of(plan, oldest).reasons == ["safe (newest 1)"]
    assert len(plan.kept) == 2


def test_an_emergency_backup_marked_safe_counts_as_reviewed(settings):
    hourly_history(first=LAST - 9 * HOUR)
    newer_safe = [at(LAST - n * HOUR) for n in (1, 2, 3)]
    Backup.objects.filter(pk__in=[b.pk for b in newer_safe]).update(is_safe=True)
    emergency = extra(LAST - 8 * HOUR - HOUR / 2, Backup.Type.EMERGENCY, is_safe=True)
    settings.FAILSAFE = {"RETENTION": only(keep_last=1)}

    assert decision_of(plan_now(), emergency).keep is False


def test_keys_left_out_of_the_setting_take_their_defaults(settings):
    settings.FAILSAFE = {"RETENTION": {"keep_daily": 7}}
    policy = retention.Policy.configured()
    assert (policy.keep_daily, policy.keep_last, policy.keep_yearly) == (7, 24, 3)
    assert policy.describe().startswith(
        "keep 24 last, 48 hourly, 7 daily, 8 weekly, 12 monthly, 3 yearly backups (buckets in "
    )


@pytest.mark.parametrize(
    ("failsafe", "message"),
    [
        ({"RETENTION": {"keep_dayly": 7}}, "unknown keys keep_dayly"),
        ({"RETENTION": {"keep_daily": "7"}}, "keep_daily must be a whole number"),
        ({"RETENTION": {"keep_daily": -2}}, "keep_daily must be a whole number"),
        ({"RETENTION": {"keep_daily": True}}, "keep_daily must be a whole number"),
        ({"RETENTION": [("keep_daily", 7)]}, "must be a dict"),
        ({"KEEP_SAFE": 2.5}, "KEEP_SAFE must be a whole number"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(settings, failsafe, message):
    settings.FAILSAFE = failsafe
    with pytest.raises(InvalidRetentionPolicy, match=message):
        retention.Policy.configured()


# --- pruning for real ------------------------------------------------------------------


@pytest.fixture
def three_backups(actor, population, settings):
    """Three real backups, every user changed between each (so the users' chunk is written
    whole, not as a delta over the one before), so each holds chunks of its own; the first
    is safe. Moved back in time so that only the newest is the "last 1"."""
    first = services.create_backup(actor=actor)
    Backup.objects.filter(pk=first.pk).update(is_safe=True)
    User.objects.update(last_name="Second")
    second = services.create_backup(actor=actor)
    User.objects.update(last_name="Third")
    third = services.create_backup(actor=actor)
    for days, backup in ((30, first), (20, second), (10, third)):
        Backup.objects.filter(pk=backup.pk).update(
            created_at=backup.created_at - datetime.timedelta(days=days)
        )
    settings.FAILSAFE = {"RETENTION": only(keep_last=1), "GC_GRACE_SECONDS": 0}
    return [Backup.objects.get(pk=b.pk) for b in (first, second, third)]


def storage_state(settings) -> tuple:
    files = sorted(path.name for path in backup_dir(settings).rglob("*") if path.is_file())
    rows = sorted((str(b.pk), b.pinned, b.reviewed_at) for b in Backup.objects.all())
    return files, rows


def last_event(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-seq").first()


def test_the_system_prunes_rows_then_chunks_and_the_kept_backups_still_verify(
    actor, three_backups, settings
):
    first, second, third = three_backups
    own_chunks = chunks_of(second) - chunks_of(first) - chunks_of(third)
    assert own_chunks <= set(stored_chunks(settings))
    assert own_chunks
    manifest = backup_dir(settings) / second.archive_name

    result = services.prune(actor=services.Actor.system())

    assert not Backup.objects.filter(pk=second.pk).exists()
    assert not manifest.exists()
    assert not own_chunks & set(stored_chunks(settings))
    assert set(stored_chunks(settings)) == chunks_of(first) | chunks_of(third)
    assert [r.ok for r in services.verify(actor=actor, all_backups=True)] == [True, True]
    assert (result.forgotten, result.kept, result.skipped) == (1, 2, 0)
    assert result.garbage.deleted == len(own_chunks)
    assert result.summary == (
        f"Retention: 2 backups kept, 1 forgotten; {len(own_chunks)} unused chunks deleted "
        f"({result.garbage.bytes_freed} bytes freed)"
    )
    reasons = {d.backup.pk: d.reasons for d in result.plan.decisions}
    assert reasons == {
        third.pk: ["last 1"],
        second.pk: ["no rule keeps it"],
        first.pk: ["safe (newest 3)"],
    }
    event = last_event("failsafe.prune")
    assert (event.outcome, event.actor_username, event.source) == ("SUCCESS", "system", "system")
    assert event.details["kept"] == 2
    assert event.details["forgotten"] == 1
    assert event.details["forgotten_by_type"] == {"MANUAL": 1}
    assert event.details["chunks_deleted"] == len(own_chunks)
    assert event.details["dry_run"] is False
    # Counts, never the backups' ids.
    assert str(second.pk) not in str(event.details)


def test_a_person_prunes_with_the_failsafe_password(actor, armed, three_backups):
    _, second, _ = three_backups

    result = services.prune(actor=actor, password=FAILSAFE_PASSWORD)

    assert result.forgotten == 1
    assert not Backup.objects.filter(pk=second.pk).exists()
    event = last_event("failsafe.prune")
    assert (event.outcome, event.actor_username) == ("SUCCESS", "root")


def test_a_dry_run_changes_nothing_and_needs_no_password(actor, three_backups, settings):
    before = storage_state(settings)

    result = services.prune(actor=actor, dry_run=True)

    assert storage_state(settings) == before
    assert result.dry_run and result.garbage is None
    assert (result.kept, result.to_forget, result.forgotten) == (2, 1, 0)
    assert result.summary == "Dry run, nothing was changed: 2 backups would be kept, 1 forgotten"
    event = last_event("failsafe.prune")
    assert (event.outcome, event.details["dry_run"], event.details["forgotten"]) == (
        "SUCCESS",
        True,
        1,
    )


@pytest.mark.parametrize("password", [None, "", "not the password"])
def test_a_person_without_the_right_password_changes_nothing(
    actor, armed, three_backups, settings, password
):
    before = storage_state(settings)

    with pytest.raises(InvalidFailsafePassword):
        services.prune(actor=actor, password=password)

    assert storage_state(settings) == before
    assert last_event("failsafe.prune").outcome == "DENIED"


def test_a_person_cannot_prune_before_the_failsafe_password_is_set(actor, three_backups, settings):
    before = storage_state(settings)
    with pytest.raises(FailsafePasswordNotSet):
        services.prune(actor=actor, password="anything at all")
    assert storage_state(settings) == before


def test_only_a_superadmin_or_the_system_prunes(three_backups, settings):
    before = storage_state(settings)
    staff = services.Actor(user=AdminFactory(username="staff"))
    with pytest.raises(NotSuperAdmin):
        services.prune(actor=staff, dry_run=True)
    with pytest.raises(NotSuperAdmin):
        services.prune(actor=services.Actor(user=None), dry_run=False)
    assert storage_state(settings) == before


def test_pruning_waits_for_a_running_backup(three_backups, settings):
    before = storage_state(settings)
    with (
        oplock.operation_lock(holder="scheduled backup by system"),
        pytest.raises(OperationInProgress, match="scheduled backup by system"),
    ):
        services.prune(actor=services.Actor.system())
    assert storage_state(settings) == before


def test_a_backup_pinned_after_planning_is_not_forgotten(actor, three_backups):
    _, second, _ = three_backups
    plan = retention.plan(Backup.objects.all())
    services.pin(actor=actor, backup_id=second.pk)
    result = services.PruneResult(plan=plan, dry_run=False)

    retention_service._forget(result, details={})

    assert Backup.objects.filter(pk=second.pk).exists()
    assert (result.forgotten, result.skipped) == (0, 1)
    assert decision_of(plan, second).reasons == ["changed while pruning (pinned)"]
    assert decision_of(plan, second).keep


def test_a_failed_collection_leaves_the_forgetting_done_and_says_why(
    actor, three_backups, settings
):
    first, second, third = three_backups
    manifest = backup_dir(settings) / third.archive_name
    manifest.write_bytes(manifest.read_bytes()[:-20])  # unreadable: collecting is refused

    result = services.prune(actor=services.Actor.system())

    assert result.forgotten == 1 and result.garbage is None
    assert "nothing was deleted" in result.garbage_error
    assert "chunks not collected: " in result.summary
    assert last_event("failsafe.prune").details["garbage_error"] == result.garbage_error


# --- pin, unpin, acknowledge -------------------------------------------------------------


def test_pinning_needs_no_password_but_unpinning_does(actor, armed, three_backups):
    _, second, _ = three_backups

    assert services.pin(actor=actor, backup_id=second.pk).pinned
    assert (last_event("failsafe.pin").outcome, last_event("failsafe.pin").details["changed"]) == (
        "SUCCESS",
        True,
    )
    assert decision_of(retention.plan(Backup.objects.all()), second).reasons == ["pinned"]

    for wrong in (None, "guess"):
        with pytest.raises(InvalidFailsafePassword):
            services.pin(actor=actor, backup_id=second.pk, pinned=False, password=wrong)
        second.refresh_from_db()
        assert second.pinned
    assert last_event("failsafe.unpin").outcome == "DENIED"

    unpinned = services.pin(
        actor=actor, backup_id=second.pk, pinned=False, password=FAILSAFE_PASSWORD
    )
    assert not unpinned.pinned
    assert last_event("failsafe.unpin").outcome == "SUCCESS"


def test_acknowledging_an_emergency_backup_lets_retention_forget_it(actor, armed, settings):
    hourly_history(first=LAST - 9 * HOUR)
    emergency = extra(LAST - 5 * HOUR - HOUR / 2, Backup.Type.EMERGENCY)
    settings.FAILSAFE = {"RETENTION": only(keep_last=1)}
    assert decision_of(plan_now(), emergency).reasons == ["emergency, not reviewed"]

    with pytest.raises(InvalidFailsafePassword):
        services.acknowledge(actor=actor, backup_id=emergency.pk, password="guess")
    emergency.refresh_from_db()
    assert emergency.reviewed_at is None

    acknowledged = services.acknowledge(
        actor=actor, backup_id=emergency.pk, password=FAILSAFE_PASSWORD
    )
    assert acknowledged.reviewed_at is not None
    assert acknowledged.reviewed_by_username == "root"
    assert decision_of(plan_now(), emergency).keep is False
    first_review = acknowledged.reviewed_at

    again = services.acknowledge(actor=actor, backup_id=emergency.pk, password=FAILSAFE_PASSWORD)
    assert again.reviewed_at == first_review
    assert last_event("failsafe.acknowledge").details["already_reviewed"] is True


def test_only_emergency_backups_are_acknowledged(actor, armed):
    manual = extra(NOW - HOUR)
    with pytest.raises(FailsafeError, match="is a manual backup: only emergency backups"):
        services.acknowledge(actor=actor, backup_id=manual.pk, password=FAILSAFE_PASSWORD)
    manual.refresh_from_db()
    assert manual.reviewed_at is None
    assert last_event("failsafe.acknowledge").outcome == "FAILED"


def test_pin_and_acknowledge_are_for_superadmins_only(armed):
    emergency = extra(NOW - HOUR, Backup.Type.EMERGENCY)
    staff = services.Actor(user=AdminFactory(username="staff"))
    with pytest.raises(PermissionDenied):
        services.pin(actor=staff, backup_id=emergency.pk)
    with pytest.raises(PermissionDenied):
        services.acknowledge(actor=staff, backup_id=emergency.pk, password=FAILSAFE_PASSWORD)
    with pytest.raises(PermissionDenied):
        services.pin(actor=services.Actor.system(), backup_id=emergency.pk)
    emergency.refresh_from_db()
    assert (emergency.pinned, emergency.reviewed_at) == (False, None)


def test_storage_has_what_the_kept_backups_need_after_a_real_prune(actor, three_backups):
    """The store agrees with the rows: every kept backup's manifest is there."""
    services.prune(actor=services.Actor.system())
    store = get_store()
    for backup in Backup.objects.all():
        assert store.exists(backup.archive_name)


@pytest.fixture
def nas(settings, file_replica_url):
    """A replica on a second directory, configured before any backup is taken."""
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    return Path(file_replica_url.removeprefix("file://"))


def test_pruning_deletes_the_forgotten_manifest_and_chunks_on_each_replica(
    nas, actor, three_backups
):
    first, second, third = three_backups
    own_chunks = chunks_of(second) - chunks_of(first) - chunks_of(third)
    on_nas = {path.name for path in (nas / "chunks").rglob("*") if path.is_file()}
    assert own_chunks <= on_nas
    assert (nas / second.archive_name).exists()

    result = services.prune(actor=services.Actor.system())

    assert not (nas / second.archive_name).exists()
    assert (nas / first.archive_name).exists() and (nas / third.archive_name).exists()
    after = {path.name for path in (nas / "chunks").rglob("*") if path.is_file()}
    assert after == on_nas - own_chunks
    assert [(entry.name, entry.deleted, entry.error) for entry in result.replicas] == [
        ("nas", 1, "")
    ]
    assert result.garbage.replicas[0].deleted == len(own_chunks)
    lines = [line for line, _ in text.prune(result)]
    assert "Replica nas: 1 manifests of forgotten backups deleted" in lines
    assert last_event("failsafe.prune").details["replicas"] == [
        {"replica": "nas", "deleted": 1, "kept_locked": 0, "error": ""}
    ]


def test_the_daily_task_prunes_as_the_system_and_returns_the_summary(three_backups):
    from failsafe import tasks

    summary = tasks.retention()

    assert summary.startswith("Retention: 2 backups kept, 1 forgotten; ")
    assert Backup.objects.count() == 2
