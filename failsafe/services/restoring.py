"""Restore, all or nothing, behind the failsafe password and a pre-restore backup."""

from __future__ import annotations

from django.utils import timezone

from .. import archives, audit, oplock
from .. import restore as restore_engine
from ..exceptions import (
    CascadeRefused,
    ConfirmationRequired,
    ServerFailure,
    StorageFull,
    as_refusal,
    one_line,
)
from ..models import AuditEvent, Backup
from ..progress import Progress, reporting, stage
from .backups import take_backup, usable_backup
from .guards import (
    ACTION_EVIDENCE,
    ACTION_RESTORE,
    Actor,
    audited,
    require_failsafe_password,
    require_superadmin,
)
from .results import RestoreResult


def restore(
    *,
    actor: Actor,
    backup_id,
    password: str | None = None,
    dry_run: bool = False,
    allow_cascade: bool = False,
    without_pre_restore_backup: bool = False,
    confirmation: str = "",
    progress: Progress | None = None,
) -> RestoreResult:
    """Make the captured models exactly what the backup holds, or change nothing.

    A backup of the current state is taken first. When it cannot be written (the disk the
    backups live on is full), the operator may still restore by naming that choice:
    `without_pre_restore_backup` with the backup's id typed as `confirmation`.
    """
    with (
        audited(actor, ACTION_RESTORE, target=str(backup_id)[:64]) as details,
        reporting(progress),
    ):
        details.update(dry_run=dry_run, allow_cascade=allow_cascade)
        if without_pre_restore_backup:
            details["without_pre_restore_backup"] = True
        require_superadmin(actor)
        backup = usable_backup(backup_id)
        if without_pre_restore_backup and not dry_run:
            _require_confirmation(backup, confirmation)
        if not dry_run:
            require_failsafe_password(actor, ACTION_RESTORE, password)

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
            pre_restore = None if without_pre_restore_backup else _pre_restore_backup(actor, backup)
            details["pre_restore_backup_id"] = str(pre_restore.id) if pre_restore else None
            # Writes, verification against the archive and the session flush happen in one
            # transaction inside the engine: any failure rolls all of it back.
            try:
                plan = restore_engine.apply_restore(
                    sections_factory=lambda: archives.open_sections(backup),
                    allow_cascade=allow_cascade,
                    total_rows=total_rows,
                    keep_evidence=_evidence_keeper(actor),
                )
            except CascadeRefused:
                # Refused, not failed: the database is as it was, so is the store.
                if pre_restore is not None:
                    _forget(pre_restore)
                    details["pre_restore_backup_id"] = None
                raise
        details.update(
            changes=_plan_counts(plan),
            sessions_flushed=plan.sessions_flushed,
            tokens_revoked=plan.tokens_revoked,
            restored_at=timezone.now(),
        )
        return RestoreResult(
            backup=backup,
            plan=plan,
            dry_run=False,
            pre_restore_backup=pre_restore,
            sessions_flushed=plan.sessions_flushed,
            tokens_revoked=plan.tokens_revoked,
            restored_at=timezone.now(),
        )


def _evidence_keeper(actor: Actor):
    """Copies the admin log entries a cascade deletes into the audit trail, one event each."""

    def keep(entries) -> None:
        for entry in entries:
            content_type = entry.content_type
            audit.record(
                action=ACTION_EVIDENCE,
                outcome=AuditEvent.Outcome.SUCCESS,
                source=actor.source,
                actor=actor.user,
                target=f"admin log entry #{entry.pk}",
                details={
                    "when": entry.action_time,
                    "by": entry.user.get_username() if entry.user_id else None,
                    "record": f"{content_type.app_label}.{content_type.model} "
                    f"#{entry.object_id} {entry.object_repr}"
                    if content_type
                    else entry.object_repr,
                    "change": entry.get_change_message(),
                    "flag": entry.action_flag,
                },
                ip=actor.ip,
            )

    return keep


def _forget(pre_restore: Backup) -> None:
    """Remove a pre-restore backup whose restore was refused (its chunks go with gc)."""
    archives.delete(pre_restore)
    pre_restore.delete()


def _require_confirmation(backup: Backup, confirmation: str) -> None:
    if (confirmation or "").strip().lower() != str(backup.id):
        raise ConfirmationRequired(
            "Restoring without a pre-restore backup keeps no copy of the current state: "
            f"confirm by typing the backup id {backup.id}"
        )


def _pre_restore_backup(actor: Actor, backup: Backup) -> Backup:
    try:
        return take_backup(
            actor=actor,
            backup_type=Backup.Type.PRE_RESTORE,
            reason=f"Automatic backup before restoring {backup.id}",
        )
    except Exception as exc:
        refusal = as_refusal(exc, doing="The pre-restore backup")
        failure_class = StorageFull if isinstance(refusal, StorageFull) else ServerFailure
        failure = failure_class(
            f"{one_line(refusal)}. Nothing was restored. Free space and retry, or restore "
            "without a pre-restore backup (--without-pre-restore-backup, confirmed with the "
            "backup id)"
        )
        failure.remedies = {
            "--without-pre-restore-backup, confirmed with the backup id": {
                "api": '"without_pre_restore_backup": true, with "confirm": the backup id',
                "admin": 'the box "Restore without a backup of the current state", with the '
                "backup id typed below it",
            }
        }
        raise failure from exc


def _plan_counts(plan: restore_engine.RestorePlan) -> dict:
    """What the audit trail keeps of a plan: counts only, no record names."""
    return {
        m.label: {"insert": m.insert, "update": m.update, "delete": m.delete} for m in plan.models
    }
