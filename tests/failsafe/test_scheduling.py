"""What the failsafe does by itself: the scheduled backup, replication catch-up, and
failsafe_run_due running what is due once (cron's stand-in for the Celery worker), and the
default schedules raos_bootstrap creates."""

import datetime
import json
import os
import random
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from failsafe import oplock, schedules, services, tasks
from failsafe.exceptions import NotSuperAdmin, OperationInProgress
from failsafe.models import AuditEvent, Backup, BackupReplica
from failsafe.services import scheduling
from failsafe.terminal import run_command
from tests.factories import AdminFactory
from tests.helpers import run

pytestmark = pytest.mark.django_db

SYSTEM = services.Actor.system()
BACKUP = "failsafe: scheduled backup"
REPLICATION = "failsafe: replication"


def _every(seconds: int) -> IntervalSchedule:
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=seconds, period=IntervalSchedule.SECONDS
    )
    return interval


def _only(**every_seconds) -> None:
    """The default schedules, with only those named on (by name: interval in seconds)."""
    schedules.ensure_defaults()
    for task in PeriodicTask.objects.all():
        seconds = every_seconds.get(task.name)
        task.enabled = seconds is not None
        if seconds is not None:
            task.interval = _every(seconds)
        task.save()


def _row(name: str) -> PeriodicTask:
    return PeriodicTask.objects.get(name=name)


# --- the scheduled backup and the catch-up ----------------------------------------------


def test_a_scheduled_backup_is_taken_and_audited_as_the_system(population):
    backup = services.scheduled_backup(actor=SYSTEM)
    assert (backup.type, backup.status, backup.created_by_username) == (
        "SCHEDULED",
        "COMPLETE",
        "system",
    )
    event = AuditEvent.objects.get(action="failsafe.backup")
    assert (event.actor_username, event.source, event.outcome) == ("system", "system", "SUCCESS")
    assert event.details["backup_id"] == str(backup.id)


def test_a_staff_admin_can_neither_back_up_nor_run_the_schedules():
    staff = services.Actor(user=AdminFactory(username="staffer"))
    with pytest.raises(NotSuperAdmin, match="^SuperAdmin only$"):
        services.scheduled_backup(actor=staff)
    _only(**{BACKUP: 3600})
    with pytest.raises(NotSuperAdmin):
        services.run_due(actor=staff)
    assert not Backup.objects.exists()
    assert _row(BACKUP).total_run_count == 0
    assert set(
        AuditEvent.objects.filter(actor_username="staffer").values_list("action", "outcome")
    ) == {("failsafe.backup", "DENIED"), ("failsafe.run_due", "DENIED")}


def test_catch_up_copies_what_a_replica_lacks_and_reads_a_sample_back(
    superadmin, population, settings, file_replica_url
):
    older = [services.scheduled_backup(actor=SYSTEM) for _ in range(2)]
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]

    result = services.replication_catch_up(actor=SYSTEM)

    assert result.ok, result.summary
    assert {row.backup_id for row in result.replication.replicated} == {b.id for b in older}
    sample = result.samples[0]
    assert (sample.replica, sample.backups, sample.damaged) == ("nas", 2, [])
    assert sample.chunks > 0
    assert result.summary == (
        f"2 of 2 backup copies replicated; {sample.chunks} sampled chunks read back intact"
    )
    event = AuditEvent.objects.filter(action="failsafe.replicate").get()
    assert (event.actor_username, event.target, event.outcome) == ("system", "catch-up", "SUCCESS")
    assert event.details["sampled_chunks"] == sample.chunks


def test_a_damaged_chunk_on_a_replica_is_found_by_the_sample_and_replaced_next_time(
    superadmin, population, settings, file_replica_url
):
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    backup = services.scheduled_backup(actor=SYSTEM)  # copied to the replica as it is taken
    replica = Path(file_replica_url.removeprefix("file://"))
    chunk_files = sorted(path for path in (replica / "chunks").rglob("*") if path.is_file())
    # Fewer chunks than the sample: every one is read back, the damaged one included.
    assert len(chunk_files) <= scheduling.SAMPLE_CHUNKS
    damaged = chunk_files[0]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")

    found = services.replication_catch_up(actor=SYSTEM, rng=random.Random(7))

    assert not found.ok
    [(replica_name, backup_id, why)] = found.damaged
    assert (replica_name, backup_id) == ("nas", str(backup.id))
    assert damaged.name in why
    row = BackupReplica.objects.get(backup=backup, replica="nas")
    assert row.status == BackupReplica.Status.FAILED
    assert row.error.startswith("A sample of the replica's copy failed verification: ")
    assert "1 copies found damaged, replaced at the next catch-up" in found.summary

    repaired = services.replication_catch_up(actor=SYSTEM, rng=random.Random(7))

    assert repaired.ok, repaired.summary
    assert BackupReplica.objects.get(pk=row.pk).status == BackupReplica.Status.REPLICATED
    assert "1 of 1 backup copies replicated" in repaired.summary
    assert repaired.damaged == [] and repaired.samples[0].chunks == len(chunk_files)
    assert "OK" in run("failsafe_verify", "--replica", "nas")


