"""Telling someone, as operations: the overdue check, a test message, the channels.

The events themselves are sent by the operations they happen in (services/alerts.py); here
are the checks that run on a schedule to notice what did not happen (a backup that never
came, a replica that fell behind) and what a SuperAdmin uses to see that messages arrive.
"""

from __future__ import annotations

import datetime

from .. import notify, replicas, schedules
from ..conf import setting
from ..models import Notification
from . import alerts
from .guards import Actor, audited, require_superadmin, require_superadmin_or_system
from .results import OverdueResult, ReplicaAlarm

ACTION_OVERDUE = "failsafe.overdue"
ACTION_NOTIFY_TEST = "failsafe.notify.test"

# Without a backup schedule, a replica may lag this long (x OVERDUE_FACTOR) before it is news.
DEFAULT_REPLICA_INTERVAL = datetime.timedelta(hours=1)


def notification_channels() -> list[notify.Channel]:
    """Where a notification would go now (no secret, no URL credentials): a read, for the
    pages and commands that show the configuration; it audits nothing."""
    return notify.channels()


def check_overdue(*, actor: Actor) -> OverdueResult:
    """Notify when no backup succeeded in OVERDUE_FACTOR x the scheduled interval, and about
    each replica failing or lagging; each message at most once an hour while it lasts."""
    with audited(actor, ACTION_OVERDUE) as details:
        require_superadmin_or_system(actor)
        interval = schedules.scheduled_backup_interval()
        late = schedules.overdue()
        lags = replicas.lag()
        alarms = replica_alarms(lags, allowed=(interval or DEFAULT_REPLICA_INTERVAL))
        sent = [alerts.backup_overdue(late)] if late is not None else []
        sent += [alerts.replica_problem(alarm) for alarm in alarms]
        result = OverdueResult(
            interval=interval,
            overdue=late,
            replicas_checked=len(lags),
            replicas=alarms,
            notifications=[notification for notification in sent if notification is not None],
        )
        details.update(
            overdue=late is not None,
            replicas=[alarm.replica for alarm in alarms],
            notifications=[n.outcome for n in result.notifications],
        )
        return result


def replica_alarms(lags: list[replicas.ReplicaLag], *, allowed: datetime.timedelta) -> list:
    """Each replica failing (copies that failed), or lagging: missing backups while its
    newest copy is more than OVERDUE_FACTOR x `allowed` older than the newest backup, or
    holding none at all. Unusable replica settings are an alarm of their own."""
    limit = (allowed * setting("OVERDUE_FACTOR")).total_seconds()
    alarms = []
    problem = replicas.configuration_problem()
    if problem:
        alarms.append(ReplicaAlarm(replica="settings", message=problem))
    for entry in lags:
        if entry.failing:
            _backup_id, why = entry.failing[0]
            count = len(entry.failing)
            message = (
                f"Replica {entry.name} is failing: {count} backup{'' if count == 1 else 's'} "
                f"failed to replicate (latest reason: {why})"
            )
        elif entry.behind and entry.lag_seconds is None:
            message = (
                f"Replica {entry.name} holds none of the {entry.behind} backups it should hold"
            )
        elif entry.behind and entry.lag_seconds > limit:
            message = (
                f"Replica {entry.name} is lagging: {entry.behind} backups behind, its newest "
                f"copy {_hours(entry.lag_seconds)} older than the newest backup"
            )
        else:
            continue
        alarms.append(ReplicaAlarm(replica=entry.name, message=" ".join(message.split())))
    return alarms


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.0f} days"


def send_test_notification(*, actor: Actor) -> Notification:
    """A message to every channel now (never held back as a repeat), to see that they work;
    the outcome of each channel is on the returned row."""
    with audited(actor, ACTION_NOTIFY_TEST) as details:
        require_superadmin(actor)
        notification = notify.send(
            event=alerts.EVENT_TEST,
            subject=f"Test notification from {actor.username}",
            lines=[
                f"{actor.username} sent this test message ({actor.source}) to every channel "
                "the failsafe notifies: e-mail to the SuperAdmins with an address and "
                'FAILSAFE["NOTIFY_EMAILS"], and the webhooks of FAILSAFE["NOTIFY_WEBHOOKS"].',
                "If you read this, the failsafe can reach you when something goes wrong.",
            ],
            repeat=True,
            data={"sent_by": actor.username},
        )
        details.update(
            outcome=notification.outcome,
            deliveries=[
                {"channel": d["channel"], "to": d["to"], "ok": d["ok"], "error": d["error"]}
                for d in notification.deliveries
            ],
        )
        return notification


def report_login_lockout(*, username: str, address: str | None, failures: int) -> None:
    """django-axes locked out logins (failsafe.signals hands it here): tell someone. Never
    raises; the lockout itself is already in the audit trail (failsafe.logins)."""
    alerts.login_lockout(username=username, address=address, failures=failures)
