"""Format 2: a snapshot as content-defined chunks of rows, each stored once, and a manifest.

Each model's rows, in primary-key order, are cut into chunks after rows whose own digest
has its low bits zero (about one row in 256, past a minimum of MIN_ROWS), so cut points
follow the rows rather than their positions: an insert, update or delete changes the chunk
around it and at most its neighbour, and every other chunk comes out byte for byte the same.

A chunk's plaintext (layout.py) holds its model label and rows, readable on its own. It is
named by a keyed hash of that plaintext (keys.chunk_id_key), compressed with zstd, encrypted with
the Tink streaming AEAD with its name as associated data (so a chunk file swapped for another
does not decrypt) and stored once, however many backups hold it (files.ChunkFiles). Being
shared, a stored chunk is reused only once vouched for, and a damaged one is sealed again
from the same rows under the same name (healing.py).

A backup is its manifest, stored as `<backup id>.manifest`, compressed and encrypted the
same way with the backup id as associated data:

    {"format": FORMAT_NAME, "version": 2, "meta": {...},
     "chunk_key": {"key_id": primary Tink key id, "check": fingerprint of the id key},
     "models": [{"model": ModelSpec.to_header(), "rows": n,
                 "chunks": [[id (32 bytes), rows, stored bytes], ...]}, ...]}

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
FORMAT_VERSION = 2
SUFFIX = ".manifest"

# Chunk boundaries: never before MIN_ROWS rows (tiny chunks cost a file and a manifest
# entry each), then after a row whose digest has its low 8 bits zero, so about 64 + 256
# rows a chunk, and always at MAX_ROWS rows or MAX_BYTES of rows, so an unlucky run of
# digests or a table of huge JSON values cannot make one chunk that must sit in memory.
MIN_ROWS = 64
MAX_ROWS = 2048
MAX_BYTES = 4 * 1024 * 1024
BOUNDARY_MASK = 0xFF

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
    (healing.StoredChunkCheck: recently verified, or read and found good)."""

    def reusable(self, chunk_hex: str, plaintext: bytes) -> bool: ...
    def written(self, chunk_hex: str, stored: bytes) -> None: ...


