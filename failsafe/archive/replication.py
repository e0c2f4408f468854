"""Replicas of the store: the same encrypted objects, copied to another storage and read back.

A replica holds exactly the bytes the primary holds, under the same names (`chunks/..`,
`<backup id>.manifest`, `<backup id>.rfs`): nothing is decrypted to be copied, so a replica
needs no key and the keyset alone opens it, like the primary. A backup is copied chunks
first (only those the replica lacks, as its listing says, with the bases their deltas
need) and its manifest last, so a
replica never holds a manifest naming a chunk it lacks. Every chunk is checked on the
primary before it leaves (decrypted and matched to its name, as verification does: a
damaged chunk is never spread), and every object written is read back from the replica
and compared, by SHA-256, with what was sent.

On an S3 replica with a retention (Object Lock), every object is written with that
retention through django-storages' object parameters, after checking that the bucket has
Object Lock at all; deleting from a replica skips what is still retained.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import hashlib
import hmac
import logging
import random
from dataclasses import dataclass, field

from django.core.files.storage import Storage
from django.utils import timezone

from .. import keys
from ..exceptions import ArchiveCorrupt, FailsafeError
from . import ArchiveStore, anchors, chunked, files, garbage, single_file

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
logger = logging.getLogger(__name__)


class ReplicaUnusable(FailsafeError):
    """A replica cannot take or give back a copy: misconfigured, refused, or damaged."""


@dataclass(frozen=True)
class Retention:
    """Object Lock on an S3 replica: each object written is retained until `days` from now."""

    mode: str
    days: int

    def __post_init__(self):
        if self.mode not in LOCK_MODES:
            raise ReplicaUnusable(
                f"REPLICA_LOCK_MODE must be GOVERNANCE or COMPLIANCE, not {self.mode!r}"
            )
        if not isinstance(self.days, int) or self.days < 1:
            raise ReplicaUnusable(
                f"REPLICA_LOCK_DAYS must be a whole number of days, 1 or more, not {self.days!r}"
            )

    def until(self) -> datetime.datetime:
        return timezone.now() + datetime.timedelta(days=self.days)


@dataclass
class CopyReport:
    """What copying one backup to a replica did."""

    chunks: int = 0  # chunks the backup names
    chunks_copied: int = 0  # of those, written to the replica (lacking, or damaged there)
    bytes_copied: int = 0
    manifest_copied: bool = False


@dataclass
class DeleteReport:
    """Deleting from a replica: what went, and what its retention kept."""

    deleted: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- S3 and Object Lock --------------------------------------------------------------


def is_s3(storage: Storage) -> bool:
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # django-storages without boto3: there are no S3 storages then
        return False
    return isinstance(storage, S3Storage)


def _s3_key(storage, name: str) -> str:
    from storages.utils import clean_name, safe_join

    return safe_join(storage.location, clean_name(name)) if storage.location else clean_name(name)


def check_retention(storage: Storage, retention: Retention | None) -> None:
    """Refuses, before anything is written, a lock mode on a bucket without Object Lock."""
    if retention is None or not is_s3(storage):
        return
    from botocore.exceptions import ClientError

    client = storage.connection.meta.client
    try:
        answer = client.get_object_lock_configuration(Bucket=storage.bucket_name)
        enabled = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
            raise
        enabled = None
    if enabled != "Enabled":
        raise ReplicaUnusable(
            f"Bucket {storage.bucket_name} has no Object Lock, but REPLICA_LOCK_MODE is "
            f"{retention.mode}: nothing was written. Use a bucket created with Object Lock "
            "enabled, or unset REPLICA_LOCK_MODE"
        )


def _writer(storage: Storage, retention: Retention | None) -> Storage:
    """The storage to write through: on S3 with a retention, one whose every upload asks
    for it (a copy, so the configured storage is left as it is)."""
    if retention is None or not is_s3(storage):
        return storage
    locked = copy.copy(storage)
    locked.object_parameters = {
        **storage.object_parameters,
        "ObjectLockMode": retention.mode,
        "ObjectLockRetainUntilDate": retention.until(),
    }
    return locked


def retained_until(storage: Storage, name: str) -> datetime.datetime | None:
    """Until when the object is retained (Object Lock), or None: not S3, or no retention."""
    if not is_s3(storage):
        return None
    from botocore.exceptions import ClientError

    client = storage.connection.meta.client
    # HeadObject carries the object's retention (x-amz-object-lock-*) for a caller allowed
    # s3:GetObjectRetention; every S3 service with Object Lock answers it, where some
    # (moto among them) lack GetObjectRetention itself.
    try:
        answer = client.head_object(Bucket=storage.bucket_name, Key=_s3_key(storage, name))
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return None
        raise
    return answer.get("ObjectLockRetainUntilDate")


def is_locked(storage: Storage, name: str) -> bool:
    until = retained_until(storage, name)
    return until is not None and until > timezone.now()


# --- copying -------------------------------------------------------------------------


def _read(storage: Storage, name: str) -> bytes | None:
    try:
        with storage.open(name, "rb") as stored:
            return stored.read()
    except FileNotFoundError:
        return None


def _read_back(replica: Storage, name: str, digest: str, what: str) -> None:
    back = _read(replica, name)
    if back is None:
        raise ReplicaUnusable(f"The replica does not give back {what} just written")
    if not hmac.compare_digest(_sha256(back), digest):
        raise ReplicaUnusable(f"The replica gives back {what} other than what was written")


def _save_whole(storage: Storage, name: str, data: bytes, *, replace: bool) -> None:
    if replace:
        with contextlib.suppress(FileNotFoundError):
            storage.delete(name)
    saved, _ = files.save_via_temp(storage, name, lambda temp_file: temp_file.write(data))
    if saved != name:
        storage.delete(saved)
        raise ReplicaUnusable(f"The replica saved {name} under another name")


def _copy_file(primary: ArchiveStore, writer: Storage, name: str, sha256: str, backup_key: str):
    """Copies one whole stored file (manifest or format-1 archive) checked by its SHA-256.
    Returns the bytes written (0 when the replica already holds the same)."""
    data = _read(primary.storage, name)
    if data is None:
        raise ArchiveCorrupt(f"Archive file of backup {backup_key} is missing on the primary")
    if not hmac.compare_digest(_sha256(data), (sha256 or "").lower()):
        raise ArchiveCorrupt(
            f"Archive checksum mismatch for backup {backup_key} on the primary: not copied"
        )
    held = _read(writer, name)
    if held is not None and hmac.compare_digest(_sha256(held), sha256.lower()):
        return 0
    # A copy that differs is a damaged one (the name is the backup's own): replaced.
    _save_whole(writer, name, data, replace=held is not None)
    _read_back(writer, name, sha256.lower(), f"archive file {name}")
    return len(data)


class _CheckedChunks:
    """Reads chunks from the primary through a ChunkedReader, so each is checked as
    verification checks it before its bytes (and those of the bases of its delta) are
    handed on."""

    def __init__(self, primary: ArchiveStore, manifest: chunked.Manifest, location: dict):
        aead = keys.streaming_aead(key_id=location.get("key_id"), backup_id=location["backup_id"])
        chunk_files = files.ChunkFiles(primary.storage)
        self._reader = chunked.ChunkedReader(
            manifest, chunks=chunk_files, aead=aead, backup_id=location["backup_id"]
        )
        self._objects = chunked.StoredObjects(chunk_files, aead)
        self._read: dict[str, bytes] = {}
        self._reader.on_good_chunk = self._keep

    def _keep(self, chunk_hex: str, stamp: str, stored: bytes) -> None:
        self._read[chunk_hex] = stored

    def get(self, spec, ref: chunked.ChunkRef) -> dict[str, bytes]:
        """Chunk hex -> stored bytes of the chunk and every object its delta was rebuilt
        from. Raises ArchiveCorrupt for a damaged chunk or base."""
        self._read = {}
        self._reader.read_chunk(spec, ref)
        return self._read

    def get_base(self, base_id: bytes) -> bytes | None:
        """A base the manifest names that the chunk no longer needs (it was healed, and
        stored in full since): copied when it reads back whole, as the manifest says it
        is needed; None when it is not there."""
        try:
            read = self._objects.read(base_id)
        except chunked.ObjectDamaged as exc:
            if exc.problem == "is missing" and exc.chunk_hex == base_id.hex():
                return None
            raise ArchiveCorrupt(
                f"Base chunk {exc.chunk_hex} on the primary {exc.problem}"
            ) from exc
        return read.objects[0][2]


def copy_backup(
    primary: ArchiveStore,
    replica: Storage,
    *,
    location: dict,
    retention: Retention | None = None,
    recheck: bool = False,
) -> CopyReport:
    """Copies the backup at `location` (name, sha256, backup_id, key_id) from `primary` to
    `replica`, chunks first, and reads back what it wrote.

    Chunks the replica lists are taken as held, unless `recheck`: then each is read and
    compared with the primary's, and a copy that differs is replaced (a replica found
    damaged by verification). Raises ArchiveCorrupt (the primary's copy is damaged: nothing
    of it is spread), ReplicaUnusable, and whatever the replica's storage raises (OSError,
    its client's errors).
    """
    check_retention(replica, retention)
    writer = _writer(replica, retention)
    report = CopyReport()
    name, backup_key = location["name"], location["backup_id"]
    if not name.endswith(chunked.SUFFIX):
        if not name.endswith(single_file.SUFFIX):
            raise ArchiveCorrupt(f"Backup {backup_key} has no archive to copy")
        written = _copy_file(primary, writer, name, location["sha256"], backup_key)
        report.manifest_copied = bool(written)
        report.bytes_copied = written
        return report

    manifest = primary.read_manifest(**location)
    source = _CheckedChunks(primary, manifest, location)
    target = files.ChunkFiles(writer)
    sent: dict[str, str] = {}
    seen: set[bytes] = set()
    handled: set[bytes] = set()
    try:
        for entry in manifest.models:
            for ref in entry.chunks:
                if ref.id in seen:
                    continue
                seen.add(ref.id)
                report.chunks += 1
                # The chunk and the bases its delta is rebuilt from, each looked at once.
                wanted = [i for i in (ref.id, *ref.needs) if i not in handled]
                handled.update(wanted)
                lacking = [i for i in wanted if recheck or not target.holds(i.hex())]
                if not lacking:
                    continue
                read = source.get(entry.spec, ref)
                for object_id in lacking:
                    chunk_hex = object_id.hex()
                    stored = read.get(chunk_hex)
                    if stored is None:
                        stored = source.get_base(object_id)
                        if stored is None:
                            continue
                    if target.holds(chunk_hex):
                        held = _read(writer, target.name(chunk_hex))
                        if held is not None and hmac.compare_digest(_sha256(held), _sha256(stored)):
                            continue
                        target.replace(chunk_hex, stored)
                    else:
                        target.put(chunk_hex, stored)
                    sent[chunk_hex] = _sha256(stored)
                    report.chunks_copied += 1
                    report.bytes_copied += len(stored)
        target.finish()
    except BaseException:
        target.abandon()
        raise
    for chunk_hex, digest in sent.items():
        _read_back(writer, target.name(chunk_hex), digest, f"chunk {chunk_hex}")
    written = _copy_file(primary, writer, name, location["sha256"], backup_key)
    report.manifest_copied = bool(written)
    report.bytes_copied += written
    return report


# What else a replica needs to stand in for the primary, besides the archives: the safe
# marks of the catalog (failsafe.recovery: `catalog/<backup id>/<n>.safe`, sealed, only ever
# added) and the anchors of the audit chain (archive/anchors.py).
CATALOG_DIR = files.CATALOG_DIR


@dataclass
class SyncReport:
    catalog_objects: int = 0  # safe marks copied
    anchors: int = 0  # audit anchors copied


def _copy_missing(primary: Storage, writer: Storage, name: str) -> bool:
    """Copies one object the replica lacks, read back; objects named here never change."""
    data = _read(primary, name)
    if data is None:
        return False  # gone meanwhile: nothing to copy
    _save_whole(writer, name, data, replace=False)
    _read_back(writer, name, _sha256(data), name)
    return True


def sync_extras(
    primary: Storage, replica: Storage, *, retention: Retention | None = None
) -> SyncReport:
    """Copies to the replica the safe marks and audit anchors it lacks. Both are only ever
    added on the primary, so they are only ever added on the replica (with the retention,
    on S3). Anchors go to the replica as one object each (anchors.AnchorObjects), whatever
    form the primary keeps them in. Raises whatever the replica's storage raises."""
    writer = _writer(replica, retention)
    report = SyncReport()
    for backup_dir in files.list_directories(primary, CATALOG_DIR):
        directory = f"{CATALOG_DIR}/{backup_dir}"
        held = set(files.list_files(replica, directory))  # one listing, not a check each
        for file_name in files.list_files(primary, directory):
            if file_name in held or files.is_temp_name(file_name):
                continue
            if _copy_missing(primary, writer, f"{directory}/{file_name}"):
                report.catalog_objects += 1
    held = set(anchors.AnchorObjects(replica).read())
    log = anchors.AnchorObjects(writer)
    for anchor in anchors.anchor_log(primary).read():
        if anchor not in held:
            log.append(anchor)
            held.add(anchor)
            report.anchors += 1
    return report


