"""manage.py failsafe_prune: the plan as restic prints it, the JSON, and pin/unpin/acknowledge."""

import datetime
import json

import pytest
from django.core.management import CommandError

from failsafe import services
from failsafe.models import AuditEvent, Backup
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run

from .test_gc import chunks_of, stored_chunks
from .test_retention import HOUR, LAST, extra, hourly_history, only

pytestmark = pytest.mark.django_db

DECISION_KEYS = {
    "BackupId",
    "CreatedAtUtc",
    "Type",
    "Status",
    "IsSafe",
    "Pinned",
    "ReviewedAtUtc",
    "Decision",
    "Reasons",
}


@pytest.fixture
def history(settings, superadmin):
    """Ten hourly backups; the policy keeps the newest three, and a pinned one."""
    hourly_history(first=LAST - 9 * HOUR)
    pinned = Backup.objects.get(created_at=LAST - 8 * HOUR)
    Backup.objects.filter(pk=pinned.pk).update(pinned=True)
    settings.FAILSAFE = {"RETENTION": only(keep_last=3), "GC_GRACE_SECONDS": 0}
    return Backup.objects.order_by("-created_at")


def test_a_dry_run_lists_every_backup_with_the_rule_that_decided_it(history):
    before = set(Backup.objects.values_list("pk", flat=True))

    output = run("failsafe_prune", "--dry-run")

    assert output.startswith(
        "Applying policy: keep 3 last backups (buckets in UTC); always kept: the newest 3 safe "
        "backups, pinned, running and unreviewed emergency ones, and pre-restore backups "
        "younger than 30 days\n"
    )
    assert "\nkeep 4 backups:\n" in output
    assert "\nwould forget 6 backups:\n" in output
    lines = output.splitlines()
    header = lines.index("keep 4 backups:") + 1
    assert lines[header].split() == ["ID", "Created", "(UTC)", "Type", "Status", "Reasons"]
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    newest = history[0]
    assert f"{newest.id}  2026-12-31 23:00:00  SCHEDULED  COMPLETE  last 3" in output
    pinned = history.get(pinned=True)
    assert f"{pinned.id}  2026-12-31 15:00:00  SCHEDULED  COMPLETE  pinned" in output
    assert output.count("no rule keeps it") == 6
    assert output.rstrip().endswith(
        "Dry run, nothing was changed: 4 backups would be kept, 6 forgotten"
    )
    assert set(Backup.objects.values_list("pk", flat=True)) == before


def test_the_json_is_the_seeds_pascal_case(history):
    answer = json.loads(run("failsafe_prune", "--dry-run", "--json"))

    assert set(answer) == {
        "Success",
        "Message",
        "DryRun",
        "Policy",
        "Keep",
        "Forget",
        "Forgotten",
        "Skipped",
        "Backups",
        "Garbage",
        "GarbageError",
        "Replicas",
    }
    assert (answer["Success"], answer["DryRun"], answer["Keep"], answer["Forget"]) == (
        True,
        True,
        4,
        6,
    )
    assert (answer["Forgotten"], answer["Garbage"], answer["GarbageError"]) == (0, None, None)
    assert answer["Policy"] == {
        "KeepLast": 3,
        "KeepHourly": 0,
        "KeepDaily": 0,
        "KeepWeekly": 0,
        "KeepMonthly": 0,
        "KeepYearly": 0,
        "KeepSafe": 3,
        "KeepPreRestoreDays": 30,
        "TimeZone": "UTC",
        "Description": answer["Policy"]["Description"],
    }
    assert len(answer["Backups"]) == 10
    assert all(set(entry) == DECISION_KEYS for entry in answer["Backups"])
    newest = answer["Backups"][0]
    assert newest["CreatedAtUtc"] == "2026-12-31T23:00:00Z"
    assert (newest["Decision"], newest["Reasons"]) == ("keep", ["last 3"])
    assert [entry["Decision"] for entry in answer["Backups"]].count("forget") == 6


