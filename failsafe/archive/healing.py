"""The health of stored chunks: when one may be reused unread, and rewriting a damaged one.

A chunk file is shared by every backup that names it, so one flipped bit in it damages all
of them, and a writer that trusted a chunk file merely for existing would go on naming it
in new backups that report success. Here a backup reuses a stored chunk unread only when
the chunk index says it was verified less than `reverify_seconds` ago and the file's stamp
(files.ChunkFiles.stamp) is the one it had then; otherwise it reads the file, and a copy
that is not good is replaced by the chunk sealed afresh, in full, from the rows being
backed up. A chunk stored as a delta is good only with every base it is rebuilt from.
`repair` does the same for backups already written, from the sources given (the live
database now; a replica of the store, once there are replicas, is one more ChunkSource).

The chunk index is a table of the engine's (archives.DatabaseChunkIndex over
models.VerifiedChunk), seen here only through the ChunkIndex protocol, and not a file in
the storage, because:
- it changes one entry at a time, from backups and from verifications that run alongside
  them (verifying takes no lock); rows are updated atomically on SQLite and PostgreSQL,
  where a file in the storage would be rewritten whole (one object on S3) and two writers
  would lose each other's updates;
- it can only make the store read more, never trust more than the bytes deserve: an entry
  holds the SHA-256 of bytes that were found good (or written) and the file's stamp then,
  so a file changed since, or an index restored from elsewhere, disagrees with the storage
  and the chunk is read again. Which chunks exist still comes from the storage's listing.
Losing an entry only costs a read; an entry that survives damage is bounded by the age.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
from collections.abc import Collection, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import zstandard
from django.utils import timezone

from .. import keys
from ..exceptions import ArchiveCorrupt
from . import chunked, codec, files, layout


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One entry of the chunk index: the stored bytes found good (or written), by their
    SHA-256, the file's stamp then ("" where the storage has none) and when."""

    chunk_hex: str
    sha256: str
    stamp: str
    verified_at: datetime.datetime

    @classmethod
    def of(cls, chunk_hex: str, stamp: str, stored: bytes, at: datetime.datetime) -> ChunkRecord:
        return cls(chunk_hex, hashlib.sha256(stored).hexdigest(), stamp, at)


class ChunkIndex(Protocol):
    """When each stored chunk was last found good; implemented by the engine."""

    def lookup(self, chunk_hexes: Collection[str]) -> dict[str, ChunkRecord]: ...

    def remember(self, records: Collection[ChunkRecord]) -> None:
        """Adds or replaces entries. May drop them (a concurrent update): that costs a read."""

    def forget(self, chunk_hexes: Collection[str]) -> None:
        """Removes entries: a chunk found damaged must never look fresh."""


class ChunkSource(Protocol):
    """Somewhere the plaintext of a damaged chunk may still be found: the live database
    (SnapshotSource over its sections); a replica of the store, once there are replicas."""

    name: str

    def plaintexts(
        self, wanted: Mapping[int, Collection[bytes]]
    ) -> Generator[tuple[bytes, bytes], None, None]:
        """(chunk id, plaintext) of chunks of `wanted` (ids per chunk-naming key id) this
        source holds. The caller checks each against its name before storing it, and
        closes the generator once it has found everything."""


class SnapshotSource:
    """A ChunkSource over a snapshot's sections, cut into chunks as a backup cuts them:
    a chunk whose exact rows the snapshot still holds between the same neighbours."""

    def __init__(self, name: str, open_sections):
        # open_sections(): a context manager yielding the sections, entered only when
        # some chunk is wanted.
        self.name = name
        self._open_sections = open_sections

    def plaintexts(
        self, wanted: Mapping[int, Collection[bytes]]
    ) -> Generator[tuple[bytes, bytes], None, None]:
        with self._open_sections() as sections:
            yield from chunked.find_chunks(sections, wanted)


# How many index entries a backup looks up at once, and keeps: a window over the previous
# backup's stored objects, in the order the backup meets them, so its memory does not grow
# with the store (5 million users make some 25 000 chunks).
PREFETCH_WINDOW = 1024


