"""Restore drills: proving, on a schedule or on demand, that a backup really restores.

A drill never touches the live data (failsafe.drills restores into a scratch database), so
it does not take the operation lock that backups and restores share: an emergency backup
must never wait for a drill. It takes a lock of its own instead (oplock, named "drill"), so
two drills never run at once, and a drill left RUNNING by a process that died is marked
failed by the next one.

A drill that fails (an unreadable archive, rows that differ, a schema migrate cannot build)
is a result, not a refusal: the Drill row says FAILED with one line, and someone is told.
Bad input (a malformed id, no such backup, nothing to drill) is refused as usual.
"""

from __future__ import annotations

from functools import partial

from django.db.models import Exists, OuterRef
from django.utils import timezone

from .. import archives, drills, notify, oplock
from .. import restore as restore_engine
from ..exceptions import FailsafeError, NoSafeBackupYet, as_refusal, one_line
from ..models import Backup, Drill
from ..progress import Progress, reporting
from ..snapshot import iso
from .backups import last_safe_backup, usable_backup
from .guards import Actor, audited, require_superadmin, require_superadmin_or_system
from .results import VerifiedRestore

ACTION_DRILL = "failsafe.drill"
# The lock row that keeps two drills from running at once (never the backups' lock).
DRILL_LOCK_NAME = "drill"
EVENT_DRILL_FAILED = "drill_failed"
# A drill's error is one line of at most this many characters.
ERROR_MAX_LENGTH = 1000
NO_SAFE_BACKUP = (
    "No safe backup to drill yet: mark a known-good backup safe "
    "(manage.py failsafe_marksafe BACKUP_ID), or name the backup to drill"
)


def run_drill(*, actor: Actor, backup_id=None, progress: Progress | None = None) -> Drill:
    """Restore a backup (the one named, else the newest safe one) into a scratch database
    and check every captured model's rows against its archive; return the Drill row.

    A drill that ran and failed is returned (outcome FAILED), audited as FAILED and
    notified. Refuses a malformed or unknown id, a backup that did not complete, no safe
    backup when none is named, and a drill while another one runs (OperationInProgress).
    """
    target = str(backup_id)[:64] if backup_id else "newest safe"
    try:
        with audited(actor, ACTION_DRILL, target=target) as details, reporting(progress):
            require_superadmin_or_system(actor)
            backup = usable_backup(backup_id) if backup_id else _newest_safe()
            holder = f"restore drill of {backup.id} by {actor.username}"
            with oplock.operation_lock(holder=holder, name=DRILL_LOCK_NAME):
                _fail_abandoned()
                drill = Drill.objects.create(
                    backup=backup,
                    backup_label=str(backup.id),
                    started_by_username=actor.username,
                )
                _drill(drill, backup)
            details.update(
                drill_id=drill.pk,
                backup_id=str(backup.id),
                outcome=drill.outcome,
                rows_checked=drill.rows_checked,
                scratch_database=drill.scratch_database,
            )
            if not drill.passed:
                _tell_someone(drill, backup)
                # Leaves the block as a failure, so the audit trail records the drill FAILED.
                raise _DrillFailed(drill)
            return drill
    except _DrillFailed as failed:
        return failed.drill


class _DrillFailed(FailsafeError):
    """A drill that ran and failed: its one line, for the audit event; the row is the result."""

    def __init__(self, drill: Drill):
        super().__init__(drill.error)
        self.drill = drill


def _newest_safe() -> Backup:
    backup = last_safe_backup()
    if backup is None:
        raise NoSafeBackupYet(NO_SAFE_BACKUP)
    return backup


def _fail_abandoned() -> None:
    """Under the drill lock no other drill runs: a RUNNING one was left by a dead process."""
    Drill.objects.filter(outcome=Drill.Outcome.RUNNING).update(
        outcome=Drill.Outcome.FAILED,
        finished_at=timezone.now(),
        error="The process running this drill ended before it finished",
    )


