"""Replicas: catching them up, and checking what they hold.

Neither changes what is trusted (a replica only ever receives copies of the primary's
objects, read back and compared), so neither asks for the failsafe password.
"""

from __future__ import annotations

from .. import oplock, replicas
from ..exceptions import ArchiveCorrupt, BackupNotFound
from ..models import Backup
from ..progress import Progress, reporting
from .backups import usable_backup
from .guards import Actor, audited, require_superadmin
from .results import ReplicationResult, ReplicaVerifyResult, VerifyResult

ACTION_REPLICATE = "failsafe.replicate"
ACTION_VERIFY_REPLICA = "failsafe.verify.replica"


def replicate(*, actor: Actor, replica: str | None = None) -> ReplicationResult:
    """Copies to each replica (or the one named) every complete backup it lacks or whose
    copy failed, and reads each copy back. A replica that is down fails its rows with the
    reason; the call itself succeeds, and says so in its result."""
    with audited(actor, ACTION_REPLICATE, target=str(replica or "all")[:200]) as details:
        require_superadmin(actor)
        targets = [replicas.get(replica)] if replica else replicas.configured()
        result = ReplicationResult(replicas=[target.name for target in targets])
        holder = f"replication by {actor.username or 'system'}"
        with oplock.operation_lock(holder=holder):
            for target in targets:
                outcome = replicas.catch_up(target)
                result.rows.extend(outcome.rows)
                if outcome.problem:
                    result.problems.append((target.name, outcome.problem))
        details.update(
            replicas=result.replicas,
            replicated=len(result.replicated),
            failed=[f"{row.replica}: {row.backup_id}" for row in result.failed],
            problems=[f"{name}: {problem}" for name, problem in result.problems],
        )
        return result


def verify_replica(
    *,
    actor: Actor,
    replica: str,
    backup_id=None,
    all_backups: bool = False,
    progress: Progress | None = None,
) -> ReplicaVerifyResult:
    """Checks the replica's copy of the backup named (default: the newest it should hold;
    with `all_backups`, every one): every chunk decrypted and matched to its name, as
    verification checks the primary. A damaged copy fails its row, so failsafe_replicate
    replaces it."""
    target_name = f"{str(replica)[:100]}:{'all' if all_backups else str(backup_id or 'latest')}"
    with audited(actor, ACTION_VERIFY_REPLICA, target=target_name[:255]) as details:
        require_superadmin(actor)
        target = replicas.get(replica)
        complete = Backup.objects.filter(status=Backup.Status.COMPLETE).exclude(archive_name="")
        if all_backups:
            backups = list(complete.order_by("created_at"))
        elif backup_id:
            backups = [usable_backup(backup_id)]
        else:
            newest = complete.order_by("-created_at").first()
            if newest is None:
                raise BackupNotFound("No backups to verify yet")
            backups = [newest]
        result = ReplicaVerifyResult(replica=target.name, where=target.where)
        with reporting(progress), replicas.connected(target) as storage:
            for backup in backups:
                try:
                    counts = replicas.verify(backup, target, storage)
                    result.results.append(VerifyResult(backup, True, counts=counts))
                except ArchiveCorrupt as exc:
                    result.results.append(VerifyResult(backup, False, error=str(exc)))
        details.update(
            replica=target.name,
            checked=len(result.results),
            corrupt=[str(r.backup.id) for r in result.results if not r.ok],
        )
        return result