class StoredChunkCheck:
    """chunked.ReuseCheck for one backup: trusts a stored chunk unread when the index has
    a fresh entry whose stamp is the file's, else reads it; remembers what it found good
    and what the backup wrote (remember(), once the written chunks are on disk).

    Without an index nothing was ever verified, so every stored chunk is read.
    """

    def __init__(
        self,
        chunks: files.ChunkFiles,
        *,
        aead,
        index: ChunkIndex | None,
        reverify_seconds: float,
    ):
        self._chunks = chunks
        self._aead = aead
        self._index = index
        self._now = timezone.now()
        self._fresh_since = (
            self._now - datetime.timedelta(seconds=reverify_seconds)
            if index is not None and reverify_seconds > 0
            else None
        )
        # The index entries of the current window, and every chunk asked for in it.
        self._records: dict[str, ChunkRecord] = {}
        self._asked: set[str] = set()
        # The previous backup's objects in order (prefetch), and where each one is.
        self._order: list[bytes] = []
        self._position: dict[bytes, int] = {}
        self._found_good: list[ChunkRecord] = []
        self._written: list[tuple[str, str]] = []  # (chunk hex, SHA-256 of what was written)
        self.rechecked = 0  # stored chunks read because the index could not vouch for them

    def prefetch(self, chunk_ids: Iterable[bytes]) -> None:
        """The stored objects the backup will likely reuse, in the order it will meet them
        (chunked.Manifest.objects_in_order of the previous backup): their index entries
        are looked up a window at a time, as the backup reaches each window."""
        for chunk_id in chunk_ids:
            if chunk_id not in self._position:
                self._position[chunk_id] = len(self._order)
                self._order.append(chunk_id)

    def _record(self, chunk_hex: str) -> ChunkRecord | None:
        if chunk_hex in self._asked:
            return self._records.get(chunk_hex)
        position = self._position.get(bytes.fromhex(chunk_hex))
        if position is None:
            wanted = [chunk_hex]  # not in the previous backup: looked up alone
        else:
            # The backup has moved past the window it was in: forget it, fetch the next.
            self._records = {}
            self._asked = set()
            window = self._order[position : position + PREFETCH_WINDOW]
            wanted = [chunk_id.hex() for chunk_id in window]
        self._asked.update(wanted)
        if self._index is not None:
            self._records.update(self._index.lookup(wanted))
        return self._records.get(chunk_hex)

    def _fresh(self, chunk_hex: str) -> bool:
        record = self._record(chunk_hex)
        return (
            record is not None
            and self._fresh_since is not None
            and record.verified_at >= self._fresh_since
            and record.stamp == self._chunks.stamp(chunk_hex)
        )

    def reusable(self, chunk_hex: str, plaintext: bytes, needs: tuple[bytes, ...] = ()) -> bool:
        """`needs`: the bases a delta stored under `chunk_hex` is rebuilt from; it is
        reused unread only when they are all fresh too."""
        try:
            if self._fresh(chunk_hex) and all(self._fresh(base.hex()) for base in needs):
                return True
            self.rechecked += 1
            stamp = self._chunks.stamp(chunk_hex)
            stored = self._chunks.get(chunk_hex)
        except FileNotFoundError:
            return False
        digest = hashlib.sha256(stored).hexdigest()
        record = self._records.get(chunk_hex)
        # A chunk stored in full: the same bytes as were found good before, or bytes that
        # decrypt to these rows. Anything else (a delta) is rebuilt from its bases.
        if not needs and record is not None and hmac.compare_digest(digest, record.sha256):
            self._found_good.append(ChunkRecord(chunk_hex, digest, stamp, self._now))
            return True
        try:
            read = chunked.StoredObjects(self._chunks, self._aead).read(
                bytes.fromhex(chunk_hex), stamps=True
            )
        except chunked.ObjectDamaged:
            return False
        rebuilt = read.plaintext
        if rebuilt is None:
            rebuilt = layout.encode_chunk(read.label, read.rows)
        if not hmac.compare_digest(rebuilt, plaintext):
            return False
        self._found_good.extend(
            ChunkRecord.of(object_hex, object_stamp, object_stored, self._now)
            for object_hex, object_stamp, object_stored in read.objects
        )
        return True

    def written(self, chunk_hex: str, stored: bytes) -> None:
        self._written.append((chunk_hex, hashlib.sha256(stored).hexdigest()))

    def remember(self) -> None:
        """Records what was found good and what was written; call after ChunkFiles.finish."""
        if self._index is None:
            return
        records = list(self._found_good)
        for chunk_hex, digest in self._written:
            try:
                stamp = self._chunks.stamp(chunk_hex)
            except FileNotFoundError:
                continue
            records.append(ChunkRecord(chunk_hex, digest, stamp, self._now))
        if records:
            self._index.remember(records)


# --- repairing written backups -------------------------------------------------------


