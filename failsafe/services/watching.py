"""The drift watch: the live data against the last safe backup, every few minutes, by itself.

A new issue (one the previous watch had not seen) means something changed that the fixed
rules of compare.py find alarming: the watch takes an EMERGENCY backup at once, as the
system (no passkey: nobody is there to type it), investigates it as a person's trigger
would, keeps the investigation with the backup, and tells someone. Issues already seen are
not acted on again, so a standing issue does not take a backup every quarter of an hour;
once a person marks a new safe backup, the comparison starts from it.

Anomalies (failsafe.anomaly: change volumes far outside a model's own history) are reported
with the issues; on their own they only notify.
"""

from __future__ import annotations

import logging

from django.utils import timezone

from .. import anomaly, notify
from ..exceptions import as_refusal, one_line
from ..investigate import MARK_SAFE, recommendations
from ..models import Backup, Notification, WatchRun
from ..snapshot import iso
from .alerts import never_fails
from .backups import last_safe_backup, take_backup
from .comparing import compare_with_baseline, investigate_and_keep
from .guards import Actor, audited, require_superadmin_or_system
from .results import WatchResult

logger = logging.getLogger(__name__)

ACTION_WATCH = "failsafe.watch"
REASON_PREFIX = "drift watch: "
# A reason is a label (the API takes 1000 characters at most).
REASON_MAX_LENGTH = 1000
# How many issues, anomalies and recommendations a message lists before "and N more".
LISTED = 20

EVENT_EMERGENCY = "emergency"
EVENT_ANOMALY = "anomaly"
EVENT_NO_SAFE_BACKUP = "no_safe_backup"


def watch_drift(*, actor: Actor) -> WatchResult:
    """One pass of the drift watch; records a WatchRun whatever it finds.

    Raises (after recording the run, and after notifying the issues it found) when the live
    data cannot be read or the emergency backup cannot be taken: the next watch tries again,
    because a run that failed is not the "previous watch" whose issues count as seen.
    """
    with audited(actor, ACTION_WATCH) as details:
        require_superadmin_or_system(actor)
        result = _watch(details)
        details.update(
            baseline=result.baseline_backup_id,
            issues=len(result.issues),
            new_issues=result.new_issues[:LISTED],
            anomalies=result.anomalies[:LISTED],
            emergency_backup=str(result.emergency_backup.id) if result.emergency_backup else None,
        )
        return result


def _previous_run() -> WatchRun | None:
    return WatchRun.objects.filter(error="").order_by("-created_at", "-pk").first()


def _watch(details: dict) -> WatchResult:
    previous = _previous_run()
    safe = last_safe_backup()
    if safe is None:
        return _without_safe_backup(previous)
    run = WatchRun(baseline_backup_id=safe.id)
    try:
        comparison = compare_with_baseline(baseline=safe, current=None)
    except Exception as exc:
        _failed(run, exc, doing="The drift watch's comparison")
        raise
    found = _anomalies()
    seen_issues = previous.issues if previous else []
    seen_anomalies = previous.anomalies if previous else []
    result = WatchResult(
        has_safe_backup=True,
        baseline_backup_id=str(safe.id),
        issues=list(comparison.issues),
        new_issues=[issue for issue in comparison.issues if issue not in seen_issues],
        anomalies=found,
        new_anomalies=[text for text in found if text not in seen_anomalies],
    )
    run.issues, run.new_issues, run.anomalies = result.issues, result.new_issues, found
    if result.new_issues:
        try:
            _emergency(result, safe)
        except Exception as exc:
            run.error = _failed_line(exc, doing="The emergency backup")
            run.emergency_backup = result.emergency_backup
            details["error"] = run.error
            advice = recommendations(comparison, str(safe.id))
            result.notifications.append(_tell_emergency(result, advice=advice, failure=run.error))
            _save(run)
            raise
        run.emergency_backup = result.emergency_backup
        result.notifications.append(
            _tell_emergency(result, advice=result.investigation.recommendations)
        )
    elif result.new_anomalies:
        result.notifications.append(_tell_anomalies(result))
    _save(run)
    return result


def _emergency(result: WatchResult, safe: Backup) -> None:
    reason = (REASON_PREFIX + result.new_issues[0])[:REASON_MAX_LENGTH]
    backup = take_backup(actor=Actor.system(), backup_type=Backup.Type.EMERGENCY, reason=reason)
    result.emergency_backup = backup
    result.investigation = investigate_and_keep(backup=backup, safe_backup=safe)


def _without_safe_backup(previous: WatchRun | None) -> WatchResult:
    """Nothing to compare with: record that; tell someone once, when the watch goes idle
    (its first run, or the first after a safe backup was there), not every quarter hour."""
    result = WatchResult(has_safe_backup=False)
    if previous is None or previous.baseline_backup_id is not None:
        result.notifications.append(_tell_no_safe_backup())
    _save(WatchRun(baseline_backup_id=None))
    return result