def test_pruning_for_real_reads_the_password_from_stdin_and_collects(
    actor, armed, population, settings
):
    first = services.create_backup(actor=actor)
    # Every user changed: the users' chunk is written whole again, not as a delta over
    # the first backup's, so the first backup has a chunk of its own.
    alice = population[0][0]
    type(alice).objects.update(last_name="Changed")
    second = services.create_backup(actor=actor)
    Backup.objects.filter(pk=first.pk).update(created_at=first.created_at - 2 * HOUR)
    only_first = chunks_of(first) - chunks_of(second)
    assert only_first
    settings.FAILSAFE = {"RETENTION": only(keep_last=1), "GC_GRACE_SECONDS": 0}

    output = run("failsafe_prune", "--password-stdin", stdin=FAILSAFE_PASSWORD + "\n")

    assert "\nforget 1 backups:\n" in output
    assert (
        f"Retention: 1 backups kept, 1 forgotten; {len(only_first)} unused chunks deleted" in output
    )
    assert list(Backup.objects.values_list("pk", flat=True)) == [second.pk]
    assert set(stored_chunks(settings)) == chunks_of(second)


def test_pruning_for_real_needs_the_password_and_never_from_argv(history, armed):
    before = Backup.objects.count()
    with pytest.raises(CommandError, match="no terminal to ask on"):
        run("failsafe_prune")
    with pytest.raises(CommandError, match="Invalid failsafe password"):
        run("failsafe_prune", "--password-stdin", stdin="guess\n")
    with pytest.raises(CommandError):
        run("failsafe_prune", "--password", FAILSAFE_PASSWORD)
    assert Backup.objects.count() == before


def test_pin_unpin_and_acknowledge(history, armed):
    target = history[5]
    emergency = extra(LAST - HOUR / 2, Backup.Type.EMERGENCY)

    assert run("failsafe_prune", "--pin", str(target.id)).startswith(
        "Backup pinned: retention never forgets it"
    )
    target.refresh_from_db()
    assert target.pinned

    with pytest.raises(CommandError, match="Invalid failsafe password"):
        run("failsafe_prune", "--unpin", str(target.id), "--password-stdin", stdin="guess\n")
    target.refresh_from_db()
    assert target.pinned
    answer = json.loads(
        run(
            "failsafe_prune",
            "--unpin",
            str(target.id)[:8],
            "--password-stdin",
            "--json",
            stdin=FAILSAFE_PASSWORD + "\n",
        )
    )
    assert answer == {
        "Success": True,
        "Message": "Backup unpinned: retention keeps it only while a rule does",
        "BackupId": str(target.id),
        "Pinned": False,
    }

    output = run(
        "failsafe_prune",
        "--acknowledge",
        str(emergency.id),
        "--password-stdin",
        stdin=FAILSAFE_PASSWORD + "\n",
    )
    assert output.startswith(f"Emergency backup {emergency.id} acknowledged by root at ")
    emergency.refresh_from_db()
    assert emergency.reviewed_by_username == "root"

    with pytest.raises(CommandError, match="is a scheduled backup: only emergency backups"):
        run(
            "failsafe_prune",
            "--acknowledge",
            str(target.id),
            "--password-stdin",
            stdin=FAILSAFE_PASSWORD + "\n",
        )
    with pytest.raises(CommandError):
        run("failsafe_prune", "--pin", str(target.id), "--unpin", str(target.id))
    with pytest.raises(CommandError, match="Invalid backup id"):
        run("failsafe_prune", "--pin", "not-an-id")
    assert AuditEvent.objects.filter(action="failsafe.pin", outcome="FAILED").exists()


def test_a_bad_policy_is_one_line(history, settings):
    settings.FAILSAFE = {"RETENTION": {"keep_dayly": 7}}
    with pytest.raises(CommandError, match=r"unknown keys keep_dayly; it takes keep_last"):
        run("failsafe_prune", "--dry-run")


def test_help_lists_the_command(superadmin):
    assert "failsafe_prune [--dry-run]" in run("failsafe_help")


def test_the_acknowledged_time_is_utc(history, armed):
    emergency = extra(LAST - HOUR / 2, Backup.Type.EMERGENCY)
    answer = json.loads(
        run(
            "failsafe_prune",
            "--acknowledge",
            str(emergency.id),
            "--password-stdin",
            "--json",
            stdin=FAILSAFE_PASSWORD + "\n",
        )
    )
    emergency.refresh_from_db()
    assert answer["ReviewedAtUtc"] == emergency.reviewed_at.astimezone(datetime.UTC).isoformat(
        timespec="auto"
    ).replace("+00:00", "Z")
    assert answer["ReviewedBy"] == "root"