def verify(replica: Storage, *, location: dict) -> dict[str, int]:
    """Decodes every record of the backup as the replica holds it (every chunk decrypted
    and matched to its name); per-model row counts, or ArchiveCorrupt."""
    return ArchiveStore(replica).verify(**location)


@dataclass
class SampleReport:
    """A sample of a replica's chunks read back: how many were found intact, and per
    backup id the first problem found in its copy (a chunk, its manifest or its file)."""

    checked: int = 0
    damaged: dict[str, str] = field(default_factory=dict)


def verify_sample(
    replica: Storage, *, locations: list[dict], count: int, rng: random.Random | None = None
) -> SampleReport:
    """Reads back `count` chunks drawn at random from those the backups at `locations`
    name, as the replica holds them: each decrypted and matched to its name and its
    manifest entry, as verification checks it. Each backup's manifest is read from the
    replica too (checked by its SHA-256); a format-1 archive counts as one item, its whole
    file checked by its SHA-256. Cheap enough to run every hour, where verifying every
    copy is not. Raises whatever the replica's storage raises; damage is in the report."""
    rng = rng or random.SystemRandom()
    store = ArchiveStore(replica)
    report = SampleReport()
    drawn: dict[bytes, tuple[dict, chunked.Manifest, chunked.ModelEntry, chunked.ChunkRef]] = {}
    whole_files: list[dict] = []
    for location in locations:
        if not location["name"].endswith(chunked.SUFFIX):
            whole_files.append(location)
            continue
        try:
            manifest = store.read_manifest(**location)
        except ArchiveCorrupt as exc:
            report.damaged[location["backup_id"]] = str(exc)
            continue
        for entry in manifest.models:
            for ref in entry.chunks:
                drawn.setdefault(ref.id, (location, manifest, entry, ref))
    items = list(drawn.values()) + whole_files
    readers: dict[str, chunked.ChunkedReader] = {}
    for item in rng.sample(items, min(count, len(items))):
        if isinstance(item, dict):
            backup_id = item["backup_id"]
            problem = _whole_file_problem(replica, item)
        else:
            location, manifest, entry, ref = item
            backup_id = location["backup_id"]
            reader = readers.get(backup_id)
            if reader is None:
                reader = readers[backup_id] = chunked.ChunkedReader(
                    manifest,
                    chunks=files.ChunkFiles(replica),
                    aead=keys.streaming_aead(key_id=location.get("key_id"), backup_id=backup_id),
                    backup_id=backup_id,
                )
            try:
                reader.read_chunk(entry.spec, ref)
                problem = ""
            except ArchiveCorrupt as exc:
                problem = str(exc)
        if problem:
            report.damaged.setdefault(backup_id, problem)
        else:
            report.checked += 1
    return report


