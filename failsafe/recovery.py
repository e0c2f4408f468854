"""The catalog that lives with the archives, and rebuilding the Backup rows from it.

The Backup rows are the catalog of the backups, and they live in the database the backups
protect: a dropped database, or a host lost with its disk, takes the list of backups with
it. So every backup also carries its catalog record inside its own manifest (archives.write
puts it in the manifest's "meta": id, type, reason, created at and by, captured state, key
id, audit chain head), encrypted and authenticated like the rest of the manifest. A primary
store or any replica holding the manifests and chunks is then enough to rebuild the rows:
`recover` reads every manifest it finds in a storage, checks it (its AEAD tag under the
backup id, then every chunk it names, decrypted and re-hashed), and adds the rows the
database lacks.

Safe marks are the one part of the record that comes later: a backup is marked safe after
its manifest is written, and a manifest is never rewritten (a replica may hold it under
S3 Object Lock, and an archive that changes after the fact is what the checksums exist to
catch). So each safe mark is its own small object beside the manifests,
`catalog/<backup id>/<n>.safe`, only ever added, never rewritten: JSON naming the backup,
when it was marked and by whom, sealed with the keyset's streaming AEAD like a manifest,
with the object's own name as associated data. Someone who can write the storage but does
not hold the keys cannot forge a mark, nor move one to another backup or another name
(neither decrypts there); deleting one makes the backup come back as not safe, which
trusts less, never more. Written inside mark_safe's transaction before its row is saved,
so a mark the catalog cannot record is refused rather than lost.

Where it meets the store: archives.py works on the configured store and replicas.py copies
to the replicas; this module reads any storage named by a URL (a replica, or the primary
store itself) and copies from it into the configured store, which only a recovery does.
Replication copies a backup's safe marks with it (`safe_mark_names`): they are only ever
added, like the manifests and chunks, so an Object-Locked replica takes them too.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import tink
from django.core.files.storage import FileSystemStorage, Storage
from django.db import DatabaseError, transaction

from . import archives, keys, oplock
from .archive import STORAGE_ALIAS, ArchiveStore, chunked, files, get_store, single_file
from .archive.anchors import ANCHOR_FILE, AnchorObjects
from .exceptions import ArchiveCorrupt, FailsafeError, ServerFailure, StorageFull, one_line
from .models import Backup
from .progress import stage
from .snapshot import iso

CATALOG_DIR = files.CATALOG_DIR
SAFE_MARK_SUFFIX = ".safe"
_MARK_NAME = re.compile(r"(\d{8})\.safe")
_ARCHIVE_NAME = re.compile(
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    rf"({re.escape(chunked.SUFFIX)}|{re.escape(single_file.SUFFIX)})"
)
MAX_SAFE_MARK_BYTES = 64 * 1024

# Backup fields a catalog record holds; a row already in the database that differs in one
# of these is reported, never overwritten.
_RECORD_FIELDS = (
    "type",
    "reason",
    "created_at",
    "created_by_id",
    "created_by_username",
    "status",
    "is_safe",
    "state",
    "archive_name",
    "archive_sha256",
    "format_version",
    "key_id",
    "audit_head_seq",
    "audit_head_hash",
)


class NothingToRecover(FailsafeError):
    """The storage named holds no failsafe backup."""


# --- safe marks -----------------------------------------------------------------------


@dataclass(frozen=True)
class SafeMark:
    backup_id: str
    marked_safe_at: datetime.datetime | None
    marked_safe_by: str


def _mark_name(backup_id: str, number: int) -> str:
    return f"{CATALOG_DIR}/{backup_id}/{number:08d}{SAFE_MARK_SUFFIX}"


def safe_mark_names(storage: Storage, backup_id: str) -> list[str]:
    """The names of the backup's safe-mark objects in `storage`, oldest first: what a
    replica needs besides the chunks and the manifest."""
    return [name for _number, name in _mark_names(storage, backup_id)]


def _mark_names(storage: Storage, backup_id: str) -> list[tuple[int, str]]:
    numbered = []
    for file_name in files.list_files(storage, f"{CATALOG_DIR}/{backup_id}"):
        match = _MARK_NAME.fullmatch(file_name)
        if match:
            numbered.append((int(match.group(1)), f"{CATALOG_DIR}/{backup_id}/{file_name}"))
    return sorted(numbered)


def record_safe_mark(backup: Backup) -> str | None:
    """Seals the row's safe mark into the configured store, unless a readable mark of this
    backup is there already; returns the new object's name, or None.

    Raises FailsafeError (no keyset) and whatever the storage raises: the caller (marking
    safe) then refuses, so the database never trusts a backup the catalog does not.
    """
    storage = get_store().storage
    backup_id = str(backup.id)
    keyset = keys.active_keyset()
    marks, _damaged = read_safe_marks(storage, backup_id)
    if marks:
        return None
    existing = _mark_names(storage, backup_id)
    name = _mark_name(backup_id, existing[-1][0] + 1 if existing else 1)
    plaintext = json.dumps(
        {
            "backup_id": backup_id,
            "marked_safe_at": iso(backup.marked_safe_at),
            "marked_safe_by": backup.marked_safe_by_username,
        },
        sort_keys=True,
    ).encode("utf-8")
    sealed = chunked.seal(keyset.primitive, plaintext, name.encode("ascii"))
    saved, _ = files.save_via_temp(storage, name, lambda temp_file: temp_file.write(sealed))
    if saved != name:
        # Another writer took the number: ours would not decrypt under the name it got.
        storage.delete(saved)
        raise OSError(f"The safe mark of backup {backup_id} could not be saved as {name}")
    return name


def read_safe_marks(storage: Storage, backup_id: str) -> tuple[list[SafeMark], list[str]]:
    """The backup's readable safe marks, oldest first, and the names of those that are not
    (altered, foreign, or sealed under a key the keyset lacks)."""
    marks, damaged = [], []
    aead = None
    for _number, name in _mark_names(storage, backup_id):
        if aead is None:
            aead = keys.streaming_aead()
        try:
            with storage.open(name, "rb") as stored:
                sealed = stored.read(MAX_SAFE_MARK_BYTES + 1)
            record = json.loads(chunked.unseal(aead, sealed, name.encode("ascii")))
            if record["backup_id"] != backup_id:
                raise ValueError("it names another backup")
            marks.append(
                SafeMark(
                    backup_id,
                    _parse_moment(record["marked_safe_at"]) if record["marked_safe_at"] else None,
                    str(record.get("marked_safe_by") or ""),
                )
            )
        except (tink.TinkError, ValueError, KeyError, TypeError):
            # Altered, foreign or truncated: not trusted. A storage that fails to answer
            # raises instead: that says nothing about the mark.
            damaged.append(name)
    return marks, damaged


# --- reading a storage ------------------------------------------------------------------


def open_source(url: str) -> tuple[Storage, str]:
    """The storage a URL names and how to show it. Raises InvalidStorageUrl or
    StorageUnreachable (both refusals, in one line) before anything is read."""
    from .archive import locations

    storage = locations.open_storage(url)  # InvalidStorageUrl
    locations.check_reachable(storage)  # StorageUnreachable
    return storage, locations.describe(url)


def describe_source(url: str) -> str:
    """The URL as it may be shown and audited: never a credential; never raises."""
    from .archive import locations

    try:
        return locations.describe(url)
    except Exception:  # noqa: BLE001 - an unreadable URL is shown as such, not raised
        return "(not a storage URL)"


def _archive_names(storage: Storage) -> list[tuple[str, str]]:
    """(backup id, file name) of every manifest or format-1 archive at the storage's top."""
    try:
        names = storage.listdir("")[1]
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in sorted(names):
        match = _ARCHIVE_NAME.fullmatch(name)
        if match:
            found.append((match.group(1), name))
    return found


