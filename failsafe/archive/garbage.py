"""Garbage collection: delete the chunk files that no manifest names or needs.

Which chunks are in use is read from the manifests themselves (the chunks each names and
the bases their deltas are rebuilt from), never from a table that could disagree with the
storage: every manifest in the storage, whether or not a Backup row still points at it,
plus those of the rows the caller names. A manifest that exists but
cannot be read stops the collection before anything is deleted: with a wrong keyset every
manifest is unreadable, and collecting then would delete every chunk.

The caller holds the operation lock, so no backup is writing; chunks and temporary files
younger than the grace period are kept anyway, for a writer whose lock was taken over
while it was still running.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.utils import timezone

from ..exceptions import ArchiveCorrupt
from . import chunked, files
from .healing import ChunkIndex


@dataclass
class GarbageReport:
    dry_run: bool
    grace_seconds: int
    manifests: int = 0  # manifests read
    chunks: int = 0  # chunk files found
    referenced: int = 0  # of those, named by a manifest
    deleted: int = 0  # unreferenced chunk files deleted (on a dry run: to delete)
    bytes_freed: int = 0
    kept_recent: int = 0  # unreferenced, but younger than the grace period
    temp_files_deleted: int = 0  # left by writers that died before finishing
    # Named by a manifest but not in the storage: those backups fail verification.
    missing: int = 0
    # Backups whose row names a manifest the storage does not have.
    missing_manifests: list[str] = field(default_factory=list)
    # Manifests no Backup row points at (kept, and their chunks with them).
    orphan_manifests: list[str] = field(default_factory=list)


def _backup_id_of(manifest_name: str) -> str | None:
    stem = manifest_name.removesuffix(chunked.SUFFIX)
    try:
        return str(uuid.UUID(stem))
    except ValueError:
        return None  # not a name we write: not ours to read


def _older_than(storage, name: str, cutoff: datetime.datetime) -> bool:
    try:
        modified = storage.get_modified_time(name)
    except FileNotFoundError:
        return False
    if timezone.is_naive(modified) and timezone.is_aware(cutoff):
        modified = timezone.make_aware(modified, datetime.UTC)
    return modified < cutoff


def collect(
    store,
    *,
    manifests: Iterable[dict],
    grace_seconds: int,
    dry_run: bool,
    chunk_index: ChunkIndex | None = None,
) -> GarbageReport:
    """`manifests`: name, sha256 and backup_id of each chunked backup the database knows.
    `chunk_index` forgets the chunks deleted.

    Raises ArchiveCorrupt, having deleted nothing, when a manifest cannot be read.
    """
    storage = store.storage
    report = GarbageReport(dry_run=dry_run, grace_seconds=grace_seconds)
    cutoff = timezone.now() - datetime.timedelta(seconds=grace_seconds)

    to_read = {args["name"]: args for args in manifests if args.get("name")}
    for file_name in files.list_files(storage, ""):
        backup_id = _backup_id_of(file_name) if file_name.endswith(chunked.SUFFIX) else None
        if backup_id and file_name not in to_read:
            report.orphan_manifests.append(backup_id)
            to_read[file_name] = {"name": file_name, "sha256": None, "backup_id": backup_id}

    referenced: set[bytes] = set()
    for name, args in sorted(to_read.items()):
        if not store.exists(name):
            report.missing_manifests.append(args["backup_id"])
            continue
        try:
            manifest = store.read_manifest(**args)
        except ArchiveCorrupt as exc:
            raise ArchiveCorrupt(
                f"Garbage collection stopped, nothing was deleted: {exc}. Fix the keyset, "
                "or delete that backup, first"
            ) from exc
        report.manifests += 1
        # A chunk stored as a delta needs its bases, which may be named by no manifest
        # any more (the backup that named them was deleted): they are in use all the same.
        referenced.update(manifest.object_ids())

    chunk_files = files.ChunkFiles(storage)
    found: set[bytes] = set()
    deleted: list[str] = []
    for file_name, path in chunk_files.stored():
        if not files.CHUNK_NAME.fullmatch(file_name):
            # Not a chunk name: a duplicate or temporary file a dead writer left.
            if _older_than(storage, path, cutoff):
                report.temp_files_deleted += 1
                if not dry_run:
                    storage.delete(path)
            continue
        report.chunks += 1
        chunk_id = bytes.fromhex(file_name)
        found.add(chunk_id)
        if chunk_id in referenced:
            report.referenced += 1
        elif not _older_than(storage, path, cutoff):
            report.kept_recent += 1
        else:
            report.deleted += 1
            report.bytes_freed += storage.size(path)
            if not dry_run:
                storage.delete(path)
                deleted.append(file_name)
    report.missing = len(referenced - found)
    if chunk_index is not None and deleted:
        chunk_index.forget(deleted)

    for file_name in files.list_files(storage, ""):
        if files.is_temp_name(file_name) and _older_than(storage, file_name, cutoff):
            report.temp_files_deleted += 1
            if not dry_run:
                storage.delete(file_name)
    return report
