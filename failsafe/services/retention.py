"""Retention: forgetting the backups the policy no longer keeps, and what keeps one.

`prune` plans with failsafe.retention, forgets each backup the plan lets go the way
deleting a backup does (manifest, replica manifests, row), then collects the chunks no
backup names any more. Pinning keeps a backup from it and needs no secret. Unpinning, and
acknowledging an emergency backup (kept until someone has reviewed it), let retention delete
the backup, so both need the failsafe password, as deleting a backup does: a stolen session
must not be enough to make the evidence of an incident go away.
"""

from __future__ import annotations

from collections import Counter

from django.db import transaction
from django.utils import timezone

from .. import oplock, retention
from ..exceptions import FailsafeError, as_refusal, one_line
from ..models import Backup
from ..replicas import ReplicaCleanup
from .backups import collect_unreferenced, forget_backup, get_backup
from .guards import (
    Actor,
    audited,
    require_failsafe_password,
    require_superadmin,
    require_superadmin_or_system,
)
from .results import PruneResult

ACTION_PRUNE = "failsafe.prune"
ACTION_PIN = "failsafe.pin"
ACTION_UNPIN = "failsafe.unpin"
ACTION_ACKNOWLEDGE = "failsafe.acknowledge"

# What the plan reads of each backup; the captured state and the investigation can be large
# and a plan may cover years of hourly backups.
_HEAVY_FIELDS = ("state", "change_counts", "investigation")
# What may not have changed between planning and forgetting a backup.
_DECIDING_FIELDS = ("status", "type", "is_safe", "pinned", "reviewed_at")


def _backups():
    return Backup.objects.defer(*_HEAVY_FIELDS)


def _plan() -> retention.Plan:
    return retention.plan(_backups(), policy=retention.Policy.configured())


def prune(*, actor: Actor, dry_run: bool = False, password: str | None = None) -> PruneResult:
    """Forget every backup the retention policy does not keep, then collect their chunks.

    The failsafe itself (the daily schedule) needs no password; a person pruning for real
    needs the failsafe password, as deleting a backup does; a dry run changes nothing and
    needs none. Raises OperationInProgress while a backup or restore runs.
    """
    with audited(actor, ACTION_PRUNE) as details:
        require_superadmin_or_system(actor)
        details["dry_run"] = dry_run
        if dry_run:
            result = PruneResult(plan=_plan(), dry_run=True)
        else:
            if not actor.is_system:
                require_failsafe_password(actor, ACTION_PRUNE, password)
            with oplock.operation_lock(holder=f"retention by {actor.username}"):
                # Planned under the lock: no backup can start or finish meanwhile.
                plan = _plan()
                details["planned"] = {"keep": len(plan.kept), "forget": len(plan.forgotten)}
                result = PruneResult(plan=plan, dry_run=False)
                _forget(result, details)
                try:
                    result.garbage = collect_unreferenced(dry_run=False)
                except Exception as exc:  # noqa: BLE001 - the forgetting stands; said in one line
                    result.garbage_error = one_line(as_refusal(exc, doing="Collecting chunks"))
        details.update(_counts(result))
        return result


def _forget(result: PruneResult, details: dict) -> None:
    by_replica: dict[str, ReplicaCleanup] = {}
    for decision in result.plan.forgotten:
        planned = decision.backup
        with transaction.atomic():
            current = Backup.objects.defer(*_HEAVY_FIELDS).select_for_update()
            row = current.filter(pk=planned.pk).first()
            if row is None:
                continue  # deleted meanwhile by someone else: nothing left to forget
            changed = [
                name for name in _DECIDING_FIELDS if getattr(row, name) != getattr(planned, name)
            ]
            if changed:
                # Pinned, marked safe or acknowledged after the plan was made: not ours to
                # forget now; the next run plans it again.
                decision.keep = True
                decision.reasons = [f"changed while pruning ({', '.join(changed)})"]
                result.skipped += 1
                continue
            for cleanup in forget_backup(row):
                _merge(by_replica, cleanup)
        result.forgotten += 1
        # Filled in as it goes: a failure half-way is audited with what was done.
        details["forgotten"] = result.forgotten
    result.replicas = list(by_replica.values())


