"""What the failsafe does by itself, and when: django-celery-beat rows, editable in the admin.

Beat (in a Celery worker) and `failsafe_run_due` (cron, no Celery) read the same rows, so a
schedule changed or turned off in the admin changes both. `raos_bootstrap` creates the
defaults below once; it never overwrites a row an operator has edited.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db.models import F
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


@dataclass(frozen=True)
class DueState:
    """Whether a schedule row is due at `now`, as beat would decide it, and when it is next.

    `next_at` is None when it never runs again as it stands (turned off, expired, or a
    one-off that ran); `why` says so in a few words ("" when it is due or merely waiting).
    """

    task: PeriodicTask
    due: bool
    next_at: datetime.datetime | None
    why: str = ""


def due_state(task: PeriodicTask, *, now: datetime.datetime) -> DueState:
    """Beat's rules for one row (django_celery_beat.schedulers.ModelEntry.is_due), with one
    difference: a row that never ran is due at once, so the first `failsafe_run_due` after
    set-up takes the first backup instead of waiting an interval."""
    if not task.enabled:
        return DueState(task, False, None, "off")
    if task.start_time is not None and now < task.start_time:
        return DueState(task, False, task.start_time, "")
    if task.expires is not None and now >= task.expires:
        return DueState(task, False, None, "expired")
    if task.one_off and task.total_run_count > 0:
        return DueState(task, False, None, "ran once")
    schedule = task.schedule
    # The schedule's clock is `now`, in the schedule's own time zone (crontabs have one).
    zone = getattr(schedule, "tz", None) or now.tzinfo
    schedule.nowfun = lambda: now.astimezone(zone)
    if task.last_run_at is None and task.clocked is None:
        return DueState(task, True, now)
    last_run_at = task.last_run_at or now
    due, next_seconds = schedule.is_due(last_run_at.astimezone(zone))
    if due:
        return DueState(task, True, now)
    return DueState(task, False, now + datetime.timedelta(seconds=next_seconds))


def record_run(task: PeriodicTask, *, now: datetime.datetime) -> None:
    """What beat records when it sends a task: when it last ran, and one run more. An
    UPDATE of those two columns only, so an edit made meanwhile in the admin stays."""
    PeriodicTask.objects.filter(pk=task.pk).update(
        last_run_at=now, total_run_count=F("total_run_count") + 1
    )


def turned_off() -> list[str]:
    """The default tasks (by their default schedule's name) that no enabled row runs any
    more, once schedules were set up: what someone who can edit the schedules switched off
    or deleted. Empty on a site that never set schedules up."""
    rows = list(failsafe_schedules().values_list("task", "enabled"))
    if not rows:
        return []
    running = {task for task, enabled in rows if enabled}
    return [default.name for default in DEFAULTS if default.task not in running]


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
    """Backups are overdue: none succeeded within `allowed` (OVERDUE_FACTOR x the interval),
    or every schedule of the scheduled backup has been turned off (`turned_off`)."""

    interval: datetime.timedelta
    allowed: datetime.timedelta
    last_success_at: datetime.datetime | None
    turned_off: bool = False

    @property
    def message(self) -> str:
        if self.turned_off:
            return (
                "Scheduled backups are turned off: every schedule of the scheduled backup is "
                "disabled; turn one on in the admin (Periodic tasks)"
            )
        if self.last_success_at is None:
            return f"No backup has ever succeeded; backups are due every {_duration(self.interval)}"
        age = timezone.now() - self.last_success_at
        return (
            f"No backup succeeded in {_duration(age)} (last at "
            f"{self.last_success_at:%Y-%m-%d %H:%M:%S %Z}); at most {_duration(self.allowed)} "
            "is allowed"
        )


def overdue(*, now: datetime.datetime | None = None) -> Overdue | None:
    """An Overdue when scheduled backups are on and none succeeded in time, or when they
    were set up and then all turned off (someone who can edit the schedules must not be able
    to silence backups quietly); None when no scheduled backup was ever set up."""
    now = now or timezone.now()
    last = last_successful_backup()
    last_at = last.finished_at or last.created_at if last is not None else None
    interval = scheduled_backup_interval()
    if interval is None:
        disabled = PeriodicTask.objects.filter(task=SCHEDULED_BACKUP_TASK, enabled=False).first()
        if disabled is None:
            return None
        interval = getattr(disabled.schedule, "run_every", None) or datetime.timedelta(hours=1)
        allowed = interval * setting("OVERDUE_FACTOR")
        return Overdue(interval=interval, allowed=allowed, last_success_at=last_at, turned_off=True)
    allowed = interval * setting("OVERDUE_FACTOR")
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
