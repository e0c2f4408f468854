"""Deleting backups and collecting the chunks no backup uses any more."""

import json
import os
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError

from failsafe import oplock, services
from failsafe.archive import get_store
from failsafe.exceptions import (
    ArchiveCorrupt,
    BackupNotFound,
    FailsafeError,
    NotSuperAdmin,
    OperationInProgress,
)
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed
from tests.factories import FAILSAFE_PASSWORD, AdminFactory
from tests.helpers import run

from .test_chunked_store import bulk_users, take_format1_backup

User = get_user_model()
HOURS_AGO = 2 * 60 * 60


def backup_dir(settings) -> Path:
    return Path(settings.FAILSAFE_BACKUP_DIR)


def stored_chunks(settings) -> dict[str, Path]:
    return {path.name: path for path in (backup_dir(settings) / "chunks").glob("*/*")}


def chunks_of(backup: Backup) -> set[str]:
    """The stored chunks the backup needs: those it names and the bases of their deltas."""
    manifest = get_store().read_manifest(
        name=backup.archive_name, sha256=backup.archive_sha256, backup_id=str(backup.id)
    )
    return {object_id.hex() for object_id in manifest.object_ids()}


def age(paths, seconds: int = HOURS_AGO) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-seq").first()


@pytest.fixture(autouse=True)
def _failsafe_password(db, armed):
    """Deleting and collecting need the failsafe password: it is set for every test here."""


@pytest.fixture
def two_backups(actor, population):
    """Two backups of 4 000 users apart by a run of 400 changed users: they share most
    chunks, and the chunks the run covers are written whole again (too much changed in
    them for a delta), so the first backup has chunks of its own."""
    bulk_users(4000)
    first = services.create_backup(actor=actor)
    changed_pks = User.objects.order_by("pk").values_list("pk", flat=True)[2000:2400]
    User.objects.filter(pk__in=list(changed_pks)).update(last_name="Changed")
    second = services.create_backup(actor=actor)
    return first, second


# --- collecting -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_shared_chunk_survives_deleting_one_backup_and_collecting(actor, two_backups, settings):
    first, second = two_backups
    shared, only_first = chunks_of(first) & chunks_of(second), chunks_of(first) - chunks_of(second)
    assert shared and only_first
    age(stored_chunks(settings).values())

    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    report = services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)

    remaining = set(stored_chunks(settings))
    assert remaining == chunks_of(second)
    assert not only_first & remaining
    assert report.deleted == len(only_first)
    assert report.referenced == len(chunks_of(second))
    assert report.bytes_freed > 0
    assert services.verify(actor=actor, backup_id=second.id)[0].ok


@pytest.mark.django_db
def test_unreferenced_chunks_are_kept_until_the_grace_period_has_passed(
    actor, two_backups, settings
):
    first, second = two_backups
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=second.id, force=True)
    chunks = stored_chunks(settings)

    report = services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)
    assert (report.deleted, report.kept_recent) == (0, len(chunks))
    assert set(stored_chunks(settings)) == set(chunks)

    old, recent = sorted(chunks)[: len(chunks) // 2], sorted(chunks)[len(chunks) // 2 :]
    age(chunks[name] for name in old)
    old_bytes = sum(chunks[name].stat().st_size for name in old)
    report = services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)
    assert (report.deleted, report.kept_recent, report.bytes_freed) == (
        len(old),
        len(recent),
        old_bytes,
    )
    assert set(stored_chunks(settings)) == set(recent)

    settings.FAILSAFE = {"GC_GRACE_SECONDS": 0}
    services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)
    assert stored_chunks(settings) == {}


@pytest.mark.django_db
def test_a_dry_run_counts_and_deletes_nothing(actor, two_backups, settings):
    first, second = two_backups
    only_first = chunks_of(first) - chunks_of(second)
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    chunks = stored_chunks(settings)
    age(chunks.values())

    report = services.collect_garbage(actor=actor, dry_run=True)

    assert report.dry_run
    assert report.deleted == len(only_first) > 0
    assert report.bytes_freed == sum(chunks[name].stat().st_size for name in only_first)
    assert set(stored_chunks(settings)) == set(chunks)