def _whole_file_problem(replica: Storage, location: dict) -> str:
    data = _read(replica, location["name"])
    if data is None:
        return f"Archive of backup {location['backup_id']} is missing on the replica"
    if not hmac.compare_digest(_sha256(data), (location.get("sha256") or "").lower()):
        return f"Archive checksum mismatch for backup {location['backup_id']} on the replica"
    return ""


# --- a replica as a source of damaged chunks -----------------------------------------


class ReplicaChunkSource:
    """healing.ChunkSource over a replica: the plaintext of each wanted chunk the replica
    holds and that decrypts there (the repair checks it against the chunk's name before
    storing it on the primary). `open_storage()` is called only when a chunk is wanted."""

    def __init__(self, name: str, open_storage):
        self.name = name
        self._open_storage = open_storage

    def plaintexts(self, wanted):
        aead = keys.active_keyset().primitive
        with contextlib.ExitStack() as stack:
            try:
                storage = stack.enter_context(self._open_storage())
            except Exception as exc:  # noqa: BLE001 - a replica that is down offers nothing
                logger.warning("%s offers no chunks to repair from: %s", self.name, exc)
                return
            objects = chunked.StoredObjects(files.ChunkFiles(storage), aead)
            for chunk_ids in wanted.values():
                for chunk_id in list(chunk_ids):
                    chunk_hex = chunk_id.hex()
                    try:
                        plaintext = objects.plaintext(chunk_id)  # a delta: from its bases there
                    except chunked.ObjectDamaged:
                        continue  # damaged or missing there too
                    except Exception as exc:  # noqa: BLE001 - missing, or the link dropped
                        logger.warning("%s: chunk %s not read: %s", self.name, chunk_hex, exc)
                        continue
                    yield chunk_id, plaintext


