"""Format 1: a whole snapshot as one encrypted, compressed stream of msgpack records.

Layers, outside in: Tink streaming AEAD (AES256-GCM-HKDF, 1 MB segments, the backup id as
associated data) over one zstd frame over a sequence of msgpack objects:

    {"format": FORMAT_NAME, "version": 1, "meta": {...}}     header
    {"section": ModelSpec.to_header()}                       one per captured model
    [value, ..., [m2m pks], ...]                             its rows, one array each
    {"end": label, "rows": n}                                section end marker
    {"trailer": {"counts": {label: n, ...}}}                 last object of the stream

Rows are the only arrays and control records the only maps, so a record's type says what
it is without a tag on every row. Tink already rejects a truncated or altered stream; the
end markers and trailer are the format's own check that a reader saw everything a writer
wrote, and are what a missing tail looks like if a bug ever produced one.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import BinaryIO

import msgpack
import tink
import zstandard

from .. import progress
from ..exceptions import ArchiveCorrupt
from ..snapshot import ModelSpec, Section
from . import codec

FORMAT_NAME = "raos-failsafe-archive"
FORMAT_VERSION = 1
SUFFIX = ".rfs"

# Packed records are batched before compression; one write per row would cost more in
# call overhead than the compression itself.
WRITE_BATCH = 256 * 1024
# Rows read between two advances of the progress display.
PROGRESS_ROWS = 1024

_END_OF_STREAM = object()


class _KeepOpen(io.RawIOBase):
    """Lets the encrypting stream "close" its destination without closing the real file."""

    def __init__(self, destination):
        super().__init__()
        self._destination = destination
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._destination.write(data)
        self.size += len(data)
        return len(data)


def write_snapshot(
    destination,
    *,
    aead,
    associated_data: bytes,
    meta: dict,
    sections: Iterable[Section],
) -> dict[str, int]:
    """Encrypts a snapshot into `destination` (anything with write()); returns row counts.

    Rows are packed and written as they come, so memory does not grow with the snapshot.
    `destination` is left open. Whatever the sections iterator raises propagates; the
    caller throws away what was written.
    """
    packer = codec.new_packer()
    batch = bytearray()
    counts: dict[str, int] = {}
    sink = _KeepOpen(destination)
    report = progress.current()
    reported = {"rows": 0, "bytes": 0}
    row_count = 0  # of the section being written

    def report_progress() -> None:
        rows = sum(counts.values()) + row_count
        report.advance(rows - reported["rows"], sink.size - reported["bytes"])
        reported.update(rows=rows, bytes=sink.size)

    encrypted = aead.new_encrypting_stream(sink, associated_data)
    with encrypted:
        compressor = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL)
        with compressor.stream_writer(encrypted, closefd=False) as compressed:

            def emit(record) -> None:
                batch.extend(packer.pack(record))
                if len(batch) >= WRITE_BATCH:
                    compressed.write(batch)
                    batch.clear()
                    report_progress()

            emit({"format": FORMAT_NAME, "version": FORMAT_VERSION, "meta": meta})
            for section in sections:
                spec = section.spec
                if spec.label in counts:
                    raise ValueError(f"Model {spec.label} appears twice in the snapshot")
                width = len(spec.columns)
                emit({"section": spec.to_header()})
                row_count = 0
                for row in section.rows:
                    if len(row) != width:
                        raise ValueError(
                            f"A {spec.label} row has {len(row)} values for {width} columns"
                        )
                    emit(row)
                    row_count += 1
                emit({"end": spec.label, "rows": row_count})
                counts[spec.label] = row_count
                row_count = 0
            emit({"trailer": {"counts": counts}})
            compressed.write(batch)
    report_progress()
    return counts


class SingleFileReader:
    """Streams a format-1 archive back as sections; see `failsafe.archive.SnapshotReader`.

    Reading holds one Tink segment, one zstd window and one row at a time. Every problem
    found on the way raises ArchiveCorrupt, including ones found after rows were handed out.
    """

    format_version = FORMAT_VERSION

    def __init__(self, source: BinaryIO, *, aead, associated_data: bytes, backup_id: str):
        self._backup_id = backup_id
        self._source = source
        self._decrypted = None
        self._decompressed = None
        self._started = False
        self._section_counts: dict[str, int] = {}
        # The trailer's per-model row counts, once sections() has been read to the end.
        self.counts: dict[str, int] | None = None
        try:
            # The decrypting stream owns `source` from here on and closes it with itself.
            self._decrypted = aead.new_decrypting_stream(source, associated_data)
            self._decompressed = zstandard.ZstdDecompressor().stream_reader(
                self._decrypted, read_across_frames=True, closefd=False
            )
            self._records = codec.new_unpacker(self._decompressed)
            self.meta: dict = self._read_header()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._decompressed is not None:
            self._decompressed.close()
        if self._decrypted is not None:
            self._decrypted.close()
        else:
            self._source.close()

    def _corrupt(self, problem: str) -> ArchiveCorrupt:
        return ArchiveCorrupt(f"Archive of backup {self._backup_id} {problem}")

    def _next_record(self):
        try:
            return self._records.unpack()
        except msgpack.OutOfData:
            return _END_OF_STREAM
        except tink.TinkError as exc:
            raise self._corrupt(
                "cannot be decrypted: it was altered or truncated, belongs to another "
                "backup, or its key is not in the keyset"
            ) from exc
        except zstandard.ZstdError as exc:
            raise self._corrupt("cannot be decompressed") from exc
        except (ValueError, msgpack.UnpackException) as exc:
            raise self._corrupt("holds a record that cannot be decoded") from exc

    def _read_header(self) -> dict:
        header = self._next_record()
        if header is _END_OF_STREAM:
            raise self._corrupt("is empty")
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise self._corrupt("is not a failsafe archive")
        if header.get("version") != FORMAT_VERSION:
            raise self._corrupt(
                f"has format version {header.get('version')!r}, this reader knows {FORMAT_VERSION}"
            )
        meta = header.get("meta")
        if not isinstance(meta, dict):
            raise self._corrupt("has no metadata in its header")
        return meta

    def sections(
        self, *, skip_chunks: Mapping[str, Collection[bytes]] | None = None
    ) -> Iterator[Section]:
        """Each section in order; read (or skip) its rows before asking for the next one.

        Rows left unread when the next section is requested are read and checked then, so
        the stream stays in step; the skipped section's row iterator is then exhausted.
        `skip_chunks` is the chunked reader's: this format has no chunks to skip.
        """
        if any(skip_chunks.values() if skip_chunks else ()):
            raise ValueError("A single-file archive has no chunks to skip")
        if self._started:
            raise RuntimeError("An archive's sections can be read only once")
        self._started = True
        while True:
            record = self._next_record()
            if record is _END_OF_STREAM:
                raise self._corrupt("ends before its trailer: it is truncated")
            if not isinstance(record, dict):
                raise self._corrupt("has a row outside any section")
            if "trailer" in record:
                self._check_trailer(record["trailer"])
                return
            if "section" not in record:
                raise self._corrupt("has a record that is neither a section nor the trailer")
            spec = self._spec(record["section"])
            rows = self._rows(spec)
            yield Section(spec, rows)
            for _skipped in rows:
                pass
            if spec.label not in self._section_counts:
                raise self._corrupt(f"could not be read past section {spec.label}")

    def _spec(self, header) -> ModelSpec:
        try:
            spec = ModelSpec.from_header(header)
        except (KeyError, TypeError, AttributeError):
            raise self._corrupt("has an unreadable section header") from None
        if spec.label in self._section_counts:
            raise self._corrupt(f"holds section {spec.label} twice")
        return spec

    def _rows(self, spec: ModelSpec) -> Iterator[list]:
        width = len(spec.columns)
        row_count = 0
        report = progress.current()
        while True:
            record = self._next_record()
            if isinstance(record, list):
                if len(record) != width:
                    raise self._corrupt(
                        f"has a {spec.label} row of {len(record)} values for {width} columns"
                    )
                row_count += 1
                if not row_count % PROGRESS_ROWS:
                    report.advance(PROGRESS_ROWS)
                yield record
            elif record is _END_OF_STREAM:
                raise self._corrupt(f"ends inside section {spec.label}: it is truncated")
            elif isinstance(record, dict) and record.get("end") == spec.label:
                if record.get("rows") != row_count:
                    raise self._corrupt(
                        f"section {spec.label} holds {row_count} rows where its end marker "
                        f"says {record.get('rows')!r}"
                    )
                self._section_counts[spec.label] = row_count
                report.advance(row_count % PROGRESS_ROWS)
                return
            else:
                raise self._corrupt(f"has no end marker for section {spec.label}")

    def _check_trailer(self, trailer) -> None:
        counts = trailer.get("counts") if isinstance(trailer, dict) else None
        if counts != self._section_counts:
            raise self._corrupt("has row counts in its trailer that differ from its sections")
        if self._next_record() is not _END_OF_STREAM:
            raise self._corrupt("has data after its trailer")
        self.counts = dict(counts)
