"""Format 2: a snapshot as content-defined chunks of rows, each stored once, and a manifest.

Each model's rows, in primary-key order, are cut into chunks after rows whose primary key's
digest has 8 given bits zero (about one row in 256, past a minimum of MIN_ROWS), so cut
points follow the keys rather than positions or values: an update never moves a boundary
(the changed chunk covers exactly the keys it covered before), and an insert or delete
changes the chunk around it and at most its neighbours; every other chunk comes out byte
for byte the same.

A chunk's plaintext (layout.py) holds its model label and rows, readable on its own. It is
named by a keyed hash of that plaintext (keys.chunk_id_key), and stored once under that
name, however many backups hold it (files.ChunkFiles), encrypted with the Tink streaming
AEAD with its name as associated data (so a chunk file swapped for another does not
decrypt). What is stored under the name is one of:

- the plaintext compressed with zstd (a zstd frame), or
- a delta object: DELTA_MAGIC, then zstd of msgpack
  [DELTA_VERSION, [base id, the base's own bases...], removed pks,
   [[pk, [column, value, ...]], ...] patched, [[index, row], ...] inserted],
  written when the previous backup held a chunk over the same keys (its base): the base's
  rows, less the removed keys, with the patched columns set and each inserted row put at
  its index, give this chunk's rows, whose plaintext (layout.encode_chunk) is checked
  against the name like any other. The writer rebuilds every delta as a reader would
  before storing it, and stores the chunk in full when that differs, when too many rows
  changed or the delta is not much smaller than the compressed chunk, or when the chain of
  bases would grow past MAX_CHAIN.

Being shared, a stored chunk is reused only once vouched for, and a damaged one is sealed
again in full from the same rows under the same name (healing.py).

A backup is its manifest, stored as `<backup id>.manifest`, compressed and encrypted the
same way with the backup id as associated data:

    {"format": FORMAT_NAME, "version": 3, "meta": {...},
     "chunk_key": {"key_id": primary Tink key id, "check": fingerprint of the id key},
     "models": [{"model": ModelSpec.to_header(), "rows": n,
                 "chunks": [[id (32 bytes), rows, stored bytes(, [base ids])], ...]}, ...]}

The base ids of an entry are every object its stored delta needs (its whole chain), so
the garbage collector, replication and recovery know what a backup depends on without
decrypting anything. Version 2 manifests (no base ids, no deltas) are still read.

Two manifests naming the same chunk hold exactly the same rows there: a compare of two
backups skips those chunks on both sides and merge-joins only the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import msgpack
import tink
import zstandard

from .. import keys, progress
from ..exceptions import ArchiveCorrupt
from ..snapshot import ModelSpec, Section
from . import codec, layout

FORMAT_NAME = "raos-failsafe-manifest"
# The archive format (Backup.format_version): 2 for chunks and a manifest.
FORMAT_VERSION = 2
# The manifest's own version: 3 adds the base ids of delta chunks; 2 (no deltas) is read.
MANIFEST_VERSION = 3
READABLE_VERSIONS = (2, 3)
SUFFIX = ".manifest"

# Chunk boundaries: never before MIN_ROWS rows (tiny chunks cost a file and a manifest
# entry each), then after a row whose primary key's digest has 8 given bits zero, so
# about 64 + 256 rows a chunk, and always at MAX_ROWS rows or (by a cheap estimate) about
# MAX_BYTES of rows, so an unlucky run of keys or a table of huge JSON values cannot make
# one chunk that must sit in memory.
MIN_ROWS = 64
MAX_ROWS = 2048
MAX_BYTES = 4 * 1024 * 1024
BOUNDARY_MASK = 0xFF
# crc32 is linear: over consecutive integer keys its low byte is zero exactly once every
# 256, which would cut as regularly as a ruler. Multiplying by this odd constant (Knuth's
# multiplicative hash) and taking the top byte spreads the cuts as a random digest would.
_KEY_MIX = 0x9E3779B1

# Delta objects. A full chunk's compressed payload is a zstd frame, whose magic number
# (28 b5 2f fd) this never begins with, so the two cannot be mistaken for one another.
DELTA_MAGIC = b"rfsd"
# Version 1 deltas are rebuilt with layout.encode_chunk as layout COLUMNS 1 writes: a new
# chunk layout comes with a new delta version, and keeps that encoder for version 1
# (tests/failsafe/test_layout.py pins its bytes).
DELTA_VERSION = 1
# The longest chain of bases a delta may need: each one read costs a restore a decryption.
MAX_CHAIN = 6
# A delta is written only when it changes at most this fraction of the chunk's rows, and
# is at most 1 / DELTA_MAX_SIZE of the chunk's compressed size.
DELTA_MAX_CHANGED = 0.5
DELTA_MAX_SIZE = 2

ID_BYTES = 32
_KEY_CHECK_INPUT = b"raos-failsafe: which chunk-id key named these chunks"


class ChunkStore(Protocol):
    """Where chunk bytes live; files.ChunkFiles over a Django storage."""

    def holds(self, chunk_hex: str) -> bool: ...
    def size(self, chunk_hex: str) -> int: ...
    def stamp(self, chunk_hex: str) -> str: ...
    def get(self, chunk_hex: str) -> bytes: ...
    def put(self, chunk_hex: str, data: bytes) -> None: ...
    def replace(self, chunk_hex: str, data: bytes) -> None: ...


class ReuseCheck(Protocol):
    """Whether a chunk the store already holds may be named by a new manifest as it is
    (healing.StoredChunkCheck: recently verified with the bases it needs, or read and
    found good)."""

    def reusable(self, chunk_hex: str, plaintext: bytes, needs: tuple[bytes, ...] = ()) -> bool: ...
    def written(self, chunk_hex: str, stored: bytes) -> None: ...


class ChunkRef(NamedTuple):
    """One manifest entry: which chunk, how many rows it holds, its stored size, and the
    other stored objects (bases) reading it needs, nearest first."""

    id: bytes
    rows: int
    size: int
    needs: tuple[bytes, ...] = ()

    def to_record(self) -> list:
        record = [self.id, self.rows, self.size]
        if self.needs:
            record.append(list(self.needs))
        return record

    @classmethod
    def from_record(cls, record: list) -> ChunkRef:
        chunk_id, rows, size, *rest = record
        needs = tuple(rest[0]) if rest else ()
        if len(rest) > 1 or not all(isinstance(i, bytes) and len(i) == ID_BYTES for i in needs):
            raise ValueError("a chunk entry with bad base ids")
        return cls(chunk_id, rows, size, needs)


@dataclass
class ModelEntry:
    spec: ModelSpec
    rows: int = 0
    chunks: list[ChunkRef] = field(default_factory=list)


@dataclass
class Manifest:
    meta: dict
    key_id: int
    key_check: str
    models: list[ModelEntry]

    @property
    def counts(self) -> dict[str, int]:
        return {entry.spec.label: entry.rows for entry in self.models}

    @property
    def stored_bytes(self) -> int:
        """Stored bytes of every chunk the backup names, shared or not (of a delta, its
        own bytes only: the manifest does not know the sizes of the bases)."""
        return sum(ref.size for entry in self.models for ref in entry.chunks)

    def chunk_ids(self) -> dict[str, frozenset[bytes]]:
        return {
            entry.spec.label: frozenset(ref.id for ref in entry.chunks) for entry in self.models
        }

    def objects_in_order(self) -> Iterator[bytes]:
        """Every stored object the backup needs, each chunk followed by its bases, in the
        manifest's order (the order a backup of the same data meets them)."""
        for entry in self.models:
            for ref in entry.chunks:
                yield ref.id
                yield from ref.needs

    def object_ids(self) -> set[bytes]:
        """Every stored object the backup needs: its chunks and the bases of their deltas."""
        return {
            object_id
            for entry in self.models
            for ref in entry.chunks
            for object_id in (ref.id, *ref.needs)
        }

    def to_record(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": MANIFEST_VERSION,
            "meta": self.meta,
            "chunk_key": {"key_id": self.key_id, "check": self.key_check},
            "models": [
                {
                    "model": entry.spec.to_header(),
                    "rows": entry.rows,
                    "chunks": [ref.to_record() for ref in entry.chunks],
                }
                for entry in self.models
            ],
        }