def test_a_replica_that_is_gone_is_one_line_and_nothing_is_read_back(
    superadmin, population, settings, tmp_path
):
    services.scheduled_backup(actor=SYSTEM)
    settings.FAILSAFE_REPLICAS = [f"nas=file://{tmp_path / 'unmounted'}"]
    result = services.replication_catch_up(actor=SYSTEM)
    assert not result.ok
    assert result.samples == []
    [(name, why)] = result.problems
    assert name == "nas" and "unmounted" in why
    assert f"replica nas failed: {why}" in result.summary


# --- which schedules are due ------------------------------------------------------------


def test_never_run_is_due_then_waits_its_interval_as_beat_would():
    _only(**{BACKUP: 3600})
    row = _row(BACKUP)
    start = timezone.now()
    assert schedules.due_state(row, now=start).due
    schedules.record_run(row, now=start)
    row.refresh_from_db()
    assert (row.last_run_at, row.total_run_count) == (start, 1)
    later = schedules.due_state(row, now=start + datetime.timedelta(minutes=59))
    assert (later.due, later.next_at) == (False, start + datetime.timedelta(hours=1))
    assert schedules.due_state(row, now=start + datetime.timedelta(minutes=61)).due


def test_a_crontab_schedule_is_due_on_its_minute():
    _only(**{BACKUP: 3600})
    row = _row(BACKUP)
    row.interval = None
    row.crontab, _ = CrontabSchedule.objects.get_or_create(minute="0", hour="*/6")
    row.last_run_at = datetime.datetime(2025, 3, 1, 6, 0, 5, tzinfo=datetime.UTC)
    row.save()
    quarter_past = datetime.datetime(2025, 3, 1, 6, 15, tzinfo=datetime.UTC)
    waiting = schedules.due_state(row, now=quarter_past)
    assert not waiting.due
    assert waiting.next_at == datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.UTC)
    noon = datetime.datetime(2025, 3, 1, 12, 0, 30, tzinfo=datetime.UTC)
    assert schedules.due_state(row, now=noon).due


def test_off_expired_not_yet_started_and_spent_one_off_rows_are_not_due():
    _only(**{BACKUP: 60})
    row = _row(BACKUP)
    now = timezone.now()
    row.enabled = False
    assert schedules.due_state(row, now=now).why == "off"
    row.enabled = True
    row.start_time = now + datetime.timedelta(hours=2)
    starting = schedules.due_state(row, now=now)
    assert (starting.due, starting.next_at) == (False, row.start_time)
    row.start_time = None
    row.expires = now - datetime.timedelta(seconds=1)
    assert schedules.due_state(row, now=now).why == "expired"
    row.expires = None
    row.one_off, row.total_run_count = True, 1
    assert schedules.due_state(row, now=now).why == "ran once"


# --- failsafe_run_due ---------------------------------------------------------------------


def test_run_due_runs_exactly_what_is_due_once_and_not_again(population):
    _only(**{BACKUP: 3600, REPLICATION: 86400})
    start = timezone.now()

    first = services.run_due(actor=SYSTEM, now=start)

    assert [outcome.name for outcome in first.outcomes] == [REPLICATION, BACKUP]
    assert first.ok and first.checked == 2
    assert first.summary == "2 due schedules ran"
    backup = Backup.objects.get()
    assert (backup.type, backup.created_by_username) == ("SCHEDULED", "system")
    assert first.outcomes[1].message == str(backup)
    assert first.outcomes[0].message.startswith("No replicas are configured")
    for name in (BACKUP, REPLICATION):
        assert (_row(name).last_run_at, _row(name).total_run_count) == (start, 1)
    # The schedules left off never ran.
    assert not PeriodicTask.objects.filter(enabled=False, total_run_count__gt=0).exists()

    # Again at once (a second cron), then a minute later: nothing is due.
    for moment in (start, start + datetime.timedelta(minutes=1)):
        again = services.run_due(actor=SYSTEM, now=moment)
        assert (again.outcomes, again.summary) == ([], "Nothing was due (2 schedules checked)")
    assert Backup.objects.count() == 1
    # A run that found nothing due left nothing in the audit trail.
    assert AuditEvent.objects.filter(action="failsafe.run_due").count() == 1

    # An hour later the backup is due again, the daily replication is not.
    hour_later = services.run_due(actor=SYSTEM, now=start + datetime.timedelta(minutes=61))
    assert [outcome.name for outcome in hour_later.outcomes] == [BACKUP]
    assert Backup.objects.count() == 2
    assert _row(BACKUP).total_run_count == 2 and _row(REPLICATION).total_run_count == 1


