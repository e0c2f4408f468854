"""Backups as snapshots: the one place the engine meets the archive store.

A Backup row records where its archive is and how to check it; everything above this module
asks for "the backup as a snapshot" and never learns the archive's format, its chunks, or
which store holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .archive import ArchiveInfo, get_store, shared_chunks
from .archive.garbage import GarbageReport
from .models import Backup
from .progress import stage
from .snapshot import Section, Snapshot, iso


def _location(backup: Backup) -> dict:
    return {
        "name": backup.archive_name,
        "sha256": backup.archive_sha256,
        "backup_id": str(backup.id),
    }


def rows_counted(state: dict | None) -> int | None:
    """The captured rows a SystemState counted: what one pass over its backup reads."""
    counts = ((state or {}).get("SystemMetrics") or {}).get("ModelCounts")
    return sum(counts.values()) if counts else None


def _with_archive() -> Iterable[Backup]:
    return Backup.objects.filter(status=Backup.Status.COMPLETE).exclude(archive_name="")


def write(backup: Backup, *, state: dict, sections: Iterable[Section]) -> ArchiveInfo:
    """Encrypt `sections` into the store as the archive of `backup`."""
    # The newest backup's manifest lends the sizes of the chunks the two share, so they
    # need not be asked of the storage one by one.
    previous = _with_archive().order_by("-created_at").first()
    return get_store().write(
        backup_id=str(backup.id),
        meta={
            "backup_id": str(backup.id),
            "type": backup.type,
            "created_at": iso(backup.created_at),
            "state": state,
        },
        sections=sections,
        previous=_location(previous) if previous else None,
    )


@contextmanager
def open_sections(backup: Backup) -> Iterator[Iterable[Section]]:
    """The backup's sections, read once; raises ArchiveCorrupt for a damaged archive."""
    with get_store().open(**_location(backup)) as reader:
        yield reader.sections()


@contextmanager
def open_snapshot(backup: Backup) -> Iterator[Snapshot]:
    with get_store().open(**_location(backup)) as reader:
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
        store.open(**_location(baseline)) as old_reader,
        store.open(**_location(current)) as new_reader,
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
        return get_store().verify(**_location(backup), checked_chunks=checked_chunks)


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
            _location(backup)
            for backup in Backup.objects.exclude(archive_name="")
            if store.shares_parts(backup.archive_name)
        ],
        grace_seconds=grace_seconds,
        dry_run=dry_run,
    )