def _same_storage(first: Storage, second: Storage) -> bool:
    if isinstance(first, FileSystemStorage) and isinstance(second, FileSystemStorage):
        return os.path.realpath(first.location) == os.path.realpath(second.location)

    def identity(storage: Storage) -> tuple:
        return (
            type(storage),
            *(
                getattr(storage, attribute, None)
                for attribute in ("bucket_name", "location", "endpoint_url", "host", "root_path")
            ),
        )

    return identity(first) == identity(second)


@dataclass
class Damage:
    """Something found in the source that was not recovered, and why."""

    name: str
    problem: str
    backup_id: str = ""


@dataclass
class Conflict:
    """A backup whose row exists with other data: left as it is."""

    backup_id: str
    fields: list[str]


@dataclass
class RecoveryReport:
    source: str
    dry_run: bool
    # The configured store, when the source is another storage (files were copied into it).
    copied_into: str = ""
    # Backups found intact in the source, newest first: rows added (or, dry run, that would
    # be), rows already in the database with the same record, rows that differ.
    added: list[Backup] = field(default_factory=list)
    present: list[Backup] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)
    files_copied: int = 0
    bytes_copied: int = 0
    # Audit anchors found in the source: evidence of the old trail's length.
    anchors: int = 0
    highest_anchor: int = 0

    @property
    def found(self) -> int:
        return len(self.added) + len(self.present) + len(self.conflicts)

    @property
    def last_safe(self) -> Backup | None:
        safe = [b for b in self.added + self.present if b.is_safe]
        return max(safe, key=lambda backup: backup.created_at) if safe else None