def _anomalies() -> list[str]:
    # Anomalies add to what the watch reports; their failure must not stop the watch.
    try:
        return [found.text for found in anomaly.detect()]
    except Exception as exc:  # noqa: BLE001 - logged, and the watch goes on without them
        logger.warning("Anomaly detection failed, the watch goes on without it: %s", one_line(exc))
        return []


def _failed_line(exc: Exception, *, doing: str) -> str:
    return one_line(as_refusal(exc, doing=doing))[:2000]


def _failed(run: WatchRun, exc: Exception, *, doing: str) -> None:
    run.error = _failed_line(exc, doing=doing)
    _save(run)


def _save(run: WatchRun) -> None:
    try:
        run.save()
    except Exception:
        # The watch's own record failing must not hide what the watch found or did.
        logger.exception("The drift watch's run could not be recorded")


# --- telling someone --------------------------------------------------------------------


def _listed(items: list[str], *, bullet: str = "- ") -> list[str]:
    lines = [f"  {bullet}{item}" for item in items[:LISTED]]
    if len(items) > LISTED:
        lines.append(f"  {bullet}and {len(items) - LISTED} more")
    return lines


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


@never_fails
def _tell_emergency(result: WatchResult, *, advice: list[str], failure: str = "") -> Notification:
    backup = result.emergency_backup
    report = result.investigation
    # The emergency backup's own comparison when there is one: what it holds.
    issues = list(report.comparison.issues) if report is not None else result.issues
    new = result.new_issues
    lines = [
        f"The drift watch found {_plural(len(new), 'new issue', 'new issues')} in the live data "
        f"against the last safe backup {result.baseline_backup_id} at "
        f"{iso(timezone.now(), timespec='seconds')}.",
    ]
    if backup is not None:
        lines.append(f"Emergency backup: {backup.id}")
    else:
        lines.append(f"No emergency backup could be taken: {failure}")
        lines.append("The next drift watch tries again.")
    lines += [f"Issues ({len(issues)}):", *_listed(issues)]
    if result.anomalies:
        lines += ["Unusual change volumes:", *_listed(result.anomalies)]
    # The advice lists the issues under one of its lines, indented: kept as it reads.
    lines += ["Recommendations:", *_listed(advice, bullet="")]
    if backup is not None:
        lines.append(
            f"The investigation is kept with the backup: manage.py failsafe_investigation "
            f"{backup.id}"
        )
    return notify.send(
        event=EVENT_EMERGENCY,
        subject=f"Drift watch: {new[0]}",
        lines=lines,
        # Each emergency backup is its own event; a failed attempt is held back for the
        # hour per first issue, the retries in between included.
        key=f"{EVENT_EMERGENCY}:{backup.id}" if backup else f"{EVENT_EMERGENCY}:failed:{new[0]}",
        data={
            "emergency_backup_id": str(backup.id) if backup else None,
            "last_safe_backup": result.baseline_backup_id,
            "issues": issues[:LISTED],
            "new_issues": new[:LISTED],
            "anomalies": result.anomalies[:LISTED],
            "recommendations": advice[:LISTED],
            "error": failure,
        },
    )


@never_fails
def _tell_anomalies(result: WatchResult) -> Notification:
    found = result.new_anomalies
    newest = anomaly.newest_scheduled_backup()
    lines = [
        "The newest scheduled backup"
        + (f" ({newest.id}, {iso(newest.created_at, timespec='seconds')})" if newest else "")
        + " recorded changes far outside their usual volume:",
        *_listed(found),
        "Nothing the fixed rules watch for differs from the last safe backup "
        f"{result.baseline_backup_id}"
        + (" beyond what was already reported." if result.issues else "."),
        "If the changes were not expected: compare the live data with the last safe backup "
        "(manage.py failsafe_compare), and trigger an emergency backup if it is an attack "
        "(manage.py failsafe_trigger).",
    ]
    return notify.send(
        event=EVENT_ANOMALY,
        subject=f"Unusual change volume: {found[0]}",
        lines=lines,
        key=f"{EVENT_ANOMALY}:{newest.id if newest else ''}:{found[0]}",
        data={
            "scheduled_backup_id": str(newest.id) if newest else None,
            "anomalies": found[:LISTED],
            "last_safe_backup": result.baseline_backup_id,
        },
    )


@never_fails
def _tell_no_safe_backup() -> Notification:
    return notify.send(
        event=EVENT_NO_SAFE_BACKUP,
        subject="Drift watch is idle: no safe backup to compare the live data with",
        lines=[
            "The drift watch compares the live data with the last safe backup, and no backup "
            "is marked safe: nothing is being watched, and no emergency backup will be taken.",
            MARK_SAFE,
        ],
        key=EVENT_NO_SAFE_BACKUP,
    )