class ChunkRef(NamedTuple):
    """One manifest entry: which chunk, how many rows it holds, its stored size."""

    id: bytes
    rows: int
    size: int


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
        """Bytes of every chunk the backup references, shared or not."""
        return sum(ref.size for entry in self.models for ref in entry.chunks)

    def chunk_ids(self) -> dict[str, frozenset[bytes]]:
        return {
            entry.spec.label: frozenset(ref.id for ref in entry.chunks) for entry in self.models
        }

    def to_record(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "meta": self.meta,
            "chunk_key": {"key_id": self.key_id, "check": self.key_check},
            "models": [
                {
                    "model": entry.spec.to_header(),
                    "rows": entry.rows,
                    "chunks": [list(ref) for ref in entry.chunks],
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


# --- writing -------------------------------------------------------------------------


@dataclass
class WriteResult:
    manifest: Manifest
    chunks_written: int = 0
    bytes_written: int = 0  # chunk bytes only; the manifest is the caller's to count
    # Of chunks_written, those that replaced a stored copy found damaged.
    chunks_rewritten: int = 0


def _cut(rows: Iterable[list], spec: ModelSpec, packer: msgpack.Packer) -> Iterator[list[list]]:
    """The rows of each chunk of `rows`, as soon as it is complete."""
    width = len(spec.columns)
    pack = packer.pack
    digest = zlib.crc32  # cheap, stable across processes; only the cut points depend on it
    batch: list[list] = []
    size = 0
    for row in rows:
        if len(row) != width:
            raise ValueError(f"A {spec.label} row has {len(row)} values for {width} columns")
        packed = pack(row)
        batch.append(row)
        size += len(packed)
        count = len(batch)
        if size >= MAX_BYTES or (
            count >= MIN_ROWS and (count >= MAX_ROWS or not digest(packed) & BOUNDARY_MASK)
        ):
            yield batch
            batch = []
            size = 0
    if batch:
        yield batch


def _plaintexts(section: Section, packer: msgpack.Packer) -> Iterator[tuple[bytes, int]]:
    """(plaintext, row count) of each chunk of the section, as every writer cuts them."""
    label = section.spec.label
    for batch in _cut(section.rows, section.spec, packer):
        yield layout.encode_chunk(label, batch), len(batch)


def write_chunks(
    chunks: ChunkStore,
    *,
    aead,
    key_id: int,
    meta: dict,
    sections: Iterable[Section],
    known_sizes: Mapping[bytes, int] | None = None,
    reuse: ReuseCheck | None = None,
) -> WriteResult:
    """Cuts, names and stores the snapshot's chunks as they come; returns the manifest.

    A chunk the store already holds is not compressed, encrypted or written again when
    `reuse` says its stored copy is good (without `reuse`, whenever it exists); its stored
    size comes from `known_sizes` (an earlier manifest) or, failing that, the store. A
    stored copy `reuse` refuses is replaced by the one sealed from these rows: the next
    backup heals a damaged chunk whose rows are still live.
    Whatever the sections iterator raises propagates; chunks stored until then stay for
    the garbage collector, and no manifest names them.
    """
    namer = ChunkNamer.for_key_id(key_id)
    known_sizes = known_sizes or {}
    report = progress.current()
    compressor = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL)
    packer = codec.new_packer()
    result = WriteResult(Manifest(meta=meta, key_id=key_id, key_check=namer.check, models=[]))
    for section in sections:
        spec = section.spec
        if spec.label in result.manifest.counts:
            raise ValueError(f"Model {spec.label} appears twice in the snapshot")
        entry = ModelEntry(spec)
        result.manifest.models.append(entry)
        for plaintext, row_count in _plaintexts(section, packer):
            chunk_id = namer.name(plaintext)
            chunk_hex = chunk_id.hex()
            held = chunks.holds(chunk_hex)
            if held and (reuse is None or reuse.reusable(chunk_hex, plaintext)):
                size = known_sizes.get(chunk_id)
                if size is None:
                    size = chunks.size(chunk_hex)
            else:
                stored = seal(aead, compressor.compress(plaintext), chunk_hex.encode("ascii"))
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
            entry.chunks.append(ChunkRef(chunk_id, row_count, size))
            entry.rows += row_count
            report.advance(row_count, size)
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
        for plaintext, _row_count in _plaintexts(section, packer):
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
    if record.get("version") != FORMAT_VERSION:
        raise _manifest_corrupt(
            backup_id,
            f"has format version {record.get('version')!r}, this reader knows {FORMAT_VERSION}",
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
        refs = [ChunkRef(*ref) for ref in model["chunks"]]
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
    """Streams a format-2 backup as sections, one decoded chunk in memory at a time.

    Every chunk read is decrypted (its name as associated data), decompressed, named again
    with the keyed hash and checked against its manifest entry; any problem raises
    ArchiveCorrupt naming the backup, the model and the chunk.
    """

    format_version = FORMAT_VERSION

    def __init__(self, manifest: Manifest, *, chunks: ChunkStore, aead, backup_id: str):
        self.manifest = manifest
        self.meta: dict = manifest.meta
        self._chunks = chunks
        self._aead = aead
        self._backup_id = backup_id
        self._decompressor = zstandard.ZstdDecompressor()
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
        """The chunk's rows, checked; raises ArchiveCorrupt (and sets failed_chunk)."""
        chunk_hex = ref.id.hex()
        try:
            rows, stamp, stored = self._checked_chunk(spec, ref, chunk_hex)
        except ArchiveCorrupt:
            self.failed_chunk = chunk_hex
            raise
        self.chunks_read += 1
        if self.on_good_chunk is not None:
            self.on_good_chunk(chunk_hex, stamp, stored)
        return rows

    def _checked_chunk(
        self, spec: ModelSpec, ref: ChunkRef, chunk_hex: str
    ) -> tuple[list[list], str, bytes]:
        where = f"chunk {chunk_hex} of {spec.label}"
        try:
            # The stamp before the bytes: a file replaced in between then looks changed.
            stamp = self._chunks.stamp(chunk_hex) if self.on_good_chunk is not None else ""
            stored = self._chunks.get(chunk_hex)
        except FileNotFoundError:
            raise self._corrupt(f"is missing {where}") from None
        try:
            compressed = unseal(self._aead, stored, chunk_hex.encode("ascii"))
        except tink.TinkError as exc:
            raise self._corrupt(
                f"has {where} that cannot be decrypted: it was altered or truncated, swapped "
                "for another chunk, or its key is not in the keyset"
            ) from exc
        try:
            plaintext = self._decompressor.decompress(compressed)
        except zstandard.ZstdError as exc:
            raise self._corrupt(f"has {where} that cannot be decompressed") from exc
        if self._namer is not None and not hmac.compare_digest(self._namer.name(plaintext), ref.id):
            raise self._corrupt(f"has {where} whose content does not match its name")
        try:
            label, rows = layout.decode_chunk(plaintext)
        except ValueError as exc:
            raise self._corrupt(f"has {where} that cannot be decoded") from exc
        width = len(spec.columns)
        if (
            label != spec.label
            or not isinstance(rows, list)
            or len(rows) != ref.rows
            or not all(isinstance(row, list) and len(row) == width for row in rows)
        ):
            raise self._corrupt(f"has {where} holding other rows than its manifest says")
        return rows, stamp, stored