@dataclass
class RepairReport:
    chunks_checked: int = 0
    # Chunk hex -> what was wrong with it, for every chunk found missing or unreadable.
    damaged: dict[str, str] = field(default_factory=dict)
    # Chunk hex -> the name of the source it was rewritten from.
    rewritten: dict[str, str] = field(default_factory=dict)
    # Backup id -> how many of its chunks stay damaged (no source had their rows).
    lost_by_backup: dict[str, int] = field(default_factory=dict)


@dataclass
class _Named:
    """A chunk the archives to repair name: under which key id, and by which backups."""

    key_id: int
    backups: list[str] = field(default_factory=list)


def repair(
    store,
    *,
    archives: Iterable[dict],
    checked_chunks: set[bytes],
    sources: Sequence[ChunkSource],
    index: ChunkIndex | None,
) -> RepairReport:
    """Checks every chunk the archives name (name, sha256, backup_id of each) that is not
    in `checked_chunks`, and rewrites each damaged one from the first source that has its
    exact plaintext. Chunks found good are added to `checked_chunks` and remembered by the
    index; damaged ones are forgotten, and remembered again once rewritten.

    The caller holds the operation lock: nothing else writes chunks meanwhile.
    """
    report = RepairReport()
    chunk_files = files.ChunkFiles(store.storage)
    keyset = keys.active_keyset()
    now = timezone.now()
    found_good: list[ChunkRecord] = []
    named: dict[bytes, _Named] = {}
    for location in archives:
        backup_id = location["backup_id"]
        if not str(location.get("name", "")).endswith(chunked.SUFFIX):
            continue  # a single-file archive: no parts to rewrite
        try:
            manifest = store.read_manifest(**location)
        except ArchiveCorrupt:
            continue  # nothing says which chunks it names; its verification says why
        reader = chunked.ChunkedReader(
            manifest, chunks=chunk_files, aead=keyset.primitive, backup_id=backup_id
        )
        reader.on_good_chunk = lambda chunk_hex, stamp, stored: found_good.append(
            ChunkRecord.of(chunk_hex, stamp, stored, now)
        )
        for entry in manifest.models:
            for ref in entry.chunks:
                chunk_hex = ref.id.hex()
                if chunk_hex in report.damaged:
                    named[ref.id].backups.append(backup_id)
                    continue
                if ref.id in checked_chunks:
                    continue
                report.chunks_checked += 1
                try:
                    reader.read_chunk(entry.spec, ref)
                except ArchiveCorrupt as exc:
                    report.damaged[chunk_hex] = str(exc)
                    named[ref.id] = _Named(manifest.key_id, [backup_id])
                    continue
                checked_chunks.add(ref.id)
    if index is not None:
        if report.damaged:
            index.forget(list(report.damaged))
        if found_good:
            index.remember(found_good)

    rewritten = _rewrite(chunk_files, keyset.primitive, named, sources, report, now)
    if index is not None and rewritten:
        index.remember(rewritten)
    for chunk_id, chunk in named.items():
        if chunk_id.hex() not in report.rewritten:
            for backup_id in chunk.backups:
                report.lost_by_backup[backup_id] = report.lost_by_backup.get(backup_id, 0) + 1
    return report


def _rewrite(
    chunk_files: files.ChunkFiles,
    aead,
    named: dict[bytes, _Named],
    sources: Sequence[ChunkSource],
    report: RepairReport,
    now: datetime.datetime,
) -> list[ChunkRecord]:
    wanted: dict[int, set[bytes]] = {}
    for chunk_id, chunk in named.items():
        wanted.setdefault(chunk.key_id, set()).add(chunk_id)
    compressor = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL)
    records = []
    for source in sources:
        if not any(wanted.values()):
            break
        # Closed as soon as nothing is wanted: the live source then ends its read.
        with contextlib.closing(source.plaintexts(wanted)) as found:
            for chunk_id, plaintext in found:
                chunk = named.get(chunk_id)
                if chunk is None or chunk_id not in wanted[chunk.key_id]:
                    continue
                # Never trust a source: the plaintext must hash to the chunk's name.
                namer = chunked.ChunkNamer.for_key_id(chunk.key_id)
                if not hmac.compare_digest(namer.name(plaintext), chunk_id):
                    continue
                chunk_hex = chunk_id.hex()
                stored = chunked.seal(
                    aead, compressor.compress(plaintext), chunk_hex.encode("ascii")
                )
                chunk_files.replace(chunk_hex, stored)
                records.append(ChunkRecord.of(chunk_hex, chunk_files.stamp(chunk_hex), stored, now))
                report.rewritten[chunk_hex] = source.name
                wanted[chunk.key_id].discard(chunk_id)
                if not any(wanted.values()):
                    break
    return records