# What a manifest written before it carried the catalog record cannot say.
_LATER_FIELDS = frozenset(
    {"reason", "created_by_id", "created_by_username", "audit_head_seq", "audit_head_hash"}
)


@dataclass
class _Candidate:
    row: Backup
    manifest: chunked.Manifest | None
    # Fields the archive does not record (not compared with an existing row).
    unknown: frozenset[str] = frozenset()


def _parse_moment(value) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError("a timestamp without its time zone")
    return moment


def _row_from_meta(
    backup_id: str,
    meta: dict,
    *,
    name: str,
    sha256: str,
    size: int,
    format_version: int,
    key_id: int | None,
) -> Backup:
    """The Backup row a manifest's catalog record describes. Raises ValueError/KeyError/
    TypeError when the record is unusable. Backups written before manifests carried the
    whole record come back with what they held: id, type, creation time and state."""
    if str(meta.get("backup_id")) != backup_id:
        raise ValueError("its metadata names another backup")
    record = meta.get("catalog") or {}
    if not isinstance(record, dict):
        raise TypeError("its catalog record is not a mapping")
    backup_type = Backup.Type(meta["type"])
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise TypeError("its captured state is not a mapping")
    head_seq = record.get("audit_head_seq")
    return Backup(
        id=uuid.UUID(backup_id),
        type=backup_type,
        reason=str(record.get("reason") or ""),
        created_at=_parse_moment(meta["created_at"]),
        created_by_id=int(record["created_by_id"]) if record.get("created_by_id") else None,
        created_by_username=str(record.get("created_by_username") or ""),
        status=Backup.Status.COMPLETE,
        state=state,
        archive_name=name,
        archive_size=size,
        archive_sha256=sha256,
        format_version=format_version,
        key_id=key_id if key_id is not None else record.get("key_id"),
        audit_head_seq=int(head_seq) if head_seq else None,
        audit_head_hash=str(record.get("audit_head_hash") or "") if head_seq else "",
    )


