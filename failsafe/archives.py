"""Backups as snapshots: the one place the engine meets the archive store.

A Backup row records where its archive is and how to check it; everything above this module
asks for "the backup as a snapshot" and never learns the archive's format, its chunks, or
which store holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager

from django.db import DatabaseError, transaction

from . import audit, capture, keys
from .archive import ArchiveInfo, RepairReport, get_store, shared_chunks
from .archive.garbage import GarbageReport
from .archive.healing import ChunkRecord, SnapshotSource
from .conf import setting
from .models import Backup, VerifiedChunk
from .progress import stage
from .snapshot import Section, Snapshot, iso

logger = logging.getLogger(__name__)


def location(backup: Backup) -> dict:
    """What the store needs to find and check a backup's archive."""
    return {
        "name": backup.archive_name,
        "sha256": backup.archive_sha256,
        "backup_id": str(backup.id),
        # So a backup whose key the keyset lacks is named as such, not as "corrupt".
        "key_id": backup.key_id,
    }


def rows_counted(state: dict | None) -> int | None:
    """The captured rows a SystemState counted: what one pass over its backup reads."""
    counts = ((state or {}).get("SystemMetrics") or {}).get("ModelCounts")
    return sum(counts.values()) if counts else None


class DatabaseChunkIndex:
    """The store's chunk index (archive.healing.ChunkIndex) as VerifiedChunk rows."""

    # Ids per query: well under SQLite's limit of bound parameters.
    BATCH = 500

    def lookup(self, chunk_hexes: Collection[str]) -> dict[str, ChunkRecord]:
        wanted = list(chunk_hexes)
        found = {}
        for start in range(0, len(wanted), self.BATCH):
            batch = wanted[start : start + self.BATCH]
            for row in VerifiedChunk.objects.filter(chunk_id__in=batch):
                found[row.chunk_id] = ChunkRecord(
                    row.chunk_id, row.sha256, row.stamp, row.verified_at
                )
        return found

    def remember(self, records: Collection[ChunkRecord]) -> None:
        rows = [
            VerifiedChunk(
                chunk_id=record.chunk_hex,
                sha256=record.sha256,
                stamp=record.stamp,
                verified_at=record.verified_at,
            )
            for record in records
        ]
        # In its own savepoint: a backup writes these inside its capture transaction
        # (REPEATABLE READ on PostgreSQL), where a verification that updated the same rows
        # meanwhile makes the update fail. A lost entry only means the chunk is read again,
        # so that must not fail the backup.
        try:
            with transaction.atomic():
                VerifiedChunk.objects.bulk_create(
                    rows,
                    batch_size=self.BATCH,
                    update_conflicts=True,
                    unique_fields=["chunk_id"],
                    update_fields=["sha256", "stamp", "verified_at"],
                )
        except DatabaseError as exc:
            logger.warning("The chunk index was not updated (%s): chunks are read again", exc)

    def forget(self, chunk_hexes: Collection[str]) -> None:
        wanted = list(chunk_hexes)
        for start in range(0, len(wanted), self.BATCH):
            VerifiedChunk.objects.filter(chunk_id__in=wanted[start : start + self.BATCH]).delete()


@contextmanager
def _live_sections() -> Iterator[Iterable[Section]]:
    with capture.consistent_read():
        yield capture.live_sections()


# Where a damaged chunk's rows may still be found: the live database, read as a backup
# reads it. (A replica of the store, once there are replicas, is another source.)
LIVE_DATA = SnapshotSource("live data", _live_sections)


def _with_archive() -> Iterable[Backup]:
    return Backup.objects.filter(status=Backup.Status.COMPLETE).exclude(archive_name="")


def _catalog_record(backup: Backup) -> dict:
    """The rest of the backup's row, sealed into its manifest with it, so that
    `failsafe_recover` can rebuild the row from the archive alone (see recovery.py).

    The audit head is read in the backup's own consistent read, as take_backup reads it;
    the key id is the keyset's primary now (a chunked manifest also names its key)."""
    head_seq, head_hash = audit.head()
    return {
        "reason": backup.reason,
        "created_by_id": backup.created_by_id,
        "created_by_username": backup.created_by_username,
        "key_id": keys.primary_key_id(),
        "audit_head_seq": head_seq or None,
        "audit_head_hash": head_hash if head_seq else "",
    }


