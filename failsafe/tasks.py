"""Celery tasks: thin doors onto the services, each acting as the system and audited as such.

Beat (django-celery-beat rows, see failsafe/schedules.py) or `failsafe_run_due` starts them.
A refusal (another backup running, no safe backup yet, ...) is a normal outcome of a
scheduled run: it is logged as its one line and returned, never raised into Celery's retry
machinery; the services have already audited it.
"""

from __future__ import annotations

import logging

from celery import shared_task

from . import services
from .exceptions import REFUSALS, one_line

logger = logging.getLogger(__name__)


def _run(name: str, operation) -> str:
    try:
        result = operation(actor=services.Actor.system())
    except REFUSALS as exc:
        line = one_line(exc)
        logger.warning("%s: %s", name, line)
        return line
    return str(getattr(result, "summary", result))


@shared_task(name="failsafe.scheduled_backup")
def scheduled_backup() -> str:
    return _run("scheduled backup", services.scheduled_backup)


@shared_task(name="failsafe.retention")
def retention() -> str:
    return _run("retention", services.prune)


@shared_task(name="failsafe.drift_watch")
def drift_watch() -> str:
    return _run("drift watch", services.watch_drift)


@shared_task(name="failsafe.drill")
def drill() -> str:
    return _run("restore drill", services.run_drill)


@shared_task(name="failsafe.replication")
def replication() -> str:
    return _run("replication", services.replication_catch_up)


@shared_task(name="failsafe.overdue")
def overdue() -> str:
    return _run("overdue check", services.check_overdue)


# The tasks by name, for failsafe_run_due (which runs them in this process, without Celery).
TASKS = {
    task.name: task
    for task in (scheduled_backup, retention, drift_watch, drill, replication, overdue)
}
