"""Health and metrics: what a monitor asks every few seconds, answered from cheap reads.

A probe is not an operation. It writes nothing and leaves no audit event (a probe every
10 s would bury the trail), it never walks the whole audit chain or asks a storage
anything, and it never raises: a check that cannot be run fails, with its one line.
Nothing here names a secret: the messages are the refusals' and outcomes' own lines.
"""

from __future__ import annotations

import datetime
import hmac
import logging
from collections.abc import Callable, Iterable

from django.db.models import Count
from django.utils import timezone
from django.utils.timesince import timesince

from .. import audit, lockout, replicas, schedules
from ..conf import setting
from ..exceptions import REFUSALS, one_line
from ..models import AuditEvent, Backup, Drill
from ..snapshot import iso
from .backups import last_safe_backup
from .drills import last_verified_restore
from .guards import ACTION_BACKUP_FAILED
from .keys import keyset_problems
from .notifications import DEFAULT_REPLICA_INTERVAL, replica_alarms
from .results import CheckResult, HealthReport, MetricsData, ReplicaMetrics

logger = logging.getLogger(__name__)

# The checks /health/ runs, in the order it lists them.
HEALTH_CHECKS = (
    "last_backup",
    "last_drill",
    "keyset",
    "audit_chain",
    "replicas",
    "schedules",
)

# A drill's or a backup's recorded error, shortened to what one line can carry.
_ERROR_LIMIT = 300


def health(*, checks: Iterable[str] | None = None) -> HealthReport:
    """Every check (or those named, in HEALTH_CHECKS' words), each ok or not with one line.
    Raises ValueError for a name that is not a check."""
    names = HEALTH_CHECKS if checks is None else tuple(checks)
    unknown = [name for name in names if name not in _CHECKS]
    if unknown:
        raise ValueError(f"No health check is named {unknown[0]!r}")
    now = timezone.now()
    return HealthReport(checks=[_run(name, _CHECKS[name], now) for name in names])


