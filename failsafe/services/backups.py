"""Backups: finding, taking, marking safe, verifying, deleting, and collecting their parts."""

from __future__ import annotations

import re
import uuid

from django.db import transaction
from django.utils import timezone

from .. import archives, audit, capture, oplock, replicas
from ..conf import setting
from ..exceptions import (
    AmbiguousBackupId,
    ArchiveCorrupt,
    BackupNotFound,
    BackupNotUsable,
    FailsafeError,
    InvalidBackupId,
    one_line,
)
from ..models import AuditEvent, Backup
from ..progress import Progress, reporting, stage
from . import alerts
from .change_counts import record_change_counts
from .guards import (
    ACTION_BACKUP_FAILED,
    ACTION_DELETE,
    ACTION_GC,
    Actor,
    audited,
    require_failsafe_password,
    require_superadmin,
    require_superadmin_or_system,
)
from .results import CollectionReport, DeleteResult, RepairResult, VerifyResult

# A backup id as every door lists it: lowercase, with its four dashes. Nothing else is
# taken for one (no braces, capitals or urn: prefix), but for a prefix of that form with at
# least MIN_PREFIX_DIGITS hex digits, which must name exactly one backup.
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ID_PREFIX = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{1,4}){0,3}(-[0-9a-f]{1,12})?-?")
MIN_PREFIX_DIGITS = 8


def _invalid(value) -> InvalidBackupId:
    return InvalidBackupId(f"Invalid backup id: {str(value)[:64]!r}")