# --- deleting ------------------------------------------------------------------------


def delete_archive(replica: Storage, name: str) -> DeleteReport:
    """Deletes a backup's own file (manifest or archive) from a replica, unless retained."""
    report = DeleteReport()
    if not name or not replica.exists(name):
        return report
    if is_locked(replica, name):
        report.locked.append(name)
    else:
        replica.delete(name)
        report.deleted.append(name)
    return report


class _RetentionAwareStorage:
    """A replica's storage for the garbage collector: deleting an object still retained
    is skipped and remembered instead of asked of S3 (where, on a versioned bucket, it
    would only hide the object behind a delete marker)."""

    def __init__(self, storage: Storage):
        self._storage = storage
        self.locked: list[str] = []
        self.locked_bytes = 0

    def __getattr__(self, attribute):
        return getattr(self._storage, attribute)

    def delete(self, name: str) -> None:
        if is_locked(self._storage, name):
            self.locked.append(name)
            with contextlib.suppress(FileNotFoundError):
                self.locked_bytes += self._storage.size(name)
            return
        self._storage.delete(name)


def collect_garbage(
    replica: Storage, *, manifests: list[dict], grace_seconds: int, dry_run: bool
) -> tuple[garbage.GarbageReport, list[str]]:
    """The garbage collector on a replica: deletes the chunks none of its manifests (nor
    the rows given) names, but none still retained. Returns the report, whose deleted
    counts leave out the retained ones, and the names of those it kept for their lock."""
    guarded = _RetentionAwareStorage(replica)
    report = garbage.collect(
        ArchiveStore(guarded),
        manifests=manifests,
        grace_seconds=grace_seconds,
        dry_run=dry_run,
    )
    kept_chunks = [name for name in guarded.locked if name.startswith(files.CHUNK_DIR + "/")]
    report.deleted -= len(kept_chunks)
    report.bytes_freed -= guarded.locked_bytes
    return report, guarded.locked
