"""What the failsafe does by itself, and when: django-celery-beat rows, editable in the admin.

Beat (in a Celery worker) and `failsafe_run_due` (cron, no Celery) read the same rows, so a
schedule changed or turned off in the admin changes both. `raos_bootstrap` creates the
defaults below once; it never overwrites a row an operator has edited.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from .conf import setting
from .models import Backup

HOUR = 60 * 60


@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    every_seconds: int
    description: str


DEFAULTS = [
    DefaultSchedule(
        "failsafe: scheduled backup",
        "failsafe.scheduled_backup",
        HOUR,
        "Takes a SCHEDULED backup and records how much of each model changed since the last.",
    ),
    DefaultSchedule(
        "failsafe: drift watch",
        "failsafe.drift_watch",
        15 * 60,
        "Compares the live data with the last safe backup; a new issue takes an emergency "
        "backup and notifies.",
    ),
    DefaultSchedule(
        "failsafe: overdue check",
        "failsafe.overdue",
        15 * 60,
        "Notifies when no backup succeeded in twice the scheduled backup's interval, or a "
        "replica fails or lags.",
    ),
    DefaultSchedule(
        "failsafe: retention",
        "failsafe.retention",
        24 * HOUR,
        "Forgets the backups the retention policy no longer keeps and collects their chunks.",
    ),
    DefaultSchedule(
        "failsafe: restore drill",
        "failsafe.drill",
        24 * HOUR,
        "Restores the newest safe backup into a scratch database and checks every row.",
    ),
    DefaultSchedule(
        "failsafe: replication",
        "failsafe.replication",
        HOUR,
        "Copies backups the replicas lack and reads a sample of their chunks back.",
    ),
]

SCHEDULED_BACKUP_TASK = "failsafe.scheduled_backup"


def ensure_defaults() -> list[str]:
    """Create each default schedule that does not exist yet (by name); the names created."""
    created = []
    for default in DEFAULTS:
        if PeriodicTask.objects.filter(name=default.name).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=default.every_seconds, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=default.name,
            task=default.task,
            interval=interval,
            description=default.description,
            enabled=True,
        )
        created.append(default.name)
    return created


def failsafe_schedules():
    """Every schedule row of a failsafe task (enabled or not), by name."""
    return PeriodicTask.objects.filter(task__startswith="failsafe.").order_by("name")


def scheduled_backup_interval() -> datetime.timedelta | None:
    """How often scheduled backups run: the shortest enabled schedule of the task, or None."""
    intervals = []
    for task in PeriodicTask.objects.filter(task=SCHEDULED_BACKUP_TASK, enabled=True):
        schedule = task.schedule
        run_every = getattr(schedule, "run_every", None)
        if run_every is not None:
            intervals.append(run_every)
            continue
        # A crontab: the gap between its next two firings from now.
        now = timezone.now()
        first = now + schedule.remaining_estimate(now)
        second = first + schedule.remaining_estimate(first + datetime.timedelta(seconds=1))
        intervals.append(second - first)
    return min(intervals) if intervals else None


def last_successful_backup() -> Backup | None:
    return (
        Backup.objects.filter(status=Backup.Status.COMPLETE)
        .exclude(type=Backup.Type.PRE_RESTORE)
        .order_by("-created_at")
        .first()
    )


@dataclass(frozen=True)
class Overdue:
    """Backups are overdue: none succeeded within `allowed` (OVERDUE_FACTOR x the interval)."""

    interval: datetime.timedelta
    allowed: datetime.timedelta
    last_success_at: datetime.datetime | None

    @property
    def message(self) -> str:
        hours = self.allowed.total_seconds() / HOUR
        if self.last_success_at is None:
            return f"No backup has ever succeeded; backups are due every {_duration(self.interval)}"
        age = timezone.now() - self.last_success_at
        return (
            f"No backup succeeded in {_duration(age)} (last at "
            f"{self.last_success_at:%Y-%m-%d %H:%M:%S %Z}); at most {hours:g} h is allowed"
        )


def overdue(*, now: datetime.datetime | None = None) -> Overdue | None:
    """An Overdue when scheduled backups are on and none succeeded in time, else None."""
    interval = scheduled_backup_interval()
    if interval is None:
        return None
    now = now or timezone.now()
    allowed = interval * setting("OVERDUE_FACTOR")
    last = last_successful_backup()
    last_at = last.finished_at or last.created_at if last is not None else None
    if last_at is not None and now - last_at <= allowed:
        return None
    return Overdue(interval=interval, allowed=allowed, last_success_at=last_at)


def _duration(delta: datetime.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 2 * 24 * HOUR:
        return f"{seconds // (24 * HOUR)} days"
    if seconds >= 2 * HOUR:
        return f"{seconds // HOUR} hours"
    return f"{max(seconds // 60, 0)} minutes"
