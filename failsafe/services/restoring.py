"""Restore, all or nothing, behind the failsafe password and a pre-restore backup."""

from __future__ import annotations

from licensing import services as licensing

from .. import archives, oplock
from .. import restore as restore_engine
from ..models import Backup
from ..progress import Progress, reporting, stage
from .backups import take_backup, usable_backup
from .guards import ACTION_RESTORE, Actor, audited, require_superadmin, secret_attempt
from .results import RestoreResult


def restore(
    *,
    actor: Actor,
    backup_id,
    password: str | None = None,
    dry_run: bool = False,
    allow_cascade: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    with (
        audited(actor, ACTION_RESTORE, target=str(backup_id)[:64]) as details,
        reporting(progress),
    ):
        details.update(dry_run=dry_run, allow_cascade=allow_cascade)
        require_superadmin(actor)
        backup = usable_backup(backup_id)
        if not dry_run:
            licensing.require_failsafe_password_set()
            with secret_attempt(actor, ACTION_RESTORE):
                licensing.require_valid_failsafe_password(password)

        # Refuse a damaged or foreign-schema archive before anything is touched.
        archives.verify(backup)
        restore_engine.check_schema(
            archived_migrations=backup.state.get("SystemMetrics", {}).get("Migrations", {})
        )
        total_rows = archives.rows_counted(backup.state)

        if dry_run:
            with stage("Plan restore", total_rows), archives.open_sections(backup) as stream:
                plan = restore_engine.plan_restore(sections=stream)
            details.update(changes=_plan_counts(plan))
            return RestoreResult(backup=backup, plan=plan, dry_run=True)

        with oplock.operation_lock(holder=f"restore of {backup.id} by {actor.username}"):
            pre_restore = take_backup(
                actor=actor,
                backup_type=Backup.Type.PRE_RESTORE,
                reason=f"Automatic backup before restoring {backup.id}",
            )
            details["pre_restore_backup_id"] = str(pre_restore.id)
            # Writes, verification against the archive and the session flush happen in one
            # transaction inside the engine: any failure rolls all of it back.
            plan = restore_engine.apply_restore(
                sections_factory=lambda: archives.open_sections(backup),
                allow_cascade=allow_cascade,
                total_rows=total_rows,
            )
        details.update(changes=_plan_counts(plan), sessions_flushed=plan.sessions_flushed)
        return RestoreResult(
            backup=backup,
            plan=plan,
            dry_run=False,
            pre_restore_backup=pre_restore,
            sessions_flushed=plan.sessions_flushed,
        )


def _plan_counts(plan: restore_engine.RestorePlan) -> dict:
    """What the audit trail keeps of a plan: counts only, no record names."""
    return {
        m.label: {"insert": m.insert, "update": m.update, "delete": m.delete} for m in plan.models
    }