def _read_candidate(
    source: ArchiveStore, backup_id: str, name: str, checked_chunks: set[bytes]
) -> _Candidate:
    """The row the archive describes, after the archive was read through and checked.
    Raises ArchiveCorrupt naming the problem."""
    try:
        with source.storage.open(name, "rb") as stored:
            data = stored.read()
    except OSError as exc:
        raise ArchiveCorrupt(f"Archive file of backup {backup_id} cannot be read: {exc}") from exc
    sha256 = hashlib.sha256(data).hexdigest()
    manifest = None
    if name.endswith(chunked.SUFFIX):
        manifest = source.read_manifest(name=name, sha256=sha256, backup_id=backup_id)
        meta, key_id = manifest.meta, manifest.key_id
        size, format_version = len(data) + manifest.stored_bytes, chunked.FORMAT_VERSION
    else:
        with source.open(name=name, sha256=sha256, backup_id=backup_id) as reader:
            meta = reader.meta
        key_id, size, format_version = None, len(data), single_file.FORMAT_VERSION
    try:
        row = _row_from_meta(
            backup_id,
            meta,
            name=name,
            sha256=sha256,
            size=size,
            format_version=format_version,
            key_id=key_id,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ArchiveCorrupt(
            f"Manifest of backup {backup_id} holds no usable catalog record ({exc})"
        ) from None
    with stage(f"Check backup {backup_id[:8]}", archives.rows_counted(row.state)):
        source.verify(
            name=name,
            sha256=sha256,
            backup_id=backup_id,
            key_id=row.key_id,
            checked_chunks=checked_chunks,
        )
    unknown = set() if isinstance(meta.get("catalog"), dict) else set(_LATER_FIELDS)
    if row.key_id is None:
        unknown.add("key_id")
    return _Candidate(row, manifest, frozenset(unknown))


def _apply_safe_mark(row: Backup, storage: Storage, report: RecoveryReport) -> None:
    marks, damaged = read_safe_marks(storage, str(row.id))
    report.damaged.extend(
        Damage(name, "safe mark that cannot be decrypted or read: not trusted", str(row.id))
        for name in damaged
    )
    if marks:
        first = marks[0]
        row.is_safe = True
        row.marked_safe_at = first.marked_safe_at
        row.marked_safe_by_username = first.marked_safe_by


def _differences(existing: Backup, candidate: _Candidate) -> list[str]:
    return [
        name
        for name in _RECORD_FIELDS
        if name not in candidate.unknown and getattr(existing, name) != getattr(candidate.row, name)
    ]


_ANCHOR_LINE = re.compile(rb"(\d{1,19}) [0-9a-f]{64}")


def _read_anchors(storage: Storage, report: RecoveryReport) -> None:
    """Counts the audit anchors the source holds, in either form: a copy of a local
    primary's appended file (whatever kind of storage the replica is), or one object each."""
    seqs: set[int] = set()
    # Evidence only: a storage error reading them (any kind of storage raises its own)
    # leaves the count at what was read, and never fails the recovery.
    with contextlib.suppress(Exception):
        seqs.update(anchor.seq for anchor in AnchorObjects(storage).read())
    with contextlib.suppress(Exception):
        if storage.exists(ANCHOR_FILE):
            with storage.open(ANCHOR_FILE, "rb") as appended:
                for line in appended.read().splitlines():
                    match = _ANCHOR_LINE.fullmatch(line)
                    if match:
                        seqs.add(int(match.group(1)))
    report.anchors = len(seqs)
    report.highest_anchor = max(seqs, default=0)


# --- copying into the configured store -------------------------------------------------


def _copy_file(source: Storage, target: Storage, name: str) -> int:
    with source.open(name, "rb") as stored:
        data = stored.read()
    saved, _ = files.save_via_temp(target, name, lambda temp_file: temp_file.write(data))
    if saved != name:
        target.delete(saved)
        raise OSError(f"{name} could not be saved under its own name in the configured store")
    return len(data)


def _copy_backup(
    candidate: _Candidate, source: ArchiveStore, target: ArchiveStore, report: RecoveryReport
) -> None:
    """Copies what the configured store lacks of one backup: its chunks, then its manifest
    (so that a manifest there never names a chunk that is not). Raises ArchiveCorrupt when
    the configured store holds another file under the manifest's name: it is not replaced."""
    row = candidate.row
    if candidate.manifest is not None:
        source_chunks, target_chunks = (
            files.ChunkFiles(source.storage),
            files.ChunkFiles(target.storage),
        )
        try:
            named = {ref.id for entry in candidate.manifest.models for ref in entry.chunks}
            # The chunks, and the bases their deltas are rebuilt from (read through with
            # them when the archive was checked).
            for object_id in sorted(candidate.manifest.object_ids()):
                chunk_hex = object_id.hex()
                if target_chunks.holds(chunk_hex):
                    continue
                try:
                    stored = source_chunks.get(chunk_hex)
                except FileNotFoundError:
                    if object_id in named:
                        raise
                    continue  # a base the chunk no longer needs (healed: stored whole)
                target_chunks.put(chunk_hex, stored)
                report.files_copied += 1
                report.bytes_copied += len(stored)
            target_chunks.finish()
        except BaseException:
            target_chunks.abandon()
            raise
    if target.exists(row.archive_name):
        with target.storage.open(row.archive_name, "rb") as stored:
            held = hashlib.sha256(stored.read()).hexdigest()
        if held != row.archive_sha256:
            raise ArchiveCorrupt(
                f"The configured store holds another {row.archive_name} than the source: "
                "left as it is, the backup was not added"
            )
        return
    report.bytes_copied += _copy_file(source.storage, target.storage, row.archive_name)
    report.files_copied += 1


# --- the recovery ----------------------------------------------------------------------


def recover(*, url: str, dry_run: bool) -> RecoveryReport:
    """Rebuilds the Backup rows the database lacks from the backups in the storage at `url`.

    Every archive found is checked through (manifest, then every chunk); a damaged one is
    reported, not added. A row already in the database is never changed: an identical one
    is reported as present, a different one as a conflict. When the source is not the
    configured store, what the added backups need is copied into it first (chunks, then
    manifests) and checked there again, so restores and new backups work as before; the
    source is only read. A dry run reads and checks everything and writes nothing.
    Raises FailsafeError subclasses only, each in one line; a storage that fails half way
    (a dropped connection, a full disk) adds no row, and the recovery can simply be re-run.
    """
    storage, where = open_source(url)
    try:
        return _recover_from(storage, where, dry_run=dry_run)
    except (FailsafeError, DatabaseError):
        raise
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageFull(
                "The recovery failed: no space left on the device of the configured store; "
                "no backup was added"
            ) from exc
        raise ServerFailure(_failed(where, exc)) from exc
    except Exception as exc:
        raise ServerFailure(_failed(where, exc)) from exc


def _failed(where: str, exc: BaseException) -> str:
    from .archive import locations

    return (
        f"The recovery from {where} failed: {locations.explain_failure(exc)}; no backup was "
        "added, run it again"
    )


def _recover_from(storage: Storage, where: str, *, dry_run: bool) -> RecoveryReport:
    names = _archive_names(storage)
    if not names:
        raise NothingToRecover(f"{where} holds no failsafe backups: nothing was changed")
    _require_keyset(where)
    source = ArchiveStore(storage)
    target = get_store()
    same = _same_storage(storage, target.storage)
    report = RecoveryReport(
        source=where, dry_run=dry_run, copied_into="" if same else _store_name(target)
    )
    candidates = list(_checked_candidates(source, names, report))
    existing = Backup.objects.in_bulk([candidate.row.pk for candidate in candidates])
    to_add = []
    for candidate in candidates:
        _apply_safe_mark(candidate.row, storage, report)
        held = existing.get(candidate.row.pk)
        if held is None:
            to_add.append(candidate)
        elif differences := _differences(held, candidate):
            report.conflicts.append(Conflict(str(held.pk), differences))
        else:
            report.present.append(held)
    _read_anchors(storage, report)
    if dry_run:
        report.added = [candidate.row for candidate in to_add]
        _newest_first(report)
        return report
    with oplock.operation_lock(holder=f"recovery from {where}"[:255]):
        usable = []
        checked_chunks: set[bytes] = set()
        adding = {candidate.row.pk for candidate in to_add}
        wanted = adding | {backup.pk for backup in report.present}
        for candidate in candidates:
            if candidate.row.pk not in wanted:
                continue
            try:
                if not same:
                    _copy_backup(candidate, source, target, report)
                    archives.verify(candidate.row, checked_chunks=checked_chunks)
            except ArchiveCorrupt as exc:
                report.damaged.append(
                    Damage(candidate.row.archive_name, one_line(exc), str(candidate.row.pk))
                )
                continue
            if candidate.row.pk in adding:
                usable.append(candidate.row)
        with transaction.atomic():
            Backup.objects.bulk_create(usable)
    report.added = usable
    _newest_first(report)
    return report


def _require_keyset(where: str) -> None:
    try:
        keys.active_keyset()
    except FailsafeError:
        if not keys.keyset_file_missing():
            raise  # there is one, and it is unreadable: that message says so
        # Not the first run's advice (a new keyset opens no backup): the recovery file's.
        raise FailsafeError(
            f"No failsafe keyset to open the backups in {where}: import the key material "
            "first (manage.py failsafe_keys import FILE); nothing was changed"
        ) from None


def _checked_candidates(
    source: ArchiveStore, names: list[tuple[str, str]], report: RecoveryReport
) -> Iterator[_Candidate]:
    # Backups share most chunks: each is decrypted and checked once per recovery.
    checked_chunks: set[bytes] = set()
    for backup_id, name in names:
        try:
            yield _read_candidate(source, backup_id, name, checked_chunks)
        except ArchiveCorrupt as exc:
            report.damaged.append(Damage(name, one_line(exc), backup_id))


def _newest_first(report: RecoveryReport) -> None:
    for rows in (report.added, report.present):
        rows.sort(key=lambda backup: backup.created_at, reverse=True)


def _store_name(store: ArchiveStore) -> str:
    storage = store.storage
    if isinstance(storage, FileSystemStorage):
        return str(storage.location)
    return f"the {STORAGE_ALIAS!r} storage ({type(storage).__name__})"