def _run(name: str, check: Callable[[datetime.datetime], CheckResult], now) -> CheckResult:
    try:
        return check(now)
    except REFUSALS as exc:
        return CheckResult(name, False, f"Could not be checked: {one_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - a probe answers; the log keeps the traceback
        logger.exception("The %s health check could not run", name)
        return CheckResult(
            name,
            False,
            f"Could not be checked ({exc.__class__.__name__}; the server log says why)",
        )


def _span(moment: datetime.datetime, now: datetime.datetime, *, depth: int) -> str:
    # Django joins number and unit with a no-break space; a monitor's log wants a plain one.
    return timesince(moment, now, depth=depth).replace("\xa0", " ")


def _at(moment: datetime.datetime) -> str:
    # A moment, never an age: two answers a second apart say the same thing.
    return f"at {iso(moment, timespec='seconds')}"


def _line(text: str) -> str:
    return " ".join((text or "no reason recorded").split())[:_ERROR_LIMIT]


# --- the checks ------------------------------------------------------------------------


def _last_backup(now: datetime.datetime) -> CheckResult:
    """Overdue as the overdue notification decides it (schedules.overdue); without a
    backup schedule nothing is ever overdue, and the message says so."""
    late = schedules.overdue(now=now)
    if late is not None:
        return CheckResult("last_backup", False, late.message)
    interval = schedules.scheduled_backup_interval()
    cadence = (
        f"due every {_span(now - interval, now, depth=2)}"
        if interval is not None
        else "scheduled backups are off"
    )
    last = schedules.last_successful_backup()
    if last is None:
        return CheckResult("last_backup", True, f"No backup yet; {cadence}")
    when = last.finished_at or last.created_at
    return CheckResult("last_backup", True, f"Last backup {last.id} {_at(when)}; {cadence}")


def _last_drill(now: datetime.datetime) -> CheckResult:
    """A backup proven restorable (drills.last_verified_restore) within DRILL_MAX_AGE_SECONDS,
    and the newest finished drill did not fail (a failure fails the check at once). No drill
    yet is a failure only once a backup has existed for DRILL_MAX_AGE_SECONDS (time enough
    for the daily drill to have run); before that, and with no backup at all, the check
    passes and says by when one must pass."""
    max_age = datetime.timedelta(seconds=setting("DRILL_MAX_AGE_SECONDS"))
    newest = _newest_finished_drill()
    if newest is not None and newest.outcome == Drill.Outcome.FAILED:
        return CheckResult(
            "last_drill",
            False,
            f"The last restore drill (of backup {_drilled(newest)}, {_at(_drill_end(newest))}) "
            f"failed: {_line(newest.error)}",
        )
    proven = last_verified_restore()
    if proven is not None:
        when = _drill_end(proven)
        if now - when <= max_age:
            return CheckResult(
                "last_drill",
                True,
                f"Backup {_drilled(proven)} was proven restorable {_at(when)} "
                f"({proven.rows_checked} rows checked)",
            )
        return CheckResult(
            "last_drill",
            False,
            f"No restore drill passed in the last {_span(now - max_age, now, depth=2)}: "
            f"the last one passed {_at(when)}; failsafe_drill runs one",
        )
    oldest = Backup.objects.filter(status=Backup.Status.COMPLETE).order_by("created_at").first()
    if oldest is None:
        return CheckResult("last_drill", True, "No restore drill yet, and no backup to drill")
    deadline = oldest.created_at + max_age
    if now <= deadline:
        return CheckResult(
            "last_drill",
            True,
            f"No restore drill yet; one must pass by {iso(deadline, timespec='seconds')}",
        )
    return CheckResult(
        "last_drill",
        False,
        f"No backup was ever proven restorable, though backups exist since "
        f"{iso(oldest.created_at, timespec='seconds')}; failsafe_drill runs a restore drill",
    )


def _newest_finished_drill() -> Drill | None:
    return (
        Drill.objects.exclude(outcome=Drill.Outcome.RUNNING).order_by("-started_at", "-pk").first()
    )


def _drill_end(drill: Drill | None) -> datetime.datetime | None:
    if drill is None:
        return None
    return drill.finished_at or drill.started_at


def _drilled(drill: Drill) -> str:
    return drill.backup_label or (str(drill.backup_id) if drill.backup_id else "(forgotten)")


def _keyset(now: datetime.datetime) -> CheckResult:
    problems = keyset_problems()
    if not problems:
        return CheckResult("keyset", True, "The keyset holds every key the backups need")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return CheckResult("keyset", False, problems[0] + more)


def _audit_chain(now: datetime.datetime) -> CheckResult:
    """What is cheap to know, never a walk of the whole trail: the last full check's verdict
    (failsafe_audit --verify, or the admin's button), the newest event's own hash and link,
    and that the chain still reaches the head the newest backup recorded. Tampering deeper
    in the trail since the last full check is for the next full check to find."""
    # administration imports this module (the status carries the health): read lazily.
    from .administration import last_audit_verification

    verification = last_audit_verification()
    if verification is not None and verification.details.get("ok") is False:
        return CheckResult(
            "audit_chain",
            False,
            f"The audit chain is broken at event #{verification.details.get('first_broken_seq')}: "
            f"{verification.details.get('reason')} (found by the check of "
            f"{iso(verification.created_at, timespec='seconds')}; failsafe_audit --verify "
            "checks again)",
        )
    problem = _head_problem()
    if problem:
        return CheckResult("audit_chain", False, f"{problem}; failsafe_audit --verify says more")
    if verification is None:
        checked = "the whole chain was never checked (failsafe_audit --verify)"
    else:
        checked = f"the whole chain was found intact by the check {_at(verification.created_at)}"
    return CheckResult("audit_chain", True, f"The newest event is intact; {checked}")


def _head_problem() -> str:
    """Why the newest event or the chain's reach is wrong, or ""."""
    newest = list(AuditEvent.objects.order_by("-seq")[:2])
    recorded = (
        Backup.objects.filter(audit_head_seq__gt=0)
        .order_by("-audit_head_seq")
        .values_list("id", "audit_head_seq", "audit_head_hash")
        .first()
    )
    if newest:
        head = newest[0]
        previous_seq, previous_hash = (
            (newest[1].seq, newest[1].hash) if len(newest) > 1 else (0, audit.GENESIS_HASH)
        )
        if head.seq != previous_seq + 1:
            return f"Event #{previous_seq + 1} is missing (seq jumps {previous_seq} -> {head.seq})"
        if not _same(head.prev_hash, previous_hash):
            return f"Event #{head.seq} does not link to #{previous_seq} (reordered or replaced)"
        if not _same(head.hash, audit.event_hash(head)):
            return f"Event #{head.seq} was modified (hash mismatch)"
    if recorded is not None:
        backup_id, head_seq, head_hash = recorded
        event_hash = AuditEvent.objects.filter(seq=head_seq).values_list("hash", flat=True).first()
        if event_hash is None:
            last = newest[0].seq if newest else 0
            return (
                f"Chain truncated: backup {backup_id} recorded head #{head_seq} but the "
                f"chain ends at #{last}"
            )
        if not _same(event_hash, head_hash):
            return f"Event #{head_seq} differs from the head recorded by backup {backup_id}"
    return ""


def _same(stored: str, expected: str) -> bool:
    # Bytes: compare_digest refuses non-ASCII text, and a tampered column may hold any.
    return hmac.compare_digest(stored.encode("utf-8"), expected.encode("utf-8"))


def _replicas(now: datetime.datetime) -> CheckResult:
    """No replica failing or lagging, by the rule the overdue notification uses
    (notifications.replica_alarms): copies that failed, none held at all, or the newest copy
    more than OVERDUE_FACTOR backup intervals older than the newest backup. Older backups
    still waiting for the catch-up are named, not failed."""
    lags = replicas.lag()
    interval = schedules.scheduled_backup_interval() or DEFAULT_REPLICA_INTERVAL
    alarms = replica_alarms(lags, allowed=interval)
    if alarms:
        more = f" (and {len(alarms) - 1} more)" if len(alarms) > 1 else ""
        return CheckResult("replicas", False, alarms[0].message + more)
    if not lags:
        return CheckResult("replicas", True, "No replica is configured")
    waiting = sum(entry.behind for entry in lags)
    tail = f"; {waiting} older copies wait for the catch-up" if waiting else ""
    return CheckResult(
        "replicas", True, f"{len(lags)} replica(s) hold a recent copy, none failing{tail}"
    )


def _schedules(now: datetime.datetime) -> CheckResult:
    """Every default task still runs on some enabled schedule (the admin can turn each off;
    a failsafe whose watch was switched off must say so)."""
    off = schedules.turned_off()
    if off:
        return CheckResult(
            "schedules",
            False,
            f"Turned off or deleted: {', '.join(off)}; turn them on again in the admin "
            "(Periodic tasks) or run manage.py raos_bootstrap",
        )
    count = schedules.failsafe_schedules().filter(enabled=True).count()
    if not count:
        return CheckResult("schedules", True, "No schedules set up (raos_bootstrap creates them)")
    return CheckResult("schedules", True, f"{count} schedule(s) on")


_CHECKS: dict[str, Callable[[datetime.datetime], CheckResult]] = {
    "last_backup": _last_backup,
    "last_drill": _last_drill,
    "keyset": _keyset,
    "audit_chain": _audit_chain,
    "replicas": _replicas,
    "schedules": _schedules,
}


# --- metrics ---------------------------------------------------------------------------


def metrics() -> MetricsData:
    """The numbers /metrics exposes, read from the rows (nothing asked of any storage)."""
    last = schedules.last_successful_backup()
    safe = last_safe_backup()
    counts = dict.fromkeys(Backup.Type.values, 0)
    for backup_type, count in _count_by_type():
        counts[backup_type] = count
    newest_drill = _newest_finished_drill()
    return MetricsData(
        last_backup_at=last.created_at if last else None,
        last_safe_backup_at=safe.created_at if safe else None,
        backups=counts,
        # From the audit trail, not the FAILED rows retention forgets: a counter never drops.
        backup_failures=AuditEvent.objects.filter(action=ACTION_BACKUP_FAILED).count(),
        last_drill_at=_drill_end(newest_drill),
        last_drill_passed=newest_drill is not None and newest_drill.outcome == Drill.Outcome.PASSED,
        last_verified_restore_at=_drill_end(last_verified_restore()),
        locked_accounts=len({entry.username for entry in lockout.lockout_status()}),
        replicas=[_replica_metrics(entry) for entry in replicas.lag()],
        health=health(),
    )


def _count_by_type():
    return (
        Backup.objects.filter(status=Backup.Status.COMPLETE)
        .values_list("type")
        .annotate(count=Count("id"))
        .order_by()
    )


def _replica_metrics(entry: replicas.ReplicaLag) -> ReplicaMetrics:
    if entry.lag_seconds is not None:
        lag = entry.lag_seconds
    else:
        # Nothing to copy yet is no lag; backups and no copy is infinitely behind.
        lag = float("inf") if entry.behind else 0.0
    return ReplicaMetrics(
        name=entry.name, lag_seconds=lag, behind=entry.behind, failed=len(entry.failing)
    )