def parse_backup_id(value) -> uuid.UUID:
    """The backup id `value` spells in full; InvalidBackupId for anything else."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or not _CANONICAL_ID.fullmatch(value):
        raise _invalid(value)
    return uuid.UUID(value)


def get_backup(backup_id) -> Backup:
    """The backup a full id or a unique prefix (8+ hex digits) names."""
    if isinstance(backup_id, str) and not _CANONICAL_ID.fullmatch(backup_id):
        if not _ID_PREFIX.fullmatch(backup_id):
            raise _invalid(backup_id)
        matches = list(Backup.objects.filter(id__startswith=backup_id.rstrip("-"))[:2])
        if len(matches) > 1:
            raise AmbiguousBackupId(
                f"Backup id prefix {backup_id} names several backups: give more of the id"
            )
        if not matches:
            raise BackupNotFound(f"Backup not found: {backup_id}")
        return matches[0]
    pk = parse_backup_id(backup_id)
    try:
        return Backup.objects.get(pk=pk)
    except Backup.DoesNotExist:
        raise BackupNotFound(f"Backup not found: {pk}") from None


def usable_backup(backup_id) -> Backup:
    backup = get_backup(backup_id)
    if not backup.is_complete:
        raise BackupNotUsable(f"Backup {backup.id} is {backup.status.lower()}: it has no archive")
    return backup


def last_safe_backup() -> Backup | None:
    return (
        Backup.objects.filter(is_safe=True, status=Backup.Status.COMPLETE)
        .order_by("-created_at")
        .first()
    )


def list_backups(*, actor: Actor, backup_type: str | None = None, safe: bool | None = None):
    with audited(actor, "failsafe.backups"):
        require_superadmin(actor)
        # Each backup's replica rows come with it: the API lists them per backup.
        backups = Backup.objects.order_by("-created_at").prefetch_related("replicas")
        if backup_type:
            backups = backups.filter(type=backup_type.upper())
        if safe is not None:
            backups = backups.filter(is_safe=safe)
        return backups


def create_backup(
    *,
    actor: Actor,
    backup_type: str = Backup.Type.MANUAL,
    reason: str = "",
    progress: Progress | None = None,
) -> Backup:
    with audited(actor, "failsafe.backup") as details, reporting(progress):
        # The schedules back up as the system (services.scheduled_backup).
        require_superadmin_or_system(actor)
        if backup_type not in (Backup.Type.MANUAL, Backup.Type.SCHEDULED):
            raise FailsafeError(f"Backup type must be MANUAL or SCHEDULED, not {backup_type!r}")
        backup = take_backup(actor=actor, backup_type=backup_type, reason=reason)
        details.update(backup_id=str(backup.id), type=backup.type)
        return backup


def take_backup(*, actor: Actor, backup_type: str, reason: str) -> Backup:
    """Capture the live state into a new archive; a failure leaves a FAILED row, no archive."""
    holder = f"{backup_type.lower()} backup by {actor.username or 'system'}"
    with oplock.operation_lock(holder=holder, reentrant=True):
        backup = Backup.objects.create(
            type=backup_type,
            reason=reason,
            created_by_id=getattr(actor.user, "pk", None),
            created_by_username=actor.username,
        )
        try:
            with capture.consistent_read():
                state = capture.system_state()
                head_seq, head_hash = audit.head()
                label = f"{Backup.Type(backup_type).label} backup"
                with stage(label, archives.rows_counted(state)):
                    info = archives.write(backup, state=state, sections=capture.live_sections())
        except Exception as exc:
            backup.status = Backup.Status.FAILED
            backup.error = str(exc)[:2000]
            backup.finished_at = timezone.now()
            backup.save(update_fields=["status", "error", "finished_at"])
            # Counted by /metrics (raos_failsafe_backup_failures_total): the trail keeps the
            # count when retention later forgets the FAILED row.
            audit.record(
                action=ACTION_BACKUP_FAILED,
                outcome=AuditEvent.Outcome.FAILED,
                source=actor.source,
                actor=actor.user,
                target=str(backup.id),
                details={"type": backup.type, "error": one_line(exc)},
                ip=actor.ip,
            )
            alerts.backup_failed(backup=backup, error=exc)
            raise
        backup.state = state
        backup.archive_name = info.name
        backup.archive_size = info.size
        backup.bytes_written = info.bytes_written
        backup.archive_sha256 = info.sha256
        backup.format_version = info.format_version
        backup.key_id = info.key_id
        backup.audit_head_seq = head_seq or None
        backup.audit_head_hash = head_hash if head_seq else ""
        backup.status = Backup.Status.COMPLETE
        backup.finished_at = timezone.now()
        backup.save()
        # Off-site copies: a replica that is down fails its own row (failsafe_replicate
        # tries again), never the backup.
        replicas.replicate_new(backup)
        if backup.type == Backup.Type.SCHEDULED:
            # What anomaly detection learns each model's usual churn from; never fails
            # the backup.
            record_change_counts(backup)
        return backup


def verify(
    *,
    actor: Actor,
    backup_id=None,
    all_backups: bool = False,
    progress: Progress | None = None,
) -> list[VerifyResult]:
    target = "all" if all_backups else str(backup_id or "latest")[:64]
    with audited(actor, "failsafe.verify", target=target) as details, reporting(progress):
        require_superadmin(actor)
        if all_backups:
            backups = list(Backup.objects.filter(status=Backup.Status.COMPLETE))
        elif backup_id:
            backups = [usable_backup(backup_id)]
        else:
            newest = Backup.objects.filter(status=Backup.Status.COMPLETE).first()
            if newest is None:
                raise BackupNotFound("No backups to verify yet")
            backups = [newest]
        results = _verify_each(backups, checked_chunks=set())
        details.update(
            checked=len(results), corrupt=[str(r.backup.id) for r in results if not r.ok]
        )
        return results


def _verify_each(backups: list[Backup], *, checked_chunks: set[bytes]) -> list[VerifyResult]:
    # Backups share most of their chunks: each is read and checked once per run.
    results = []
    for backup in backups:
        try:
            counts = archives.verify(backup, checked_chunks=checked_chunks)
            results.append(VerifyResult(backup, True, counts=counts))
        except ArchiveCorrupt as exc:
            results.append(VerifyResult(backup, False, error=str(exc)))
    return results


def repair(*, actor: Actor, backup_id=None, progress: Progress | None = None) -> RepairResult:
    """Verifies every backup (or the one named), rewrites the damaged chunks of those that
    fail from the live rows that still hold them, and verifies those again.

    The backups still failing afterwards are the ones that stay damaged: rows of theirs
    are no longer live (or their manifest is unreadable, or their single-file archive has
    no parts to rewrite). A rewritten chunk holds exactly the rows it was named after, so
    repairing never changes what any backup holds.
    """
    with audited(actor, "failsafe.repair", target=str(backup_id or "all")[:64]) as details:
        require_superadmin(actor)
        if backup_id:
            backups = [usable_backup(backup_id)]
        else:
            backups = list(Backup.objects.filter(status=Backup.Status.COMPLETE))
        holder = f"repair of backups by {actor.username or 'system'}"
        with reporting(progress), oplock.operation_lock(holder=holder):
            checked_chunks: set[bytes] = set()
            results = _verify_each(backups, checked_chunks=checked_chunks)
            damaged = [result.backup for result in results if not result.ok]
            report = (
                archives.repair(
                    damaged,
                    checked_chunks=checked_chunks,
                    other_sources=replicas.chunk_sources(),
                )
                if damaged
                else None
            )
            if report and report.rewritten:
                again = _verify_each(damaged, checked_chunks=checked_chunks)
                by_backup = {result.backup.pk: result for result in again}
                results = [by_backup.get(result.backup.pk, result) for result in results]
        result = RepairResult(
            results=results,
            damaged_chunks=len(report.damaged) if report else 0,
            rewritten_chunks=len(report.rewritten) if report else 0,
            rewritten_from=sorted(set(report.rewritten.values())) if report else [],
            lost_chunks=dict(report.lost_by_backup) if report else {},
        )
        details.update(
            checked=len(results),
            damaged_chunks=result.damaged_chunks,
            rewritten_chunks=result.rewritten_chunks,
            still_damaged=[str(r.backup.id) for r in result.still_damaged],
        )
        return result


def _refuse_deletion(backup: Backup, *, force: bool) -> None:
    if force:
        return
    if backup.status == Backup.Status.RUNNING:
        raise FailsafeError(
            f"Backup {backup.id} is still running: wait for it to finish "
            "(if the process that took it is gone, pass --force)"
        )
    if (
        backup.is_safe
        and backup.is_complete
        and not Backup.objects.filter(is_safe=True, status=Backup.Status.COMPLETE)
        .exclude(pk=backup.pk)
        .exists()
    ):
        raise FailsafeError(
            f"Backup {backup.id} is the only safe backup: without it there is nothing to "
            "compare against or restore to. Mark another backup safe first, or pass --force"
        )


def delete_backup(
    *, actor: Actor, backup_id, password: str | None = None, force: bool = False
) -> DeleteResult:
    """Deletes a backup's row and its own archive (a manifest, or a format-1 file).

    Refuses a RUNNING backup and the only safe one unless `force`; a backup that is really
    being written is refused even then, because its writer holds the operation lock.
    Shared chunks stay until collect_garbage finds no other backup naming them.
    """
    with audited(actor, ACTION_DELETE, target=str(backup_id)[:64]) as details:
        require_superadmin(actor)
        details["force"] = force
        backup = get_backup(backup_id)
        require_failsafe_password(actor, ACTION_DELETE, password)
        holder = f"deletion of backup {backup.id} by {actor.username}"
        with oplock.operation_lock(holder=holder), transaction.atomic():
            backup = Backup.objects.select_for_update().get(pk=backup.pk)
            _refuse_deletion(backup, force=force)
            result = DeleteResult(
                backup_id=str(backup.id),
                backup_type=backup.type,
                was_safe=backup.is_safe,
                left_shared_parts=archives.keeps_shared_parts(backup),
            )
            details.update(type=backup.type, status=backup.status, was_safe=backup.is_safe)
            result.replicas = forget_backup(backup)
            details["replicas"] = [
                {"replica": entry.name, "kept_locked": len(entry.locked), "error": entry.error}
                for entry in result.replicas
            ]
        return result


def forget_backup(backup: Backup) -> list[replicas.ReplicaCleanup]:
    """Deletes a backup's own archive (its manifest), its manifest on each replica but where
    Object Lock still retains it, then its row; returns what each replica did.

    The caller holds the operation lock and the row (select_for_update) in a transaction;
    deleting a backup and retention's pruning both end here.
    """
    # The file first: if deleting the row then fails, the row says the archive is missing
    # and the deletion can be retried; the other way round, a manifest nobody lists would
    # keep its chunks forever.
    archives.delete(backup)
    # A backup that never completed has no file anywhere: no replica to connect to.
    cleanups = replicas.delete(backup) if backup.archive_name else []
    backup.delete()
    return cleanups


def collect_garbage(
    *, actor: Actor, password: str | None = None, dry_run: bool = False
) -> archives.GarbageReport:
    """Deletes the chunks no backup's manifest names, older than GC_GRACE_SECONDS.

    Runs under the operation lock, so never while a backup is writing chunks: raises
    OperationInProgress then. Raises ArchiveCorrupt, deleting nothing, when a manifest
    cannot be read.
    """
    with audited(actor, ACTION_GC) as details:
        require_superadmin(actor)
        details["dry_run"] = dry_run
        if not dry_run:
            require_failsafe_password(actor, ACTION_GC, password)
        with oplock.operation_lock(holder=f"garbage collection by {actor.username or 'system'}"):
            report = collect_unreferenced(dry_run=dry_run)
        details.update(
            deleted=report.deleted,
            bytes_freed=report.bytes_freed,
            kept_recent=report.kept_recent,
            missing=report.missing,
            replicas=[
                {
                    "replica": entry.name,
                    "deleted": entry.deleted,
                    "kept_locked": len(entry.locked),
                    "error": entry.error,
                }
                for entry in report.replicas
            ],
        )
        return report


def collect_unreferenced(*, dry_run: bool) -> CollectionReport:
    """The chunks no manifest names, older than GC_GRACE_SECONDS, deleted from the store and
    from each replica (but what Object Lock still retains there). The caller holds the
    operation lock; collect_garbage and retention's pruning both end here."""
    grace_seconds = int(setting("GC_GRACE_SECONDS"))
    report = archives.collect_garbage(grace_seconds=grace_seconds, dry_run=dry_run)
    return CollectionReport.of(
        report, replicas=replicas.collect_garbage(grace_seconds=grace_seconds, dry_run=dry_run)
    )