class ChunkNamer:
    """The keyed hash that names chunks: equal plaintexts, equal names, under one key."""

    def __init__(self, key: bytes):
        self._key = key

    @classmethod
    def for_key_id(cls, key_id: int) -> ChunkNamer:
        return cls(keys.chunk_id_key(key_id))

    def name(self, plaintext: bytes) -> bytes:
        return hashlib.blake2b(plaintext, key=self._key, digest_size=ID_BYTES).digest()

    @property
    def check(self) -> str:
        # Recorded in the manifest so a reader knows whether its key named these chunks;
        # it says nothing about the key itself.
        return hashlib.blake2b(_KEY_CHECK_INPUT, key=self._key, digest_size=8).hexdigest()


class _Sink(io.RawIOBase):
    """Collects what the encrypting stream writes; survives the stream closing it."""

    def __init__(self):
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.data += data
        return len(data)


def seal(aead, plaintext: bytes, associated_data: bytes) -> bytes:
    sink = _Sink()
    with aead.new_encrypting_stream(sink, associated_data) as encrypted:
        encrypted.write(plaintext)
    return bytes(sink.data)


def unseal(aead, ciphertext: bytes, associated_data: bytes) -> bytes:
    """Raises tink.TinkError when the ciphertext was altered, truncated or is foreign."""
    with aead.new_decrypting_stream(io.BytesIO(ciphertext), associated_data) as decrypted:
        return decrypted.read()


