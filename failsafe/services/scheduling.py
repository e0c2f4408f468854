"""What the failsafe does by itself: a scheduled backup, replication catch-up, and running
whatever schedule is due (failsafe_run_due, for sites without a Celery worker).

Beat (a Celery worker started with --beat) sends the tasks of failsafe/tasks.py on the
django-celery-beat rows (failsafe/schedules.py); `run_due` reads the same rows and runs the
same operations in this process, so cron can stand in for the worker.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from django.utils import timezone

from .. import oplock, replicas, schedules
from ..exceptions import REFUSALS, NoSafeBackupYet, NotSuperAdmin, as_refusal, one_line
from ..models import Backup
from .backups import create_backup
from .guards import Actor, audited, require_superadmin, require_superadmin_or_system
from .replication import ACTION_REPLICATE
from .results import CatchUpResult, ReplicationResult, RunDueResult, TaskOutcome

logger = logging.getLogger(__name__)

ACTION_RUN_DUE = "failsafe.run_due"
ACTION_SCHEDULES = "failsafe.schedules"
ACTION_DEFAULT_SCHEDULES = "failsafe.schedules.defaults"

# What a catch-up reads back from each replica: chunks drawn at random from its copies of
# the newest backup and of a few others (verify_replica --all reads every one).
SAMPLE_CHUNKS = 16
SAMPLE_BACKUPS = 5

# Each task's operation by the name of the service that does it (failsafe/tasks.py sends
# the same tasks through Celery). Looked up when run, so that each is the one the services
# export then.
OPERATIONS = {
    "failsafe.scheduled_backup": "scheduled_backup",
    "failsafe.retention": "prune",
    "failsafe.drift_watch": "watch_drift",
    "failsafe.drill": "run_drill",
    "failsafe.replication": "replication_catch_up",
    "failsafe.overdue": "check_overdue",
}


def scheduled_backup(*, actor: Actor, reason: str = "") -> Backup:
    """A SCHEDULED backup, taken as the system (or a SuperAdmin); audited "failsafe.backup"."""
    return create_backup(actor=actor, backup_type=Backup.Type.SCHEDULED, reason=reason)


def replication_catch_up(*, actor: Actor, rng: random.Random | None = None) -> CatchUpResult:
    """Copies to each configured replica every backup it lacks or whose copy failed, then
    reads back a random sample of its chunks. A replica that is down or damaged is its own
    line in the result (and its rows'), never a refusal of the whole."""
    with audited(actor, ACTION_REPLICATE, target="catch-up") as details:
        require_superadmin_or_system(actor)
        targets = replicas.configured()
        result = CatchUpResult(ReplicationResult(replicas=[target.name for target in targets]))
        holder = f"replication catch-up by {actor.username}"
        with oplock.operation_lock(holder=holder):
            for target in targets:
                outcome = replicas.catch_up(target)
                result.replication.rows.extend(outcome.rows)
                if outcome.problem:
                    result.replication.problems.append((target.name, outcome.problem))
                    continue  # nothing to read back from a replica that was not reached
                result.samples.append(
                    replicas.verify_sample(
                        target, chunks=SAMPLE_CHUNKS, backups=SAMPLE_BACKUPS, rng=rng
                    )
                )
        details.update(
            replicas=result.replication.replicas,
            replicated=len(result.replication.replicated),
            failed=[f"{row.replica}: {row.backup_id}" for row in result.replication.failed],
            sampled_chunks=sum(sample.chunks for sample in result.samples),
            damaged=[f"{name}: {backup_id}" for name, backup_id, _ in result.damaged],
            problems=[f"{name}: {problem}" for name, problem in result.problems],
        )
        return result


def ensure_default_schedules() -> list[str]:
    """Creates the default schedules that do not exist yet (raos_bootstrap); their names.
    A row an operator edited or turned off is left as it is. Creating any is audited as
    the system's doing, like the keyset's creation."""
    created = schedules.ensure_defaults()
    if created:
        with audited(Actor.system(), ACTION_DEFAULT_SCHEDULES) as details:
            details["created"] = created
    return created


def list_schedules(*, actor: Actor, now=None) -> list[schedules.DueState]:
    """Every failsafe schedule row, and whether it is due now (failsafe_run_due --list)."""
    with audited(actor, ACTION_SCHEDULES):
        require_superadmin_or_system(actor)
        now = now or timezone.now()
        return [schedules.due_state(task, now=now) for task in schedules.failsafe_schedules()]


def run_due(*, actor: Actor, now=None) -> RunDueResult:
    """Runs, in this process and one after the other, every enabled failsafe schedule that
    is due (schedules.due_state), and records each run as beat does, so a second call finds
    nothing due. A failing task is its outcome's line; the others still run.

    Two calls at once (two crons) do not run anything twice: the second is refused with
    OperationInProgress. A call that finds nothing due leaves no audit event, so a cron
    every few minutes does not fill the trail; each task audits its own work."""
    if not actor.is_system:
        _require_superadmin_audited(actor)
    now = now or timezone.now()
    enabled = [task for task in schedules.failsafe_schedules() if task.enabled]
    if not any(schedules.due_state(task, now=now).due for task in enabled):
        return RunDueResult(checked=len(enabled))
    with audited(actor, ACTION_RUN_DUE) as details:
        holder = f"due schedules run by {actor.username}"
        with oplock.operation_lock(holder=holder, name=oplock.RUN_DUE_LOCK_NAME):
            # Looked at again under the lock: another run may have just done them.
            enabled = [task for task in schedules.failsafe_schedules() if task.enabled]
            result = RunDueResult(checked=len(enabled))
            for task in enabled:
                if schedules.due_state(task, now=now).due:
                    schedules.record_run(task, now=now)
                    result.outcomes.append(_run_one(task, actor=actor))
        details.update(
            ran=[outcome.name for outcome in result.outcomes],
            failed=[f"{outcome.name}: {outcome.message}" for outcome in result.failed],
        )
        return result


def _require_superadmin_audited(actor: Actor) -> None:
    try:
        require_superadmin(actor)
    except NotSuperAdmin:
        with audited(actor, ACTION_RUN_DUE):
            raise


def _operation(task_name: str) -> Callable | None:
    from .. import services  # the package's exports, complete once it is imported

    service_name = OPERATIONS.get(task_name)
    return getattr(services, service_name, None) if service_name else None


def _run_one(task, *, actor: Actor) -> TaskOutcome:
    started_at = timezone.now()
    clock = time.monotonic()
    operation = _operation(task.task)

    def outcome(ok: bool, message: str) -> TaskOutcome:
        return TaskOutcome(
            name=task.name,
            task=task.task,
            ok=ok,
            message=message,
            started_at=started_at,
            seconds=round(time.monotonic() - clock, 3),
        )

    if operation is None:
        return outcome(False, f"Unknown task {task.task!r}: fix or delete this schedule")
    try:
        result = operation(actor=actor)
    except NoSafeBackupYet as exc:
        # A new site: nothing to drill until a backup is marked safe. Said, not a failure.
        return outcome(True, one_line(exc))
    except REFUSALS as exc:
        logger.warning("%s: %s", task.name, one_line(exc))
        return outcome(False, one_line(exc))
    except Exception as exc:  # noqa: BLE001 - one failing task never stops the others
        logger.exception("%s failed", task.name)
        return outcome(False, one_line(as_refusal(exc, doing=task.name)))
    # A result that says it did not fully succeed (a replica down, a drill that failed).
    return outcome(bool(getattr(result, "ok", True)), str(getattr(result, "summary", result)))