def _drill(drill: Drill, backup: Backup) -> None:
    """Run the drill and record its outcome on the row; never raises for a failed check."""
    state = backup.state or {}
    metrics = state.get("SystemMetrics") or {}

    def remember_scratch(where: str) -> None:
        drill.scratch_database = where
        drill.save(update_fields=["scratch_database"])

    try:
        # A backup of another schema cannot be restored by today's code: a failed drill.
        restore_engine.check_schema(archived_migrations=metrics.get("Migrations", {}))
        report = drills.run(
            sections_factory=partial(archives.open_sections, backup),
            recorded_counts=metrics.get("ModelCounts") or {},
            total_rows=archives.rows_counted(state),
            on_scratch=remember_scratch,
        )
    except Exception as exc:  # noqa: BLE001 - any failure of the drill is its result
        drill.outcome = Drill.Outcome.FAILED
        drill.error = _one_line(exc)
    else:
        drill.rows_checked = report.rows_checked
        drill.models_checked = {
            check.label: {
                "expected": check.expected,
                "found": check.found,
                "differences": check.differences,
                "examples": check.examples,
            }
            for check in report.models
        }
        drill.outcome = Drill.Outcome.PASSED if report.passed else Drill.Outcome.FAILED
        drill.error = report.problem[:ERROR_MAX_LENGTH]
    drill.finished_at = timezone.now()
    drill.save()


def _one_line(exc: Exception) -> str:
    return one_line(as_refusal(exc, doing="The restore drill"))[:ERROR_MAX_LENGTH]


def _tell_someone(drill: Drill, backup: Backup) -> None:
    short = str(backup.id)[:8]
    notify.send(
        event=EVENT_DRILL_FAILED,
        subject=f"Restore drill failed: backup {short} did not restore cleanly",
        lines=[
            f"The restore drill of backup {backup.id} ({backup.get_type_display()}, taken "
            f"{iso(backup.created_at, timespec='seconds')}) failed: {drill.error}",
            "Until a drill passes, this backup is not proven restorable. The live data was "
            "not touched.",
            f"Check its archive: manage.py failsafe_verify {backup.id} (--repair rewrites "
            "damaged chunks from the live rows that still hold them), then drill it again: "
            f"manage.py failsafe_drill {backup.id}",
        ],
        key=f"{EVENT_DRILL_FAILED}:{backup.id}",
        data={"backup_id": str(backup.id), "drill_id": drill.pk, "error": drill.error},
    )


def list_drills(*, actor: Actor):
    """Every drill, newest first, with its backup."""
    with audited(actor, "failsafe.drills"):
        require_superadmin(actor)
        return Drill.objects.select_related("backup").order_by("-started_at", "-pk")


def last_verified_restore() -> Drill | None:
    """The newest passed drill of a backup that still exists, unless a later drill of the
    same backup failed: the last backup proven restorable. Its `backup` comes with it."""
    failed_since = Drill.objects.filter(
        backup=OuterRef("backup"),
        outcome=Drill.Outcome.FAILED,
        started_at__gt=OuterRef("started_at"),
    )
    return (
        Drill.objects.filter(
            outcome=Drill.Outcome.PASSED,
            backup__isnull=False,
            backup__status=Backup.Status.COMPLETE,
        )
        .exclude(Exists(failed_since))
        .select_related("backup")
        .order_by("-finished_at", "-pk")
        .first()
    )


def verified_restore(now=None) -> VerifiedRestore | None:
    """last_verified_restore() as the status carries it, with its age at `now`."""
    drill = last_verified_restore()
    if drill is None:
        return None
    drilled_at = drill.finished_at or drill.started_at
    now = now or timezone.now()
    return VerifiedRestore(
        backup_id=str(drill.backup_id),
        drill_id=drill.pk,
        drilled_at=drilled_at,
        age_seconds=max(0, int((now - drilled_at).total_seconds())),
        rows_checked=drill.rows_checked,
    )