# --- stored objects: chunks in full, and deltas ---------------------------------------


class ObjectDamaged(Exception):
    """A stored object that cannot be read: which one, and what is wrong with it."""

    def __init__(self, chunk_hex: str, problem: str):
        super().__init__(f"{chunk_hex} {problem}")
        self.chunk_hex = chunk_hex
        self.problem = problem


_CANNOT_DECRYPT = (
    "cannot be decrypted: it was altered or truncated, swapped for another chunk, or its "
    "key is not in the keyset"
)
# Far past MAX_CHAIN: only a loop (which the writer cannot make) would reach it.
_READ_CHAIN_LIMIT = 64


@dataclass
class ObjectRead:
    label: str
    rows: list[list]
    plaintext: bytes | None  # the stored plaintext, for a chunk stored in full
    bases: tuple[bytes, ...]  # the bases read to rebuild a delta, nearest first
    # (chunk hex, its stamp taken before reading ("" unless asked), stored bytes) of
    # every object read, this one first.
    objects: list[tuple[str, str, bytes]]


class StoredObjects:
    """Reads what is stored under chunk names back into rows, rebuilding deltas from their
    bases. Checks each object's encryption (its name as associated data), not its name:
    that is the caller's, on the rows it was given."""

    def __init__(self, chunks: ChunkStore, aead):
        self._chunks = chunks
        self._aead = aead
        self._decompressor = zstandard.ZstdDecompressor()

    def _payload(self, chunk_hex: str, stamps: bool) -> tuple[bytes, str, bytes]:
        try:
            # The stamp before the bytes: a file replaced in between then looks changed.
            stamp = self._chunks.stamp(chunk_hex) if stamps else ""
            stored = self._chunks.get(chunk_hex)
        except FileNotFoundError:
            raise ObjectDamaged(chunk_hex, "is missing") from None
        try:
            return unseal(self._aead, stored, chunk_hex.encode("ascii")), stamp, stored
        except tink.TinkError as exc:
            raise ObjectDamaged(chunk_hex, _CANNOT_DECRYPT) from exc

    def _delta(self, chunk_hex: str, payload: bytes) -> list:
        try:
            record = codec.unpack(self._decompressor.decompress(payload[len(DELTA_MAGIC) :]))
            version, needs, removed, patched, inserted = record
        except (zstandard.ZstdError, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ObjectDamaged(chunk_hex, "cannot be decoded") from exc
        if (
            version != DELTA_VERSION
            or not isinstance(needs, list)
            or not needs
            or not all(isinstance(i, bytes) and len(i) == ID_BYTES for i in needs)
            or not isinstance(removed, list)
            or not isinstance(patched, list)
            or not isinstance(inserted, list)
        ):
            raise ObjectDamaged(chunk_hex, "cannot be decoded")
        return record

    def needs_of(self, chunk_id: bytes) -> tuple[bytes, ...] | None:
        """The bases the stored object says it needs (() when stored in full), read from
        its header; None when it cannot be read."""
        chunk_hex = chunk_id.hex()
        try:
            payload, _stamp, _stored = self._payload(chunk_hex, False)
            if not payload.startswith(DELTA_MAGIC):
                return ()
            return tuple(self._delta(chunk_hex, payload)[1])
        except ObjectDamaged:
            return None

    def read(self, chunk_id: bytes, *, stamps: bool = False) -> ObjectRead:
        """Raises ObjectDamaged naming the object (this one or a base) that failed."""
        objects: list[tuple[str, str, bytes]] = []
        label, rows, plaintext, bases = self._read(chunk_id, stamps, objects, ())
        return ObjectRead(label, rows, plaintext, bases, objects)

    def _read(self, chunk_id: bytes, stamps: bool, objects: list, chain: tuple) -> tuple:
        chunk_hex = chunk_id.hex()
        if len(chain) > _READ_CHAIN_LIMIT or chunk_id in chain:
            raise ObjectDamaged(chunk_hex, "is a delta whose bases make a loop")
        payload, stamp, stored = self._payload(chunk_hex, stamps)
        objects.append((chunk_hex, stamp, stored))
        if not payload.startswith(DELTA_MAGIC):
            try:
                plaintext = self._decompressor.decompress(payload)
            except zstandard.ZstdError as exc:
                raise ObjectDamaged(chunk_hex, "cannot be decompressed") from exc
            try:
                label, rows = layout.decode_chunk(plaintext)
            except ValueError as exc:
                raise ObjectDamaged(chunk_hex, "cannot be decoded") from exc
            return label, rows, plaintext, ()
        _version, needs, removed, patched, inserted = self._delta(chunk_hex, payload)
        label, base_rows, _plaintext, base_bases = self._read(
            needs[0], stamps, objects, (*chain, chunk_id)
        )
        try:
            rows = apply_delta(base_rows, removed, patched, inserted)
        except (ValueError, TypeError, IndexError) as exc:
            raise ObjectDamaged(chunk_hex, "cannot be decoded") from exc
        return label, rows, None, (needs[0], *base_bases)

    def plaintext(self, chunk_id: bytes) -> bytes:
        """The chunk's plaintext, rebuilt from its bases for a delta."""
        read = self.read(chunk_id)
        return (
            read.plaintext
            if read.plaintext is not None
            else layout.encode_chunk(read.label, read.rows)
        )


# --- writing -------------------------------------------------------------------------


@dataclass
class WriteResult:
    manifest: Manifest
    chunks_written: int = 0
    bytes_written: int = 0  # chunk bytes only; the manifest is the caller's to count
    # Of chunks_written, those that replaced a stored copy found damaged...
    chunks_rewritten: int = 0
    # ...and those stored as a delta over a chunk of the previous backup.
    deltas_written: int = 0


def _estimated_size(row: list, pack: Callable[[object], bytes]) -> int:
    """About the packed size of a row, at half the cost of packing it: a word a value,
    plus the length of strings and bytes and the packed size of containers (JSON,
    many-to-many pks). Exact types only: the estimate need not be exact, only the same
    for the same row."""
    size = 9 * len(row)
    for value in row:
        kind = value.__class__
        if kind is str or kind is bytes:
            size += len(value)
        elif kind is list or kind is dict:
            size += len(pack(value))
    return size


def key_boundary_bits(packed_key: bytes) -> int:
    """The bits of a packed primary key's digest that are all zero where a chunk may end
    after its row. crc32: cheap, and stable across processes."""
    return (((zlib.crc32(packed_key) * _KEY_MIX) & 0xFFFFFFFF) >> 24) & BOUNDARY_MASK


def _cut(rows: Iterable[list], spec: ModelSpec, packer: msgpack.Packer) -> Iterator[list[list]]:
    """The rows of each chunk of `rows`, as soon as it is complete."""
    width = len(spec.columns)
    pack = packer.pack
    boundary_bits = key_boundary_bits
    batch: list[list] = []
    size = 0
    for row in rows:
        if len(row) != width:
            raise ValueError(f"A {spec.label} row has {len(row)} values for {width} columns")
        batch.append(row)
        size += _estimated_size(row, pack)
        count = len(batch)
        if size >= MAX_BYTES or (
            count >= MIN_ROWS and (count >= MAX_ROWS or not boundary_bits(pack(row[0])))
        ):
            yield batch
            batch = []
            size = 0
    if batch:
        yield batch


def _chunks_of(section: Section, packer: msgpack.Packer) -> Iterator[tuple[bytes, list[list]]]:
    """(plaintext, rows) of each chunk of the section, as every writer cuts them."""
    label = section.spec.label
    for batch in _cut(section.rows, section.spec, packer):
        yield layout.encode_chunk(label, batch), batch


def apply_delta(base_rows: list[list], removed: list, patched: list, inserted: list) -> list[list]:
    """The rows a delta describes: the base's, less the `removed` pks, with the columns of
    each [pk, [column, value, ...]] of `patched` set, and each [index, row] of `inserted`
    put at its index. Raises TypeError, ValueError or IndexError on a malformed delta."""
    gone = set(removed)
    patches = {pk: patch for pk, patch in patched}
    rows = []
    for row in base_rows:
        pk = row[0]
        if pk in gone:
            continue
        patch = patches.get(pk)
        if patch is not None:
            row = list(row)
            for position in range(0, len(patch), 2):
                row[patch[position]] = patch[position + 1]
        rows.append(row)
    for index, row in inserted:
        if not isinstance(index, int) or not 0 <= index <= len(rows):
            raise ValueError("a delta row out of place")
        rows.insert(index, row)
    return rows


def _changes(base_rows: list[list], rows: list[list]) -> tuple[list, list, list] | None:
    """(removed pks, patched, inserted) that turn base_rows into rows (see apply_delta),
    or None when more than DELTA_MAX_CHANGED of the rows differ, or pks cannot be hashed."""
    limit = int(len(rows) * DELTA_MAX_CHANGED)
    try:
        base = {row[0]: row for row in base_rows}
        if len(base) != len(base_rows):
            return None
        kept = set()
        patched = []
        inserted = []
        for index, row in enumerate(rows):
            pk = row[0]
            old = base.get(pk)
            if old is None:
                inserted.append([index, row])
            else:
                kept.add(pk)
                if old != row:
                    patch = []
                    for column, (before, after) in enumerate(zip(old, row, strict=True)):
                        if before != after:
                            patch += (column, after)
                    patched.append([pk, patch])
            if len(inserted) + len(patched) > limit:
                return None
        removed = [pk for pk in base if pk not in kept]
    except (TypeError, ValueError):
        return None
    if len(removed) > limit:
        return None
    return removed, patched, inserted


@dataclass
class _Base:
    ref: ChunkRef
    rows: list[list]
    needs: tuple[bytes, ...]  # of a delta over it: this base and its own bases


class _Bases:
    """The previous backup's chunks of one model, walked in primary-key order alongside
    the new ones: the base offered for a new chunk is the first previous chunk not yet
    passed that reaches its keys. Cut points depend on the keys only, so after updates
    it covers exactly the same keys."""

    def __init__(self, refs: list[ChunkRef], objects: StoredObjects):
        self._refs = refs
        self._objects = objects
        self._position = {ref.id: index for index, ref in enumerate(refs)}
        self._next = 0
        self._read: tuple[int, _Base | None] | None = None

    def passed(self, chunk_id: bytes) -> None:
        """The new backup names this chunk as it is: the walk resumes after it."""
        index = self._position.get(chunk_id)
        if index is not None and index >= self._next:
            self._next = index + 1

    def _at(self, index: int) -> _Base | None:
        if self._read is None or self._read[0] != index:
            ref = self._refs[index]
            try:
                read = self._objects.read(ref.id)
                base = _Base(ref, read.rows, (ref.id, *read.bases))
            except ObjectDamaged:
                base = None  # a damaged base only means the chunk is written in full
            self._read = (index, base)
        return self._read[1]

    def base_for(self, rows: list[list]) -> _Base | None:
        first, last = rows[0][0], rows[-1][0]
        while self._next < len(self._refs):
            base = self._at(self._next)
            if base is None or not base.rows:
                self._next += 1
                return None
            try:
                if base.rows[-1][0] < first:  # its keys are all gone: try the next one
                    self._next += 1
                    continue
                if not base.rows[-1][0] > last:  # nothing of it is left for a later chunk
                    self._next += 1
            except TypeError:
                self._next += 1
                return None
            return base
        return None


class _DeltaWriter:
    def __init__(self, compressor: zstandard.ZstdCompressor, packer: msgpack.Packer):
        self._compressor = compressor
        self._packer = packer

    def payload(self, label: str, plaintext: bytes, rows: list[list], base: _Base) -> bytes | None:
        """The delta object's payload over `base`, once rebuilt exactly as a reader will
        rebuild it; None when the chunk is better (or only) stored in full."""
        if len(base.needs) > MAX_CHAIN:
            return None
        changes = _changes(base.rows, rows)
        if changes is None:
            return None
        packed = self._packer.pack([DELTA_VERSION, list(base.needs), *changes])
        try:
            _version, _needs, removed, patched, inserted = codec.unpack(packed)
            rebuilt = layout.encode_chunk(label, apply_delta(base.rows, removed, patched, inserted))
        except (ValueError, TypeError, IndexError):
            return None
        if rebuilt != plaintext:
            return None
        return DELTA_MAGIC + self._compressor.compress(packed)


def write_chunks(
    chunks: ChunkStore,
    *,
    aead,
    key_id: int,
    meta: dict,
    sections: Iterable[Section],
    reuse: ReuseCheck | None = None,
    parent: Manifest | None = None,
) -> WriteResult:
    """Cuts, names and stores the snapshot's chunks as they come; returns the manifest.

    A chunk the store already holds is not compressed, encrypted or written again when
    `reuse` says its stored copy is good (without `reuse`, whenever it exists); its stored
    size and bases come from `parent` (the previous backup's manifest) or, failing that,
    the store. A
    stored copy `reuse` refuses is replaced by the one sealed from these rows: the next
    backup heals a damaged chunk whose rows are still live.
    A new chunk is stored as a delta over the chunk of `parent` (the previous backup's
    manifest, same chunk-naming key) over the same keys, when that is much smaller.
    Whatever the sections iterator raises propagates; chunks stored until then stay for
    the garbage collector, and no manifest names them.
    """
    namer = ChunkNamer.for_key_id(key_id)
    objects = StoredObjects(chunks, aead)
    known: dict[bytes, ChunkRef] = {}
    parent_models: dict[str, ModelEntry] = {}
    same_key = False
    if parent is not None:
        known = {ref.id: ref for entry in parent.models for ref in entry.chunks}
        same_key = parent.key_id == key_id and parent.key_check == namer.check
        if same_key:
            parent_models = {entry.spec.label: entry for entry in parent.models}
    report = progress.current()
    compressor = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL)
    packer = codec.new_packer()
    deltas = _DeltaWriter(compressor, packer)
    result = WriteResult(Manifest(meta=meta, key_id=key_id, key_check=namer.check, models=[]))
    for section in sections:
        spec = section.spec
        if spec.label in result.manifest.counts:
            raise ValueError(f"Model {spec.label} appears twice in the snapshot")
        entry = ModelEntry(spec)
        result.manifest.models.append(entry)
        previous = parent_models.get(spec.label)
        bases = (
            _Bases(previous.chunks, objects)
            if previous is not None and previous.spec == spec
            else None
        )
        for plaintext, rows in _chunks_of(section, packer):
            chunk_id = namer.name(plaintext)
            chunk_hex = chunk_id.hex()
            held = chunks.holds(chunk_hex)
            needs: tuple[bytes, ...] | None = ()
            known_ref = known.get(chunk_id)
            if held:
                needs = known_ref.needs if same_key and known_ref is not None else None
                if needs is None:
                    needs = objects.needs_of(chunk_id)  # None: unreadable, so written again
            if (
                held
                and needs is not None
                and (reuse is None or reuse.reusable(chunk_hex, plaintext, needs))
            ):
                size = known_ref.size if known_ref is not None else chunks.size(chunk_hex)
                if bases is not None:
                    bases.passed(chunk_id)
            else:
                payload = None
                needs = ()
                full = compressor.compress(plaintext)
                if not held and bases is not None:
                    # A damaged stored copy is always replaced in full (healing).
                    base = bases.base_for(rows)
                    if base is not None:
                        delta = deltas.payload(spec.label, plaintext, rows, base)
                        # Worth a link in a chain only when well under the chunk itself.
                        if delta is not None and len(delta) * DELTA_MAX_SIZE <= len(full):
                            payload, needs = delta, base.needs
                if payload is None:
                    payload = full
                stored = seal(aead, payload, chunk_hex.encode("ascii"))
                if held:
                    chunks.replace(chunk_hex, stored)
                    result.chunks_rewritten += 1
                else:
                    chunks.put(chunk_hex, stored)
                if reuse is not None:
                    reuse.written(chunk_hex, stored)
                size = len(stored)
                result.chunks_written += 1
                result.bytes_written += size
                if needs:
                    result.deltas_written += 1
            entry.chunks.append(ChunkRef(chunk_id, len(rows), size, needs))
            entry.rows += len(rows)
            report.advance(len(rows), size)
    return result


