"""The archive store: where snapshots are kept, encrypted, behind one small interface.

Callers write a snapshot stream and get back what the Backup row records (`ArchiveInfo`),
and open an archive by that record to get the stream back. How bytes are laid out is the
format module's business: `chunked` (format 2, what new backups use: deduplicated chunks
and a manifest) or `single_file` (format 1, still read). The archive's name says which:
`<backup id>.manifest` or `<backup id>.rfs`. Where bytes live is a Django storage: the
`"failsafe"` entry of STORAGES when there is one (S3 or anything django-storages offers),
else a private directory at FAILSAFE_BACKUP_DIR.

Nothing is ever saved under its final name until complete (files.save_via_temp), so a
failed or interrupted backup leaves no manifest or archive behind a name. Opening checks
the stored SHA-256 of the manifest or archive before decrypting anything. A backup reuses
a stored chunk only once it is vouched for (healing.StoredChunkCheck), and rewrites a
damaged one from its own rows; `repair` rewrites those of written backups from a source.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils import timezone

from .. import keys
from ..exceptions import ArchiveCorrupt, InvalidBackupId
from ..snapshot import Section
from . import chunked, files, garbage, healing, single_file
from .healing import ChunkIndex, ChunkSource, RepairReport

# What new backups are written in.
FORMAT_VERSION = chunked.FORMAT_VERSION
STORAGE_ALIAS = "failsafe"
_READ_CHUNK = 1024 * 1024


@dataclass
class ArchiveInfo:
    """What the Backup row records about its archive."""

    name: str
    # Stored bytes of the backup's manifest and every chunk it names, shared or not (a
    # chunk stored as a delta counts its own bytes, not those of the bases it needs).
    size: int
    sha256: str
    format_version: int
    key_id: int
    counts: dict[str, int] = field(default_factory=dict)
    # Stored bytes this write added: new chunks and the manifest.
    bytes_written: int = 0
    chunks: int = 0
    chunks_written: int = 0
    # Stored chunks read again because the chunk index could not vouch for them...
    chunks_rechecked: int = 0
    # ...and of the chunks written, those that replaced a damaged stored copy, and those
    # stored as a delta over a chunk of the previous backup.
    chunks_rewritten: int = 0
    chunks_as_deltas: int = 0


class SnapshotReader(Protocol):
    """An opened archive. `sections()` may be iterated once; `counts` is set at its end."""

    format_version: int
    meta: dict
    counts: dict[str, int] | None

    def sections(
        self, *, skip_chunks: Mapping[str, Collection[bytes]] | None = None
    ) -> Iterator[Section]: ...


class _HashingWriter:
    """Hashes and counts the ciphertext on its way to the temporary file."""

    def __init__(self, target):
        self._target = target
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._target.write(data)
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _backup_key(backup_id) -> str:
    """The canonical text of a backup id: the archive's name and its associated data."""
    try:
        return str(uuid.UUID(str(backup_id)))
    except ValueError:
        raise InvalidBackupId(f"Backup id {str(backup_id)[:64]!r} is not a UUID") from None


def shared_chunks(first: SnapshotReader, second: SnapshotReader) -> dict[str, frozenset[bytes]]:
    """Per model, the chunks both archives hold, so both sides of a compare can skip them.

    Identical rows make no difference, and leaving the same rows out of both sides keeps
    each in primary-key order, so the merge-join of the rest finds every difference. Empty
    unless both archives are chunked.
    """
    if not (isinstance(first, chunked.ChunkedReader) and isinstance(second, chunked.ChunkedReader)):
        return {}
    first_ids, second_ids = first.chunk_ids(), second.chunk_ids()
    return {
        label: first_ids[label] & second_ids[label]
        for label in first_ids.keys() & second_ids.keys()
    }


@contextlib.contextmanager
def _indexing(reader: SnapshotReader, chunk_index: ChunkIndex | None) -> Iterator[None]:
    """While a chunked archive is read through: the chunk index remembers the chunks
    found good and forgets the one found damaged."""
    if chunk_index is None or not isinstance(reader, chunked.ChunkedReader):
        yield
        return
    now = timezone.now()
    found_good: list[healing.ChunkRecord] = []
    reader.on_good_chunk = lambda chunk_hex, stamp, stored: found_good.append(
        healing.ChunkRecord.of(chunk_hex, stamp, stored, now)
    )
    try:
        yield
    except ArchiveCorrupt:
        if reader.failed_chunk:
            chunk_index.forget([reader.failed_chunk])
        raise
    finally:
        if found_good:
            chunk_index.remember(found_good)