def _merge(by_replica: dict[str, ReplicaCleanup], cleanup: ReplicaCleanup) -> None:
    total = by_replica.setdefault(cleanup.name, ReplicaCleanup(name=cleanup.name))
    total.deleted += cleanup.deleted
    total.locked += cleanup.locked
    total.error = total.error or cleanup.error


def _counts(result: PruneResult) -> dict:
    """What the audit keeps of a run: counts only, never the ids of thousands of backups."""
    plan = result.plan
    forgotten_by_type = Counter(decision.backup.type for decision in plan.forgotten)
    counts = {
        "policy": plan.policy.describe(),
        "kept": len(plan.kept),
        "forgotten": result.forgotten if not result.dry_run else len(plan.forgotten),
        "forgotten_by_type": dict(sorted(forgotten_by_type.items())),
        "forgotten_safe": sum(1 for decision in plan.forgotten if decision.backup.is_safe),
        "skipped": result.skipped,
    }
    if result.garbage is not None:
        counts.update(
            chunks_deleted=result.garbage.deleted,
            bytes_freed=result.garbage.bytes_freed,
            chunks_missing=result.garbage.missing,
        )
    if result.garbage_error:
        counts["garbage_error"] = result.garbage_error
    if result.replicas:
        counts["replicas"] = [
            {
                "replica": entry.name,
                "deleted": entry.deleted,
                "kept_locked": len(entry.locked),
                "error": entry.error,
            }
            for entry in result.replicas
        ]
    return counts


def pin(*, actor: Actor, backup_id, pinned: bool = True, password: str | None = None) -> Backup:
    """Pin a backup (retention never forgets it), or unpin it.

    Pinning only ever keeps more, so it needs no secret; unpinning lets retention delete
    the backup and needs the failsafe password.
    """
    action = ACTION_PIN if pinned else ACTION_UNPIN
    with audited(actor, action, target=str(backup_id)[:64]) as details:
        require_superadmin(actor)
        backup = get_backup(backup_id)
        if not pinned:
            require_failsafe_password(actor, ACTION_UNPIN, password)
        with transaction.atomic():
            backup = Backup.objects.select_for_update().get(pk=backup.pk)
            details.update(type=backup.type, changed=backup.pinned != pinned)
            if backup.pinned != pinned:
                backup.pinned = pinned
                backup.save(update_fields=["pinned"])
        return backup


def acknowledge(*, actor: Actor, backup_id, password: str | None = None) -> Backup:
    """Record that a person has reviewed an EMERGENCY backup; retention may then forget it
    when no rule keeps it, so this needs the failsafe password (as marking it safe does).

    Acknowledging it again changes nothing: the first review is the one on record.
    """
    with audited(actor, ACTION_ACKNOWLEDGE, target=str(backup_id)[:64]) as details:
        require_superadmin(actor)
        backup = get_backup(backup_id)
        if backup.type != Backup.Type.EMERGENCY:
            raise FailsafeError(
                f"Backup {backup.id} is a {backup.get_type_display().lower()} backup: only "
                "emergency backups are acknowledged (retention treats the others by its rules)"
            )
        require_failsafe_password(actor, ACTION_ACKNOWLEDGE, password)
        with transaction.atomic():
            backup = Backup.objects.select_for_update().get(pk=backup.pk)
            details["already_reviewed"] = backup.reviewed_at is not None
            if backup.reviewed_at is None:
                backup.reviewed_at = timezone.now()
                backup.reviewed_by_username = actor.username
                backup.save(update_fields=["reviewed_at", "reviewed_by_username"])
        return backup
