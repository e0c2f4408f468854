"""Replicas of the backup store: which there are, and where each backup stands on each.

A replica is a second storage holding the same encrypted objects as the primary
(archive/replication.py copies them). They are configured two ways, both read on every call:
- settings.FAILSAFE_REPLICAS, storage URLs (archive/locations.py), each named by its URL
  written the canonical way without its ?options, or by NAME when written NAME=URL;
- FAILSAFE["REPLICA_ALIASES"], names of Django STORAGES entries, each named by its alias.

Per backup and per replica a BackupReplica row says PENDING, REPLICATED (when read back
and found to match) or FAILED (why, one line). Copying to a replica never raises here: a
replica that is down fails its row, never the backup, and `catch_up` tries again.
"""

from __future__ import annotations

import datetime
import logging
import random
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.utils import timezone

from . import archives
from .archive import get_store, locations, replication
from .archive.garbage import GarbageReport
from .conf import setting
from .exceptions import FailsafeError, one_line
from .models import Backup, BackupReplica

logger = logging.getLogger(__name__)

# NAME=URL: a name of letters, digits, dots, dashes and underscores, then a URL.
_NAMED_URL = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,63})=([a-z0-9]+://.*)", re.DOTALL)


# What BackupReplica.replica holds.
_NAME_LIMIT = 200


class UnknownReplica(FailsafeError):
    """No replica of that name is configured."""


@dataclass(frozen=True)
class Replica:
    """One configured replica: its name (what commands and rows call it) and where it is."""

    name: str
    url: str = ""  # canonical, without secrets ("" for a STORAGES alias)
    alias: str = ""

    @property
    def where(self) -> str:
        return self.url or f"STORAGES[{self.alias!r}]"

    def storage(self) -> Storage:
        if self.alias:
            return storages[self.alias]
        return locations.open_storage(self.url)


def configured() -> list[Replica]:
    """The replicas the settings name, in their order. Raises InvalidStorageUrl, or
    FailsafeError for a missing alias or a name given twice."""
    found: list[Replica] = []
    for entry in getattr(settings, "FAILSAFE_REPLICAS", None) or []:
        entry = str(entry).strip()
        if not entry:
            continue
        named = _NAMED_URL.fullmatch(entry)
        if named:
            found.append(Replica(name=named[1], url=locations.describe(named[2])))
        else:
            # Named by where it is, without the options (endpoint, key paths).
            url = locations.describe(entry)
            name = url.split("?", 1)[0]
            if len(name) > _NAME_LIMIT:
                raise FailsafeError(
                    f"Replica URL {name[:60]}… is too long to be its name: write it NAME=URL"
                )
            found.append(Replica(name=name, url=url))
    for alias in setting("REPLICA_ALIASES") or []:
        if alias not in settings.STORAGES:
            raise FailsafeError(
                f"FAILSAFE REPLICA_ALIASES names {alias!r}, which is not in STORAGES"
            )
        found.append(Replica(name=alias, alias=alias))
    names = [replica.name for replica in found]
    for name in names:
        if names.count(name) > 1:
            raise FailsafeError(f"Two replicas are named {name!r}: name them NAME=URL")
    return found


def configuration_problem() -> str | None:
    """Why the replica settings cannot be used, one line; None when they can."""
    try:
        configured()
        retention()
    except FailsafeError as exc:
        return f"The replicas are misconfigured, no backup is replicated: {one_line(exc)}"
    return None


def get(name: str) -> Replica:
    for replica in configured():
        if replica.name == name:
            return replica
    known = ", ".join(replica.name for replica in configured()) or "none is configured"
    raise UnknownReplica(f"No replica is named {str(name)[:200]!r} (replicas: {known})")


def retention() -> replication.Retention | None:
    mode = setting("REPLICA_LOCK_MODE")
    if not mode:
        return None
    return replication.Retention(mode=str(mode).upper(), days=setting("REPLICA_LOCK_DAYS"))


def _why(exc: BaseException) -> str:
    if isinstance(exc, FailsafeError):
        return one_line(exc)
    return locations.explain_failure(exc)


def _replicable() -> Iterable[Backup]:
    return Backup.objects.filter(status=Backup.Status.COMPLETE).exclude(archive_name="")


@contextmanager
def connected(replica: Replica, *, for_writing: bool = False) -> Iterator[Storage]:
    """The replica's storage, proven to answer (StorageUnreachable otherwise) and, to be
    written, ready for the configured retention; its connection (SSH) closed afterwards."""
    storage = replica.storage()
    try:
        locations.check_reachable(storage)
        if for_writing:
            replication.check_retention(storage, retention())
        yield storage
    finally:
        if locations.is_sftp(storage):
            storage.close()


def _record(backup: Backup, replica: Replica) -> BackupReplica:
    row, _ = BackupReplica.objects.get_or_create(backup=backup, replica=replica.name)
    return row


def _fail(rows: Iterable[BackupReplica], error: str) -> None:
    for row in rows:
        row.status = BackupReplica.Status.FAILED
        row.error = error[:2000]
        row.attempted_at = timezone.now()
        row.save(update_fields=["status", "error", "attempted_at"])


@dataclass
class CopyOutcome:
    """What copying to one replica did: a row per backup, and why the replica itself
    failed ("" when it did not: reached, and its safe marks and anchors brought up to date)."""

    replica: str
    rows: list[BackupReplica] = field(default_factory=list)
    problem: str = ""


def copy(backups: list[Backup], replica: Replica) -> CopyOutcome:
    """Copies each backup to the replica, oldest first, and records how it went; then the
    safe marks and audit anchors it lacks. A replica that cannot be opened fails every row
    with its reason; a backup that fails to copy fails its own row only. Never raises for
    the replica's sake."""
    outcome = CopyOutcome(replica.name, [_record(backup, replica) for backup in backups])
    try:
        with connected(replica, for_writing=True) as storage:
            _copy_each(backups, outcome.rows, replica, storage)
            replication.sync_extras(get_store().storage, storage, retention=retention())
    except Exception as exc:  # noqa: BLE001 - a replica's failure is its rows', one line each
        outcome.problem = _why(exc)
        logger.warning("Replica %s: %s", replica.name, outcome.problem)
        _fail(
            [row for row in outcome.rows if row.status != BackupReplica.Status.REPLICATED],
            outcome.problem,
        )
    return outcome


def _copy_each(backups: list[Backup], rows: list[BackupReplica], replica: Replica, storage):
    primary = get_store()
    lock = retention()
    for backup, row in zip(backups, rows, strict=True):
        row.attempted_at = timezone.now()
        try:
            report = replication.copy_backup(
                primary,
                storage,
                location=archives.location(backup),
                retention=lock,
                recheck=row.status == BackupReplica.Status.FAILED,
            )
        except Exception as exc:  # noqa: BLE001 - see above
            logger.warning("Backup %s was not copied to replica %s", backup.id, replica.name)
            _fail([row], _why(exc))
            continue
        row.status = BackupReplica.Status.REPLICATED
        row.error = ""
        row.verified_at = timezone.now()
        row.chunks_copied = report.chunks_copied
        row.bytes_copied = report.bytes_copied
        row.save()


def replicate_new(backup: Backup) -> list[CopyOutcome]:
    """Copies a backup just written to every replica; what failed is on its rows."""
    try:
        replicas = configured()
    except FailsafeError as exc:
        logger.warning("Backup %s was not replicated: %s", backup.id, one_line(exc))
        return []
    return [copy([backup], replica) for replica in replicas]


def catch_up(replica: Replica) -> CopyOutcome:
    """Copies to the replica every complete backup it does not hold yet, or whose last
    copy failed (then each chunk it holds is compared with the primary's), oldest first."""
    done = BackupReplica.objects.filter(
        replica=replica.name, status=BackupReplica.Status.REPLICATED
    ).values("backup_id")
    backups = list(_replicable().exclude(pk__in=done).order_by("created_at"))
    return copy(backups, replica)


def verify(backup: Backup, replica: Replica, storage: Storage) -> dict[str, int]:
    """Checks the replica's copy of the backup as verification checks the primary's; a
    damaged copy fails its row, so the next catch-up compares and replaces it. Raises
    ArchiveCorrupt."""
    row = _record(backup, replica)
    try:
        counts = replication.verify(storage, location=archives.location(backup))
    except FailsafeError as exc:
        _fail([row], f"Verification of the replica's copy failed: {one_line(exc)}")
        raise
    if row.status == BackupReplica.Status.REPLICATED:
        row.verified_at = timezone.now()
        row.save(update_fields=["verified_at"])
    return counts


@dataclass
class SampleOutcome:
    """A random sample of one replica's chunks read back: how many were intact, which
    backups' copies were found damaged (their rows fail, so the next catch-up compares and
    replaces them), and why the replica itself could not be read ("" when it could)."""

    replica: str
    backups: int = 0  # copies the chunks were drawn from
    chunks: int = 0  # chunks (or format-1 files) read back intact
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (backup id, why)
    problem: str = ""


def verify_sample(
    replica: Replica, *, chunks: int, backups: int, rng: random.Random | None = None
) -> SampleOutcome:
    """Reads back `chunks` chunks drawn at random from the replica's copies of its newest
    backup and of up to `backups` - 1 others picked at random among those it holds. Never
    raises for the replica's sake."""
    rng = rng or random.SystemRandom()
    held = {
        row.backup_id: row
        for row in BackupReplica.objects.filter(
            replica=replica.name, status=BackupReplica.Status.REPLICATED
        )
    }
    copies = list(_replicable().filter(pk__in=list(held)).order_by("-created_at"))
    if len(copies) > backups:
        copies = copies[:1] + rng.sample(copies[1:], max(backups - 1, 0))
    outcome = SampleOutcome(replica.name, backups=len(copies))
    if not copies:
        return outcome
    by_id = {str(backup.id): backup for backup in copies}
    try:
        with connected(replica) as storage:
            report = replication.verify_sample(
                storage,
                locations=[archives.location(backup) for backup in copies],
                count=chunks,
                rng=rng,
            )
    except Exception as exc:  # noqa: BLE001 - a replica's failure is one line
        outcome.problem = _why(exc)
        logger.warning("Replica %s: %s", replica.name, outcome.problem)
        return outcome
    outcome.chunks = report.checked
    for backup_id, why in report.damaged.items():
        outcome.damaged.append((backup_id, why))
        _fail(
            [held[by_id[backup_id].pk]],
            f"A sample of the replica's copy failed verification: {why}",
        )
    return outcome


def chunk_sources() -> list[replication.ReplicaChunkSource]:
    """Every configured replica as a source of damaged chunks, for a repair of the primary
    (each connects only if a chunk is wanted)."""
    try:
        replicas = configured()
    except FailsafeError:
        return []
    return [
        replication.ReplicaChunkSource(
            f"replica {replica.name}", lambda replica=replica: connected(replica)
        )
        for replica in replicas
    ]


# --- how far behind each replica is --------------------------------------------------


@dataclass
class ReplicaLag:
    """Where one replica stands: its newest copy, how far behind it is, what failed."""

    name: str
    where: str
    last_backup_id: str | None = None
    last_backup_at: datetime.datetime | None = None
    last_verified_at: datetime.datetime | None = None
    # Complete backups it does not hold (pending or failed), and the time between the
    # newest backup and its newest copy (0 when it holds the newest; None: nothing yet).
    behind: int = 0
    lag_seconds: float | None = None
    failing: list[tuple[str, str]] = field(default_factory=list)  # (backup id, why)

    @property
    def up_to_date(self) -> bool:
        return self.behind == 0 and not self.failing


def lag() -> list[ReplicaLag]:
    """How far behind each configured replica is, from the rows alone (nothing is asked
    of any storage: a status page does no hidden work)."""
    try:
        replicas = configured()
    except FailsafeError:
        return []  # configuration_problem() says why
    backups = list(_replicable().order_by("-created_at").values_list("pk", "created_at"))
    newest_at = backups[0][1] if backups else None
    result = []
    for replica in replicas:
        rows = {
            row.backup_id: row
            for row in BackupReplica.objects.filter(replica=replica.name, backup__in=_replicable())
        }
        entry = ReplicaLag(name=replica.name, where=replica.where)
        for pk, created_at in backups:
            row = rows.get(pk)
            if row is not None and row.status == BackupReplica.Status.REPLICATED:
                if entry.last_backup_id is None:
                    entry.last_backup_id = str(pk)
                    entry.last_backup_at = created_at
                    entry.last_verified_at = row.verified_at
                continue
            entry.behind += 1
            if row is not None and row.status == BackupReplica.Status.FAILED:
                entry.failing.append((str(pk), row.error))
        if entry.last_backup_at is not None and newest_at is not None:
            entry.lag_seconds = (newest_at - entry.last_backup_at).total_seconds()
        result.append(entry)
    return result


def problems(lags: list[ReplicaLag]) -> list[str]:
    """What the status calls a problem: replica settings that cannot be used, and each
    replica with copies that failed, one line each."""
    found = [problem for problem in [configuration_problem()] if problem]
    found += [
        f"Replica {entry.name}: {len(entry.failing)} backups failed to replicate "
        f"(latest reason: {entry.failing[0][1]}); failsafe_replicate tries again"
        for entry in lags
        if entry.failing
    ]
    return found


# --- deleting on replicas ------------------------------------------------------------


@dataclass
class ReplicaCleanup:
    """What deleting or collecting did on one replica: done, kept for a lock, or failed."""

    name: str
    deleted: int = 0
    locked: list[str] = field(default_factory=list)
    error: str = ""
    garbage: GarbageReport | None = None


def delete(backup: Backup) -> list[ReplicaCleanup]:
    """Deletes the backup's own file (its manifest) on every replica, but what is still
    retained; chunks are the garbage collector's. Never raises for a replica's sake."""
    results = []
    for replica in configured():
        result = ReplicaCleanup(name=replica.name)
        try:
            with connected(replica) as storage:
                report = replication.delete_archive(storage, backup.archive_name)
            result.deleted, result.locked = len(report.deleted), report.locked
        except Exception as exc:  # noqa: BLE001 - reported per replica, one line
            result.error = _why(exc)
        results.append(result)
    return results


def collect_garbage(*, grace_seconds: int, dry_run: bool) -> list[ReplicaCleanup]:
    """The garbage collector on every replica, keeping what is still retained."""
    manifests = [
        archives.location(backup)
        for backup in Backup.objects.exclude(archive_name="")
        if get_store().shares_parts(backup.archive_name)
    ]
    results = []
    for replica in configured():
        result = ReplicaCleanup(name=replica.name)
        try:
            with connected(replica) as storage:
                result.garbage, result.locked = replication.collect_garbage(
                    storage, manifests=manifests, grace_seconds=grace_seconds, dry_run=dry_run
                )
            result.deleted = result.garbage.deleted
        except Exception as exc:  # noqa: BLE001 - reported per replica, one line
            result.error = _why(exc)
        results.append(result)
    return results