class ArchiveStore:
    def __init__(self, storage: Storage):
        self.storage = storage

    def write(
        self,
        *,
        backup_id: str,
        meta: dict,
        sections: Iterable[Section],
        format_version: int = FORMAT_VERSION,
        previous: dict | None = None,
        chunk_index: ChunkIndex | None = None,
        reverify_seconds: float = 0,
    ) -> ArchiveInfo:
        """Encrypts the snapshot into the store, in format 2 unless told otherwise.

        `previous` (name, sha256, backup_id of an earlier chunked backup) saves size
        lookups of the chunks the two share, and lends the bases of delta chunks: a chunk
        it holds over the same keys as a changed one. A chunk already stored is reused
        unread only when `chunk_index` has it (and the bases it needs) verified less than
        `reverify_seconds` ago, with the file's stamp unchanged since; otherwise it is
        read, and rewritten whole from these rows if it is not good (without an index
        every stored chunk is read).
        Raises InvalidBackupId, FailsafeError (no keyset), ValueError (a malformed
        snapshot), OSError (a damaged chunk that cannot be rewritten) and whatever the
        sections iterator raises; a failed write leaves no manifest or archive (chunks
        already stored stay for the garbage collector).
        """
        backup_key = _backup_key(backup_id)
        keyset = keys.active_keyset()
        associated_data = backup_key.encode("ascii")
        if format_version == single_file.FORMAT_VERSION:
            return self._write_single_file(backup_key, keyset, meta, sections)
        if format_version != chunked.FORMAT_VERSION:
            raise ValueError(f"Unknown archive format {format_version!r}")
        chunk_files = files.ChunkFiles(self.storage)
        parent = self._previous_manifest(previous)
        reuse = healing.StoredChunkCheck(
            chunk_files,
            aead=keyset.primitive,
            index=chunk_index,
            reverify_seconds=reverify_seconds,
        )
        if parent is not None:
            reuse.prefetch(parent.objects_in_order())
        try:
            written = chunked.write_chunks(
                chunk_files,
                aead=keyset.primitive,
                key_id=keyset.primary_key_id,
                meta=meta,
                sections=sections,
                reuse=reuse,
                parent=parent,
            )
            chunk_files.finish()
        except BaseException:
            chunk_files.abandon()
            raise
        reuse.remember()

        def write_manifest(temp_file) -> _HashingWriter:
            ciphertext = _HashingWriter(temp_file)
            chunked.write_manifest(
                ciphertext,
                aead=keyset.primitive,
                associated_data=associated_data,
                manifest=written.manifest,
            )
            return ciphertext

        name, ciphertext = files.save_via_temp(
            self.storage, f"{backup_key}{chunked.SUFFIX}", write_manifest
        )
        return ArchiveInfo(
            name=name,
            size=ciphertext.size + written.manifest.stored_bytes,
            sha256=ciphertext.hexdigest(),
            format_version=chunked.FORMAT_VERSION,
            key_id=keyset.primary_key_id,
            counts=written.manifest.counts,
            bytes_written=ciphertext.size + written.bytes_written,
            chunks=sum(len(entry.chunks) for entry in written.manifest.models),
            chunks_written=written.chunks_written,
            chunks_rechecked=reuse.rechecked,
            chunks_rewritten=written.chunks_rewritten,
            chunks_as_deltas=written.deltas_written,
        )

    def _write_single_file(self, backup_key: str, keyset, meta, sections) -> ArchiveInfo:
        def write_archive(temp_file) -> tuple[_HashingWriter, dict[str, int]]:
            ciphertext = _HashingWriter(temp_file)
            counts = single_file.write_snapshot(
                ciphertext,
                aead=keyset.primitive,
                associated_data=backup_key.encode("ascii"),
                meta=meta,
                sections=sections,
            )
            return ciphertext, counts

        name, (ciphertext, counts) = files.save_via_temp(
            self.storage, f"{backup_key}{single_file.SUFFIX}", write_archive
        )
        return ArchiveInfo(
            name=name,
            size=ciphertext.size,
            sha256=ciphertext.hexdigest(),
            format_version=single_file.FORMAT_VERSION,
            key_id=keyset.primary_key_id,
            counts=counts,
            bytes_written=ciphertext.size,
        )

    def _previous_manifest(self, previous: dict | None) -> chunked.Manifest | None:
        if not previous or not str(previous.get("name", "")).endswith(chunked.SUFFIX):
            return None
        try:
            return self.read_manifest(**previous)
        except ArchiveCorrupt:
            return None  # sizes are then asked of the storage, and every chunk stored whole

    def _open_stored(self, name: str, backup_key: str):
        missing = ArchiveCorrupt(f"Archive file of backup {backup_key} is missing")
        if not name or not self.storage.exists(name):
            raise missing
        try:
            return self.storage.open(name, "rb")
        except FileNotFoundError:
            raise missing from None

    def _checksum_mismatch(self, backup_key: str) -> ArchiveCorrupt:
        return ArchiveCorrupt(
            f"Archive checksum mismatch for backup {backup_key}: the file was modified or truncated"
        )

    def _check_sha256(self, name: str, sha256: str, backup_key: str) -> None:
        digest = hashlib.sha256()
        with self._open_stored(name, backup_key) as stored:
            while chunk := stored.read(_READ_CHUNK):
                digest.update(chunk)
        if not hmac.compare_digest(digest.hexdigest(), (sha256 or "").lower()):
            raise self._checksum_mismatch(backup_key)

    def read_manifest(
        self, *, name: str, sha256: str | None, backup_id: str, key_id: int | None = None
    ) -> chunked.Manifest:
        """A format-2 manifest, checked against `sha256` unless that is None (the garbage
        collector reads manifests it has no Backup row for). Raises ArchiveCorrupt, and
        keys.KeyNotHeld when the keyset lacks `key_id` (the key the row says it needs)."""
        backup_key = _backup_key(backup_id)
        aead = keys.streaming_aead(key_id=key_id, backup_id=backup_key)
        with self._open_stored(name, backup_key) as stored:
            data = stored.read()
        if sha256 is not None and not hmac.compare_digest(
            hashlib.sha256(data).hexdigest(), sha256.lower()
        ):
            raise self._checksum_mismatch(backup_key)
        return chunked.read_manifest(
            data, aead=aead, associated_data=backup_key.encode("ascii"), backup_id=backup_key
        )

    @contextlib.contextmanager
    def open(
        self, *, name: str, sha256: str, backup_id: str, key_id: int | None = None
    ) -> Iterator[SnapshotReader]:
        """The archive as a snapshot stream. Raises ArchiveCorrupt (on entering, or while
        rows are read) for a missing, altered, truncated or undecryptable archive, manifest
        or chunk."""
        backup_key = _backup_key(backup_id)
        aead = keys.streaming_aead(key_id=key_id, backup_id=backup_key)
        if name.endswith(chunked.SUFFIX):
            reader = chunked.ChunkedReader(
                self.read_manifest(
                    name=name, sha256=sha256 or "", backup_id=backup_key, key_id=key_id
                ),
                chunks=files.ChunkFiles(self.storage),
                aead=aead,
                backup_id=backup_key,
            )
        else:
            self._check_sha256(name, sha256, backup_key)
            reader = single_file.SingleFileReader(
                self._open_stored(name, backup_key),
                aead=aead,
                associated_data=backup_key.encode("ascii"),
                backup_id=backup_key,
            )
        try:
            yield reader
        finally:
            reader.close()

    def verify(
        self,
        *,
        name: str,
        sha256: str,
        backup_id: str,
        key_id: int | None = None,
        checked_chunks: set[bytes] | None = None,
        chunk_index: ChunkIndex | None = None,
    ) -> dict[str, int]:
        """Decodes every record (every chunk, for format 2); returns the per-model row
        counts or raises ArchiveCorrupt.

        Verifying several backups, pass one `checked_chunks` set to all of them: a chunk
        already checked in this run is not read again, and the chunks of each backup that
        verifies are added to it. `chunk_index` remembers each chunk read and found good,
        and forgets one found damaged, so that no backup reuses it unread.
        """
        with self.open(name=name, sha256=sha256, backup_id=backup_id, key_id=key_id) as reader:
            chunk_ids = reader.chunk_ids() if isinstance(reader, chunked.ChunkedReader) else {}
            skip = {label: checked_chunks for label in chunk_ids} if checked_chunks else {}
            with _indexing(reader, chunk_index):
                for section in reader.sections(skip_chunks=skip):
                    for _row in section.rows:
                        pass
            if checked_chunks is not None:
                for ids in chunk_ids.values():
                    checked_chunks.update(ids)
            return dict(reader.counts)

    def repair(
        self,
        *,
        archives: Iterable[dict],
        checked_chunks: set[bytes],
        sources: Sequence[ChunkSource],
        chunk_index: ChunkIndex | None = None,
    ) -> RepairReport:
        """Rewrites the damaged chunks of these archives from the first source holding
        their exact rows; see healing.repair. The caller holds the operation lock."""
        return healing.repair(
            self,
            archives=archives,
            checked_chunks=checked_chunks,
            sources=sources,
            index=chunk_index,
        )

    def collect_garbage(
        self,
        *,
        manifests: Iterable[dict],
        grace_seconds: int,
        dry_run: bool = False,
        chunk_index: ChunkIndex | None = None,
    ) -> garbage.GarbageReport:
        """Deletes chunk files no manifest names, and their index entries; see
        garbage.collect. The caller holds the operation lock. Raises ArchiveCorrupt,
        deleting nothing, if a manifest is unreadable."""
        return garbage.collect(
            self,
            manifests=manifests,
            grace_seconds=grace_seconds,
            dry_run=dry_run,
            chunk_index=chunk_index,
        )

    def delete(self, name: str) -> None:
        """Deletes an archive or manifest; chunks are the garbage collector's."""
        if name:
            self.storage.delete(name)

    def shares_parts(self, name: str) -> bool:
        """Whether the archive called `name` is made of parts other archives may share."""
        return name.endswith(chunked.SUFFIX)

    def exists(self, name: str) -> bool:
        return bool(name) and self.storage.exists(name)


def get_store() -> ArchiveStore:
    """The store as configured now (settings are read on every call)."""
    if STORAGE_ALIAS in settings.STORAGES:
        return ArchiveStore(storages[STORAGE_ALIAS])
    # Archives are readable by this process's user only; the key is what protects them
    # elsewhere, but nobody else on the host needs to see them.
    storage = FileSystemStorage(
        location=settings.FAILSAFE_BACKUP_DIR,
        file_permissions_mode=0o600,
        directory_permissions_mode=0o700,
    )
    return ArchiveStore(storage)