@pytest.mark.django_db
def test_collection_is_refused_while_the_operation_lock_is_held(actor, two_backups, settings):
    first, _ = two_backups
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    age(stored_chunks(settings).values())
    before = set(stored_chunks(settings))

    with (
        oplock.operation_lock(holder="scheduled backup by cron"),
        pytest.raises(OperationInProgress, match="scheduled backup by cron"),
    ):
        services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)

    assert set(stored_chunks(settings)) == before
    assert (last_event().action, last_event().outcome) == ("failsafe.gc", "FAILED")


@pytest.mark.django_db
def test_an_unreadable_manifest_stops_collection_before_anything_is_deleted(
    actor, two_backups, settings
):
    first, second = two_backups
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    age(stored_chunks(settings).values())
    before = set(stored_chunks(settings))
    manifest = backup_dir(settings) / second.archive_name
    manifest.write_bytes(manifest.read_bytes()[:-20])

    with pytest.raises(ArchiveCorrupt, match=f"nothing was deleted: .*{second.id}"):
        services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)
    assert set(stored_chunks(settings)) == before


@pytest.mark.django_db
def test_a_manifest_without_a_backup_row_keeps_its_chunks(actor, two_backups, settings):
    first, second = two_backups
    age(stored_chunks(settings).values())
    # As after restoring the database from a dump older than the archive storage.
    Backup.objects.filter(pk=second.pk).delete()
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)

    report = services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)

    assert report.orphan_manifests == [str(second.id)]
    assert set(stored_chunks(settings)) == chunks_of(second)


@pytest.mark.django_db
def test_leftovers_of_a_dead_writer_are_removed_after_the_grace_period(actor, settings):
    services.create_backup(actor=actor)
    root = backup_dir(settings)
    stale = root / ".k2j3h4.partial"
    stale.write_bytes(b"half a chunk")
    fresh = root / ".a8s7d6.partial"
    fresh.write_bytes(b"being written")
    duplicate = next(iter(stored_chunks(settings).values())).with_suffix(".dup")
    duplicate.write_bytes(b"x")
    age([stale, duplicate])

    report = services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)

    assert report.temp_files_deleted == 2
    assert not stale.exists() and not duplicate.exists() and fresh.exists()
    assert report.deleted == 0


@pytest.mark.django_db
def test_missing_chunks_and_manifests_are_reported(actor, two_backups, settings):
    first, second = two_backups
    victim = sorted(chunks_of(second) - chunks_of(first))[0]
    (backup_dir(settings) / first.archive_name).unlink()
    stored_chunks(settings)[victim].unlink()

    report = services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)

    assert report.missing_manifests == [str(first.id)]
    assert report.missing == 1


# --- deleting ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_a_backup_removes_its_row_and_manifest_and_is_audited(
    actor, two_backups, settings
):
    first, second = two_backups
    first_chunks = chunks_of(first)
    result = services.delete_backup(
        actor=actor, password=FAILSAFE_PASSWORD, backup_id=str(first.id)
    )

    assert not Backup.objects.filter(pk=first.pk).exists()
    assert not (backup_dir(settings) / first.archive_name).exists()
    assert first_chunks <= set(stored_chunks(settings))  # until the collector runs
    assert seed.deleted(result)["BackupId"] == str(first.id)
    event = last_event()
    assert (event.action, event.outcome, event.target) == (
        "failsafe.delete",
        "SUCCESS",
        str(first.id),
    )
    with pytest.raises(BackupNotFound):
        services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)