def write(backup: Backup, *, state: dict, sections: Iterable[Section]) -> ArchiveInfo:
    """Encrypt `sections` into the store as the archive of `backup`."""
    # The newest backup's manifest lends the sizes of the chunks the two share, so they
    # need not be asked of the storage one by one.
    previous = _with_archive().order_by("-created_at").first()
    info = get_store().write(
        backup_id=str(backup.id),
        meta={
            "backup_id": str(backup.id),
            "type": backup.type,
            "created_at": iso(backup.created_at),
            "state": state,
            "catalog": _catalog_record(backup),
        },
        sections=sections,
        previous=location(previous) if previous else None,
        chunk_index=DatabaseChunkIndex(),
        reverify_seconds=float(setting("CHUNK_REVERIFY_SECONDS")),
    )
    if info.chunks_rewritten:
        logger.warning(
            "Backup %s rewrote %d damaged stored chunks from the live rows",
            backup.id,
            info.chunks_rewritten,
        )
    return info


@contextmanager
def open_sections(backup: Backup) -> Iterator[Iterable[Section]]:
    """The backup's sections, read once; raises ArchiveCorrupt for a damaged archive."""
    with get_store().open(**location(backup)) as reader:
        yield reader.sections()


@contextmanager
def open_snapshot(backup: Backup) -> Iterator[Snapshot]:
    with get_store().open(**location(backup)) as reader:
        yield Snapshot(str(backup.id), reader.meta.get("state", backup.state), reader.sections())


@contextmanager
def open_pair(baseline: Backup, current: Backup) -> Iterator[tuple[Snapshot, Snapshot]]:
    """Both backups as snapshots that leave out the records they share.

    A shared chunk holds the same rows on both sides, which compare to no difference; the
    counts and states come from the manifests, so the result is the same as reading every
    row, for a fraction of the work when the backups differ by little.
    """
    store = get_store()
    with (
        store.open(**location(baseline)) as old_reader,
        store.open(**location(current)) as new_reader,
    ):
        shared = shared_chunks(old_reader, new_reader)
        yield (
            Snapshot(
                str(baseline.id),
                old_reader.meta.get("state", baseline.state),
                old_reader.sections(skip_chunks=shared),
            ),
            Snapshot(
                str(current.id),
                new_reader.meta.get("state", current.state),
                new_reader.sections(skip_chunks=shared),
            ),
        )


def verify(backup: Backup, *, checked_chunks: set[bytes] | None = None) -> dict[str, int]:
    """Read and check every record of the backup; per-model row counts, or ArchiveCorrupt.

    Several backups verified with one `checked_chunks` set read each shared chunk once.
    """
    with stage(f"Verify backup {str(backup.id)[:8]}", rows_counted(backup.state)):
        return get_store().verify(
            **location(backup), checked_chunks=checked_chunks, chunk_index=DatabaseChunkIndex()
        )


def repair(
    backups: Iterable[Backup], *, checked_chunks: set[bytes], other_sources: Iterable = ()
) -> RepairReport:
    """Rewrite the damaged chunks of these backups from the live rows that still hold them,
    else from `other_sources` (the replicas), in that order.

    Chunks in `checked_chunks` were found good in this run and are not read again. The
    caller holds the operation lock.
    """
    with stage("Repair damaged chunks", None):
        return get_store().repair(
            archives=[location(backup) for backup in backups],
            checked_chunks=checked_chunks,
            sources=[LIVE_DATA, *other_sources],
            chunk_index=DatabaseChunkIndex(),
        )


def keeps_shared_parts(backup: Backup) -> bool:
    """Whether deleting the backup's archive leaves parts other backups share (chunks)."""
    return get_store().shares_parts(backup.archive_name)


def delete(backup: Backup) -> None:
    """Delete the backup's own archive (its manifest); shared chunks are the collector's."""
    get_store().delete(backup.archive_name)


def collect_garbage(*, grace_seconds: int, dry_run: bool) -> GarbageReport:
    """Delete the stored parts no backup needs any more. The caller holds the operation lock."""
    store = get_store()
    return store.collect_garbage(
        manifests=[
            location(backup)
            for backup in Backup.objects.exclude(archive_name="")
            if store.shares_parts(backup.archive_name)
        ],
        grace_seconds=grace_seconds,
        dry_run=dry_run,
        chunk_index=DatabaseChunkIndex(),
    )