def find_chunks(
    sections: Iterable[Section], wanted: Mapping[int, Collection[bytes]]
) -> Iterator[tuple[bytes, bytes]]:
    """(id, plaintext) of each chunk the sections cut into, as a backup would cut them,
    whose name under one of `wanted`'s chunk-naming key ids is among that key's ids.

    `wanted` is read as the chunks come, so a caller that removes what it found can stop
    once nothing is left.
    """
    namers = [(ChunkNamer.for_key_id(key_id), ids) for key_id, ids in wanted.items()]
    packer = codec.new_packer()
    for section in sections:
        for plaintext, _rows in _chunks_of(section, packer):
            for namer, ids in namers:
                chunk_id = namer.name(plaintext)
                if chunk_id in ids:
                    yield chunk_id, plaintext


def write_manifest(destination, *, aead, associated_data: bytes, manifest: Manifest) -> None:
    plaintext = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL).compress(
        codec.new_packer().pack(manifest.to_record())
    )
    destination.write(seal(aead, plaintext, associated_data))


# --- reading -------------------------------------------------------------------------


def _manifest_corrupt(backup_id: str, problem: str) -> ArchiveCorrupt:
    return ArchiveCorrupt(f"Manifest of backup {backup_id} {problem}")


def read_manifest(data: bytes, *, aead, associated_data: bytes, backup_id: str) -> Manifest:
    """Decrypts and checks a manifest; raises ArchiveCorrupt naming the backup."""
    try:
        plaintext = zstandard.ZstdDecompressor().decompress(unseal(aead, data, associated_data))
    except tink.TinkError as exc:
        raise _manifest_corrupt(
            backup_id,
            "cannot be decrypted: it was altered or truncated, belongs to another backup, "
            "or its key is not in the keyset",
        ) from exc
    except zstandard.ZstdError as exc:
        raise _manifest_corrupt(backup_id, "cannot be decompressed") from exc
    try:
        record = codec.unpack(plaintext)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _manifest_corrupt(backup_id, "cannot be decoded") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise _manifest_corrupt(backup_id, "is not a failsafe manifest")
    if record.get("version") not in READABLE_VERSIONS:
        raise _manifest_corrupt(
            backup_id,
            f"has format version {record.get('version')!r}, this reader knows "
            f"{' and '.join(map(str, READABLE_VERSIONS))}",
        )
    try:
        return _manifest_from_record(record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _manifest_corrupt(backup_id, f"is malformed: {exc}") from None


def _manifest_from_record(record: dict) -> Manifest:
    meta = record["meta"]
    if not isinstance(meta, dict):
        raise ValueError("no metadata")
    models = []
    labels = set()
    for model in record["models"]:
        spec = ModelSpec.from_header(model["model"])
        if spec.label in labels:
            raise ValueError(f"{spec.label} listed twice")
        labels.add(spec.label)
        refs = [ChunkRef.from_record(ref) for ref in model["chunks"]]
        for ref in refs:
            if not isinstance(ref.id, bytes) or len(ref.id) != ID_BYTES or ref.rows < 1:
                raise ValueError(f"a bad chunk entry for {spec.label}")
        if sum(ref.rows for ref in refs) != model["rows"]:
            raise ValueError(f"chunk row counts of {spec.label} do not add up")
        models.append(ModelEntry(spec, model["rows"], refs))
    chunk_key = record["chunk_key"]
    return Manifest(
        meta=meta, key_id=int(chunk_key["key_id"]), key_check=str(chunk_key["check"]), models=models
    )


_NO_ROW = object()


class ChunkedReader:
    """Streams a format-2 backup as sections, one decoded chunk (and the bases of its
    delta) in memory at a time.

    Every chunk read is decrypted (its name as associated data), decompressed, rebuilt from
    its bases when stored as a delta, named again with the keyed hash and checked against
    its manifest entry; any problem raises ArchiveCorrupt naming the backup, the model and
    the chunk (and the base, when that is what is damaged).
    """

    format_version = FORMAT_VERSION

    def __init__(self, manifest: Manifest, *, chunks: ChunkStore, aead, backup_id: str):
        self.manifest = manifest
        self.meta: dict = manifest.meta
        self._chunks = chunks
        self._aead = aead
        self._backup_id = backup_id
        self._objects = StoredObjects(chunks, aead)
        self._started = False
        # When FAILSAFE_CHUNK_KEY or SECRET_KEY changed since the backup, today's key
        # cannot re-derive the names; the AEAD still binds each chunk to its name.
        namer = ChunkNamer.for_key_id(manifest.key_id)
        self._namer = namer if hmac.compare_digest(namer.check, manifest.key_check) else None
        # The manifest's per-model row counts, once sections() has been read to the end.
        self.counts: dict[str, int] | None = None
        self.chunks_read = 0
        self.chunks_skipped = 0
        # Told (chunk hex, its stamp taken before reading, the stored bytes) of every chunk
        # that passed every check: a verification refreshes the chunk index with it.
        self.on_good_chunk: Callable[[str, str, bytes], None] | None = None
        # The chunk whose own check failed, if one did: verification forgets it.
        self.failed_chunk: str | None = None

    def close(self) -> None:
        """Nothing stays open between chunks; here for the SnapshotReader interface."""

    def chunk_ids(self) -> dict[str, frozenset[bytes]]:
        return self.manifest.chunk_ids()

    def _corrupt(self, problem: str) -> ArchiveCorrupt:
        return ArchiveCorrupt(f"Archive of backup {self._backup_id} {problem}")

    def sections(
        self, *, skip_chunks: Mapping[str, Collection[bytes]] | None = None
    ) -> Iterator[Section]:
        """Each model's section in order; rows of chunks in `skip_chunks[label]` are left
        out (a compare passes the chunks both of its backups hold)."""
        if self._started:
            raise RuntimeError("An archive's sections can be read only once")
        self._started = True
        skip_chunks = skip_chunks or {}
        for entry in self.manifest.models:
            yield Section(entry.spec, self._rows(entry, skip_chunks.get(entry.spec.label, ())))
        self.counts = self.manifest.counts

    def _rows(self, entry: ModelEntry, skip: Collection[bytes]) -> Iterator[list]:
        last_pk = _NO_ROW
        report = progress.current()
        for ref in entry.chunks:
            if ref.id in skip:
                self.chunks_skipped += 1
                report.advance(ref.rows)
                continue
            rows = self.read_chunk(entry.spec, ref)
            report.advance(ref.rows, ref.size)
            try:
                in_order = last_pk is _NO_ROW or last_pk < rows[0][0]
            except TypeError:
                in_order = False
            if not in_order:
                raise self._corrupt(
                    f"has chunk {ref.id.hex()} of {entry.spec.label} out of primary-key order"
                )
            last_pk = rows[-1][0]
            yield from rows

    def read_chunk(self, spec: ModelSpec, ref: ChunkRef) -> list[list]:
        """The chunk's rows, checked; raises ArchiveCorrupt (and sets failed_chunk to the
        stored object found damaged: the chunk's own, or a base of its delta)."""
        chunk_hex = ref.id.hex()
        where = f"chunk {chunk_hex} of {spec.label}"
        try:
            read = self._objects.read(ref.id, stamps=self.on_good_chunk is not None)
        except ObjectDamaged as exc:
            self.failed_chunk = exc.chunk_hex
            if exc.chunk_hex != chunk_hex:
                problem = f"has {where} whose base chunk {exc.chunk_hex} {exc.problem}"
            elif exc.problem == "is missing":
                problem = f"is missing {where}"
            else:
                problem = f"has {where} that {exc.problem}"
            raise self._corrupt(problem) from exc
        try:
            rows = self._checked_rows(spec, ref, read, where)
        except ArchiveCorrupt:
            self.failed_chunk = chunk_hex
            raise
        self.chunks_read += 1
        if self.on_good_chunk is not None:
            for object_hex, stamp, stored in read.objects:
                self.on_good_chunk(object_hex, stamp, stored)
        return rows

    def _checked_rows(self, spec: ModelSpec, ref: ChunkRef, read: ObjectRead, where: str):
        if self._namer is not None:
            plaintext = read.plaintext
            if plaintext is None:
                plaintext = layout.encode_chunk(read.label, read.rows)
            if not hmac.compare_digest(self._namer.name(plaintext), ref.id):
                raise self._corrupt(f"has {where} whose content does not match its name")
        rows = read.rows
        width = len(spec.columns)
        if (
            read.label != spec.label
            or not isinstance(rows, list)
            or len(rows) != ref.rows
            or not all(isinstance(row, list) and len(row) == width for row in rows)
        ):
            raise self._corrupt(f"has {where} holding other rows than its manifest says")
        return rows