def test_a_failing_task_is_reported_and_the_others_still_run(population, settings):
    _only(**{BACKUP: 3600, REPLICATION: 3600})
    unknown = PeriodicTask.objects.create(
        name="failsafe: typo", task="failsafe.no_such_task", interval=_every(60)
    )
    os.unlink(settings.FAILSAFE_KEYSET_FILE)  # the backup cannot be encrypted now

    result = services.run_due(actor=SYSTEM)

    outcomes = {outcome.name: outcome for outcome in result.outcomes}
    assert set(outcomes) == {BACKUP, REPLICATION, unknown.name}
    assert not outcomes[BACKUP].ok
    assert outcomes[BACKUP].message.startswith("No failsafe keyset: ")
    assert outcomes[unknown.name].message == (
        "Unknown task 'failsafe.no_such_task': fix or delete this schedule"
    )
    assert outcomes[REPLICATION].ok
    assert result.summary == "3 due schedules ran; 2 failed"
    # A failed run counts as run, as beat counts it: it is tried again at its next time.
    assert _row(BACKUP).total_run_count == 1
    event = AuditEvent.objects.get(action="failsafe.run_due")
    assert event.actor_username == "system" and len(event.details["failed"]) == 2


def test_run_due_is_refused_while_another_run_holds_its_lock(population):
    _only(**{BACKUP: 3600})
    with (
        oplock.operation_lock(holder="due schedules run by cron", name="run_due"),
        pytest.raises(OperationInProgress, match="due schedules run by cron"),
    ):
        services.run_due(actor=SYSTEM)
    assert _row(BACKUP).total_run_count == 0 and not Backup.objects.exists()
    # The backups' own lock is another row: a run due beside it takes it in turn.
    assert services.run_due(actor=SYSTEM).ok
    assert Backup.objects.count() == 1


def test_the_command_runs_what_is_due_and_exits_non_zero_when_a_task_failed(
    population, settings
):
    _only(**{BACKUP: 3600, REPLICATION: 3600})
    printed = run("failsafe_run_due")
    lines = printed.strip().splitlines()
    assert lines[0].startswith(f"ok  {REPLICATION}: No replicas are configured")
    assert lines[1].startswith(f"ok  {BACKUP}: Scheduled backup ")
    assert lines[-1] == "2 due schedules ran"

    payload = json.loads(run("failsafe_run_due", "--json"))
    assert payload == {
        "Success": True,
        "Message": "Nothing was due (2 schedules checked)",
        "Checked": 2,
        "Ran": [],
    }

    PeriodicTask.objects.filter(name=BACKUP).update(last_run_at=None)
    os.unlink(settings.FAILSAFE_KEYSET_FILE)
    out = StringIO()
    with pytest.raises(CommandError, match=f"^1 of 1 due schedules failed: {BACKUP}: "):
        call_command("failsafe_run_due", "--json", stdout=out)
    failed = json.loads(out.getvalue())
    assert failed["Success"] is False
    assert [(ran["Name"], ran["Success"]) for ran in failed["Ran"]] == [(BACKUP, False)]


def test_the_command_lists_the_schedules_and_what_is_due(superadmin, population):
    _only(**{BACKUP: 3600})
    run("failsafe_run_due")
    listed = run("failsafe_run_due", "--list")
    rows = {line.split("  ")[0]: line for line in listed.splitlines()[2:]}
    assert set(rows) == {default.name for default in schedules.DEFAULTS}
    next_hour = _row(BACKUP).last_run_at + datetime.timedelta(hours=1)
    assert rows[BACKUP].endswith(f"  next {next_hour:%Y-%m-%dT%H:%M:%S}Z")
    assert rows[REPLICATION].endswith("off")
    payload = json.loads(run("failsafe_run_due", "--list", "--json"))
    backup = next(entry for entry in payload["Schedules"] if entry["Name"] == BACKUP)
    assert (backup["Task"], backup["Enabled"], backup["Due"], backup["TotalRunCount"]) == (
        "failsafe.scheduled_backup",
        True,
        False,
        1,
    )
    assert backup["Schedule"] == "every 3600 seconds"
    assert "failsafe_run_due [--list]" in run("failsafe_help")


