"""What the operations tell someone about (failsafe.notify): the words of each event.

Each function here is called by an operation at the moment something worth telling
happened, and never raises: a notification that cannot be built or sent is logged, and the
operation goes on as if it had been sent, because the event being reported matters more than
the report. No secret reaches a message: callers pass results and names, never the passkey,
a password or a hash, and an operator's free text has the passkey taken out of it.
"""

from __future__ import annotations

import functools
import logging

from .. import lockout, logins, notify
from ..models import Backup, Notification
from ..snapshot import REDACTED, iso

logger = logging.getLogger(__name__)

# How many issues a message names before "and N more".
ISSUES_SHOWN = 20
# An operator's reason is a label; a message shows this much of it.
REASON_SHOWN = 300

EVENT_EMERGENCY = "emergency"
EVENT_BACKUP_FAILED = "backup_failed"
EVENT_BACKUP_OVERDUE = "backup_overdue"
EVENT_REPLICA = "replica"
EVENT_LOCKOUT = "lockout"
EVENT_RESTORE = "restore"
EVENT_TEST = "test"


def never_fails(build):
    """Run a notification builder; log and return None when anything in it fails."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> Notification | None:
        try:
            return build(*args, **kwargs)
        except Exception:
            logger.exception("The %s notification could not be sent", build.__name__)
            return None

    return wrapper


def _operator_text(text: str, *, secrets: tuple[str, ...] = ()) -> str:
    """Free text an operator typed, shown in a message: one line, bounded, and without any
    secret the operation was given (someone may paste the passkey into the reason)."""
    shown = " ".join(str(text or "").split())
    for secret in secrets:
        if secret:
            shown = shown.replace(secret, REDACTED)
    return shown[:REASON_SHOWN] + ("…" if len(shown) > REASON_SHOWN else "")


def _issue_lines(issues: list[str]) -> list[str]:
    lines = [f"  - {issue}" for issue in issues[:ISSUES_SHOWN]]
    if len(issues) > ISSUES_SHOWN:
        lines.append(f"  - and {len(issues) - ISSUES_SHOWN} more")
    return lines


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- an emergency trigger by a person --------------------------------------------------


@never_fails
def emergency_triggered(*, actor, result, reason: str, passkey: str) -> Notification:
    """A SuperAdmin triggered an emergency backup: what it found and what to do first.

    `passkey` is only used to take it out of the reason, should it have been pasted there.
    """
    backup = result.backup
    report = result.investigation
    issues = list(report.comparison.issues)
    found = _plural(len(issues), "issue") if issues else "no issues"
    subject = f"Emergency trigger by {actor.username}: {found} found"
    lines = [
        f"{actor.username} triggered an emergency backup ({actor.source}"
        + (f", from {actor.ip}" if actor.ip else "")
        + f") at {iso(backup.created_at, timespec='seconds')}.",
        f"Reason: {_operator_text(reason, secrets=(passkey,)) or 'none given'}",
        f"Emergency backup: {backup.id}",
        f"Last safe backup: {report.last_safe_backup or 'none'}",
    ]
    if issues:
        lines += [f"Issues found ({len(issues)}):", *_issue_lines(issues)]
    else:
        lines.append("No issues found against the last safe backup.")
    first = report.recommendations[0] if report.recommendations else ""
    if first:
        lines.append(f"First recommendation: {first}")
    return notify.send(
        event=EVENT_EMERGENCY,
        subject=subject,
        lines=lines,
        # Each trigger is its own event: a second one within the hour still goes out.
        key=f"{EVENT_EMERGENCY}:{backup.id}",
        data={
            "backup_id": str(backup.id),
            "triggered_by": actor.username,
            "source": actor.source,
            "issues": issues[:ISSUES_SHOWN],
            "issue_count": len(issues),
            "last_safe_backup": report.last_safe_backup,
            "first_recommendation": first,
        },
    )


# --- a backup that failed --------------------------------------------------------------


@never_fails
def backup_failed(*, backup: Backup, error: BaseException) -> Notification:
    why = " ".join(str(error).split()) or type(error).__name__
    why = f"{type(error).__name__}: {why}"[:300]
    kind = Backup.Type(backup.type).label
    return notify.send(
        event=EVENT_BACKUP_FAILED,
        subject=f"{kind} backup failed: {why}",
        lines=[
            f"The {kind.lower()} backup {backup.id} started by {backup.created_by_username} at "
            f"{iso(backup.created_at, timespec='seconds')} failed: {why}",
            "Nothing of it was kept. manage.py failsafe_status shows the last backup that "
            "succeeded; failsafe_backup tries again.",
        ],
        # The same failure again within the hour (every scheduled backup) is held back; a
        # different one goes out.
        key=f"{EVENT_BACKUP_FAILED}:{backup.type}:{why}",
        data={
            "backup_id": str(backup.id),
            "type": backup.type,
            "started_by": backup.created_by_username,
            "error": why,
        },
    )


# --- a restore done --------------------------------------------------------------------


@never_fails
def restore_done(*, actor, result) -> Notification:
    backup = result.backup
    plan = result.plan
    changed = [
        f"  - {model.label}: {model.insert} added, {model.update} changed, {model.delete} removed"
        for model in plan.models
        if model.insert or model.update or model.delete
    ]
    pre = result.pre_restore_backup
    lines = [
        f"{actor.username} ({actor.source}"
        + (f", from {actor.ip}" if actor.ip else "")
        + f") restored backup {backup.id} of {iso(backup.created_at, timespec='seconds')} "
        f"at {iso(result.restored_at, timespec='seconds')}.",
        *(["What changed:", *changed] if changed else ["Nothing differed from the backup."]),
        f"{_plural(result.sessions_flushed, 'session')} ended, "
        f"{_plural(result.tokens_revoked, 'API token')} revoked.",
        f"The state before the restore is kept in backup {pre.id}."
        if pre is not None
        else "No backup of the state before the restore was taken (the operator chose so).",
    ]
    return notify.send(
        event=EVENT_RESTORE,
        subject=f"Backup {backup.id} restored by {actor.username}",
        lines=lines,
        key=f"{EVENT_RESTORE}:{backup.id}:{iso(result.restored_at)}",
        data={
            "backup_id": str(backup.id),
            "restored_by": actor.username,
            "source": actor.source,
            "pre_restore_backup_id": str(pre.id) if pre is not None else None,
            "changes": {
                model.label: {
                    "added": model.insert,
                    "changed": model.update,
                    "removed": model.delete,
                }
                for model in plan.models
            },
            "sessions_ended": result.sessions_flushed,
            "tokens_revoked": result.tokens_revoked,
        },
    )


# --- lockouts --------------------------------------------------------------------------


def lockout_in_force(*, username: str, action: str) -> lockout.Lockout | None:
    """The lockout of `action` for `username` in force now, if any."""
    return next(
        (entry for entry in lockout.lockout_status(username=username) if entry.action == action),
        None,
    )


def is_locked(*, username: str, action: str) -> bool:
    """Whether `action` is locked for `username`; True when that cannot be read, so that a
    failing check tells nobody rather than failing the attempt it guards."""
    try:
        return lockout_in_force(username=username, action=action) is not None
    except Exception:
        logger.exception("Could not read the lockout of %s", action)
        return True


@never_fails
def secret_lockout(*, actor, action: str) -> Notification | None:
    """Wrong secrets locked `action` for the actor: say who and what, never the attempt.

    Called when an attempt was refused; sends only if that left the action locked.
    """
    entry = lockout_in_force(username=actor.username, action=action)
    if entry is None:
        return None
    return notify.send(
        event=EVENT_LOCKOUT,
        subject=f"{action} locked for {entry.username} after {entry.failures} wrong secrets",
        lines=[
            f"{_plural(entry.failures, 'wrong secret')} (passkey or failsafe password) for "
            f"{action} by the account {entry.username} ({actor.source}"
            + (f", from {actor.ip}" if actor.ip else "")
            + ").",
            f"The action is locked for that account until "
            f"{iso(entry.locked_until, timespec='seconds')}.",
            "If this was not you: someone holding that account is guessing. Lift the lockout "
            "early with manage.py failsafe_unlock --account " + entry.username + ".",
        ],
        key=f"{EVENT_LOCKOUT}:{entry.username}:{action}",
        data={
            "kind": "failsafe secret",
            "account": entry.username,
            "action": action,
            "failures": entry.failures,
            "locked_until": entry.locked_until,
            "address": actor.ip,
        },
    )


@never_fails
def login_lockout(*, username: str, address: str | None, failures: int) -> Notification:
    """django-axes locked logins out: the username tried and the address, never a password."""
    who = _operator_text(username) or "(no username)"
    minutes = logins.cool_off_minutes()
    return notify.send(
        event=EVENT_LOCKOUT,
        subject=f"Logins locked out for {who} after {_plural(failures, 'failed login')}",
        lines=[
            f"{_plural(failures, 'failed login')} for the username {who}"
            + (f" from {address}" if address else "")
            + f": logins for that username and from that address are refused for up to "
            f"{_plural(minutes, 'minute')}.",
            "If this was not a person who forgot a password: someone is guessing. "
            f"manage.py failsafe_unlock --logins {who} lifts the lockout early.",
        ],
        key=f"{EVENT_LOCKOUT}:login:{who}:{address or ''}",
        data={
            "kind": "login",
            "username": who,
            "address": address,
            "failures": failures,
            "minutes": minutes,
        },
    )


# --- what the overdue check finds ------------------------------------------------------


@never_fails
def backup_overdue(late) -> Notification:
    """No backup succeeded in time (schedules.Overdue)."""
    return notify.send(
        event=EVENT_BACKUP_OVERDUE,
        subject="Backups are overdue",
        lines=[
            f"{late.message}.",
            "Check that the Celery worker and beat run (make run starts both), or that cron "
            "runs manage.py failsafe_run_due; manage.py failsafe_status shows the last backup "
            "and why it failed.",
        ],
        # Once an hour while it lasts, whatever the age says by then.
        key=EVENT_BACKUP_OVERDUE,
        data={
            "last_success_at": late.last_success_at,
            "interval_seconds": late.interval.total_seconds(),
            "allowed_seconds": late.allowed.total_seconds(),
        },
    )


@never_fails
def replica_problem(alarm) -> Notification:
    """A replica failing or lagging (results.ReplicaAlarm)."""
    return notify.send(
        event=EVENT_REPLICA,
        subject=f"Replica {alarm.replica} needs attention",
        lines=[
            f"{alarm.message}.",
            "manage.py failsafe_replicate copies what is missing and says why a replica "
            "fails; manage.py failsafe_status shows every replica.",
        ],
        key=f"{EVENT_REPLICA}:{alarm.replica}",
        data={"replica": alarm.replica, "problem": alarm.message},
    )