@pytest.mark.django_db
def test_the_only_safe_backup_is_kept_unless_forced(actor, two_backups):
    first, second = two_backups
    services.mark_safe(actor=actor, backup_id=first.id, password=FAILSAFE_PASSWORD)

    with pytest.raises(FailsafeError, match="only safe backup"):
        services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    assert Backup.objects.filter(pk=first.pk).exists()
    assert (last_event().action, last_event().outcome) == ("failsafe.delete", "FAILED")

    services.mark_safe(
        actor=actor, backup_id=second.id, password=FAILSAFE_PASSWORD, accept_issues=True
    )
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    with pytest.raises(FailsafeError, match="only safe backup"):
        services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=second.id)
    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=second.id, force=True)
    assert not Backup.objects.exists()


@pytest.mark.django_db
def test_a_running_backup_is_not_deleted(actor):
    running = Backup.objects.create(type=Backup.Type.MANUAL)

    with pytest.raises(FailsafeError, match="still running"):
        services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=running.id)
    # Really being written: its writer holds the lock, and --force does not take it.
    with (
        oplock.operation_lock(holder="manual backup by root"),
        pytest.raises(OperationInProgress),
    ):
        services.delete_backup(
            actor=actor, password=FAILSAFE_PASSWORD, backup_id=running.id, force=True
        )
    assert Backup.objects.filter(pk=running.pk).exists()
    # Left RUNNING by a process that died: --force clears it.
    services.delete_backup(
        actor=actor, password=FAILSAFE_PASSWORD, backup_id=running.id, force=True
    )
    assert not Backup.objects.filter(pk=running.pk).exists()


@pytest.mark.django_db
def test_deleting_a_format_1_backup_removes_its_archive_file(actor, population, settings):
    old = take_format1_backup(actor)
    path = backup_dir(settings) / old.archive_name
    assert path.exists()

    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=old.id)

    assert not path.exists()
    assert not Backup.objects.exists()


@pytest.mark.django_db
def test_only_a_superadmin_deletes_or_collects(actor, two_backups):
    first, _ = two_backups
    admin = services.Actor(user=AdminFactory())
    with pytest.raises(NotSuperAdmin):
        services.delete_backup(actor=admin, backup_id=first.id)
    assert (last_event().action, last_event().outcome) == ("failsafe.delete", "DENIED")
    with pytest.raises(NotSuperAdmin):
        services.collect_garbage(actor=admin)
    assert (last_event().action, last_event().outcome) == ("failsafe.gc", "DENIED")
    assert Backup.objects.filter(pk=first.pk).exists()


# --- the commands -----------------------------------------------------------------------


@pytest.mark.django_db
def test_delete_and_gc_commands(superadmin, armed, population, settings):
    bulk_users(1500)
    first = json.loads(run("failsafe_backup", "--json"))["BackupId"]
    # Enough users gone that whole chunks go with them (a few would make deltas, whose
    # bases the second backup still needs).
    User.objects.filter(username__startswith="bulk00").delete()
    run("failsafe_backup", "--json")

    with pytest.raises(CommandError, match="pass --yes"):
        run("failsafe_delete", first)
    assert Backup.objects.filter(pk=first).exists()

    deleted = run(
        "failsafe_delete", first, "--yes", "--json", "--password-stdin", stdin=FAILSAFE_PASSWORD
    )
    payload = json.loads(deleted)
    assert payload["Success"] is True and payload["BackupId"] == first
    assert not Backup.objects.filter(pk=first).exists()

    age(stored_chunks(settings).values())
    before = set(stored_chunks(settings))
    dry = json.loads(run("failsafe_gc", "--dry-run", "--json"))
    assert dry["DryRun"] is True and dry["ChunksDeleted"] >= 1
    assert set(stored_chunks(settings)) == before

    text = run("failsafe_gc", "--password-stdin", stdin=FAILSAFE_PASSWORD)
    assert f"{dry['ChunksDeleted']} unused chunks deleted ({dry['BytesFreed']} bytes)" in text
    assert len(stored_chunks(settings)) == len(before) - dry["ChunksDeleted"]