def test_the_command_needs_no_superadmin_and_acts_as_the_system(db, keyset):
    """Cron runs it on a site whose SuperAdmins may all be away: the system acts."""
    _only(**{BACKUP: 3600})
    run("failsafe_run_due")
    assert Backup.objects.get().created_by_username == "system"


def test_every_task_beat_can_send_is_one_failsafe_run_due_can_run():
    assert set(tasks.TASKS) == set(scheduling.OPERATIONS)
    assert {default.task for default in schedules.DEFAULTS} == set(scheduling.OPERATIONS)
    for service_name in scheduling.OPERATIONS.values():
        assert callable(getattr(services, service_name)), service_name


# --- raos_bootstrap's default schedules ---------------------------------------------------


def _bootstrap() -> dict:
    out = StringIO()
    call_command("raos_bootstrap", "--superadmin", "root", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_bootstrap_creates_the_default_schedules_once_and_keeps_edits(monkeypatch):
    monkeypatch.delenv("RAOS_SUPERADMIN_PASSWORD", raising=False)
    names = [default.name for default in schedules.DEFAULTS]
    assert _bootstrap()["SchedulesCreated"] == names
    backup = _row(BACKUP)
    assert (backup.task, backup.enabled, backup.interval.every) == (
        "failsafe.scheduled_backup",
        True,
        3600,
    )
    created = AuditEvent.objects.get(action="failsafe.schedules.defaults")
    assert created.actor_username == "system" and created.details["created"] == names

    # An operator makes backups every 15 minutes, turns drills off, deletes retention.
    backup.interval = _every(900)
    backup.save()
    PeriodicTask.objects.filter(name="failsafe: restore drill").update(enabled=False)
    PeriodicTask.objects.filter(name="failsafe: retention").delete()

    again = _bootstrap()

    assert again["SchedulesCreated"] == ["failsafe: retention"]
    assert _row(BACKUP).interval.every == 900
    assert _row("failsafe: restore drill").enabled is False
    assert PeriodicTask.objects.count() == len(names)
    assert _bootstrap()["SchedulesCreated"] == []


def test_bootstrap_says_which_schedules_it_created(monkeypatch):
    monkeypatch.delenv("RAOS_SUPERADMIN_PASSWORD", raising=False)
    first = StringIO()
    call_command("raos_bootstrap", "--superadmin", "root", stdout=first)
    assert (
        "Failsafe schedules created (change or turn them off in the admin, under Periodic "
        "tasks): failsafe: scheduled backup, failsafe: drift watch"
    ) in first.getvalue()
    second = StringIO()
    call_command("raos_bootstrap", "--superadmin", "root", stdout=second)
    assert "Failsafe schedules already exist; left as they are." in second.getvalue()


# --- the terminal's `failsafe backup` -----------------------------------------------------


def test_failsafe_backup_in_the_terminal_takes_a_manual_backup_with_its_reason(
    actor, population
):
    reply = run_command("failsafe backup before the upgrade", actor=actor)
    assert reply.ok, reply.message
    backup = Backup.objects.get()
    assert reply.payload == {
        "Success": True,
        "Message": "Backup created",
        "BackupId": str(backup.id),
        "Timestamp": reply.payload["Timestamp"],
        "State": backup.state,
    }
    assert (backup.type, backup.reason, backup.created_by_username) == (
        "MANUAL",
        "before the upgrade",
        "root",
    )
    assert AuditEvent.objects.get(action="failsafe.backup").outcome == "SUCCESS"
    bare = run_command("failsafe backup", actor=actor)
    assert bare.ok and Backup.objects.get(pk=bare.payload["BackupId"]).reason == ""


def test_failsafe_backup_in_the_terminal_is_refused_to_a_staff_admin(population):
    staff = services.Actor(user=AdminFactory())
    reply = run_command("failsafe backup now", actor=staff)
    assert not reply.ok
    assert (reply.kind, reply.message) == ("denied", "SuperAdmin only")
    assert reply.payload["Success"] is False
    assert not Backup.objects.exists()
