"""Comparisons, safe marks and the emergency trigger: what changed since the last safe backup."""

from __future__ import annotations

import logging

from django.db import DatabaseError, transaction
from django.utils import timezone

from licensing import services as licensing

from .. import archives, capture, recovery
from ..compare import ComparisonResult
from ..compare import compare as compare_snapshots
from ..exceptions import (
    ArchiveCorrupt,
    FailsafeError,
    InvestigationNotFound,
    UnacceptedIssues,
)
from ..investigate import Investigation, investigate
from ..models import Backup
from ..progress import Progress, reporting, stage
from . import alerts
from .backups import get_backup, last_safe_backup, take_backup, usable_backup
from .guards import (
    ACTION_MARK_SAFE,
    ACTION_TRIGGER,
    Actor,
    audited,
    require_failsafe_password,
    require_superadmin,
    secret_attempt,
)
from .results import TriggerResult

logger = logging.getLogger(__name__)

ACTION_INVESTIGATION = "failsafe.investigation"


def _rows_archived(*backups: Backup | None) -> int | None:
    """Rows a compare reads from archives (the live side is not counted): the backups'."""
    counts = [archives.rows_counted(backup.state) for backup in backups if backup is not None]
    return None if None in counts else sum(counts)


def compare_with_baseline(*, baseline: Backup | None, current: Backup | None) -> ComparisonResult:
    """Compare `current` (None: live) against `baseline`; an unreadable baseline is an issue."""
    if baseline is None:
        return ComparisonResult.no_safe_backup()
    result = _compare_with(baseline=baseline, current=current)
    result.safe_backup_created_at = baseline.created_at
    return result


def _compare_with(*, baseline: Backup, current: Backup | None) -> ComparisonResult:
    try:
        with stage("Compare", _rows_archived(baseline, current)):
            if current is None:
                with archives.open_snapshot(baseline) as old, capture.live_snapshot() as new:
                    return compare_snapshots(
                        baseline=old, current=new, baseline_backup_id=str(baseline.id)
                    )
            with archives.open_pair(baseline, current) as (old, new):
                return compare_snapshots(
                    baseline=old, current=new, baseline_backup_id=str(baseline.id)
                )
    except ArchiveCorrupt as exc:
        if current is not None and str(current.id) in str(exc):
            raise
        return ComparisonResult.unreadable_baseline(str(baseline.id), str(exc))


def compare(
    *, actor: Actor, backup_id=None, against=None, progress: Progress | None = None
) -> ComparisonResult:
    """Compare a backup (default: the live database) against another or the last safe one."""
    target = f"{backup_id or 'live'} against {against or 'last safe'}"
    with audited(actor, "failsafe.compare", target=target[:255]) as details, reporting(progress):
        require_superadmin(actor)
        current = None if backup_id in (None, "", "live") else usable_backup(backup_id)
        if against in (None, ""):
            baseline = last_safe_backup()
        elif against == "live":
            baseline = None
            if current is None:
                raise FailsafeError("Comparing the live database against itself shows nothing")
        else:
            baseline = usable_backup(against)
        if against == "live":
            # What changed from the backup to now: the backup is the side changes start from.
            with (
                stage("Compare", _rows_archived(current)),
                archives.open_snapshot(current) as old,
                capture.live_snapshot() as new,
            ):
                result = compare_snapshots(
                    baseline=old, current=new, baseline_backup_id=str(current.id)
                )
        else:
            result = compare_with_baseline(baseline=baseline, current=current)
        details.update(issues=len(result.issues), changes=len(result.changes))
        return result


def mark_safe(
    *, actor: Actor, backup_id, password: str | None = None, accept_issues: bool = False
) -> Backup:
    """Make a backup a baseline that comparisons trust and restores are offered from.

    It changes what the failsafe trusts, so it needs the failsafe password; a backup whose
    comparison with the current safe baseline has issues is refused unless `accept_issues`,
    and the issues accepted are kept in the audit trail.
    """
    with audited(actor, ACTION_MARK_SAFE, target=str(backup_id)[:64]) as details:
        require_superadmin(actor)
        backup = usable_backup(backup_id)
        require_failsafe_password(actor, ACTION_MARK_SAFE, password)
        # A backup that cannot be read back is no baseline: check it before trusting it.
        archives.verify(backup)
        baseline = last_safe_backup()
        if baseline is not None and baseline.pk != backup.pk:
            issues = compare_with_baseline(baseline=baseline, current=backup).issues
            if issues and not accept_issues:
                raise UnacceptedIssues(
                    f"Backup {backup.id} has issues against the last safe backup "
                    f"{baseline.id}: {'; '.join(issues[:5])}"
                    + (f"; and {len(issues) - 5} more" if len(issues) > 5 else "")
                    + ". Review them, then mark it safe with --accept-issues",
                    issues=issues,
                )
            details["accepted_issues"] = issues[:20]
        with transaction.atomic():
            backup = Backup.objects.select_for_update().get(pk=backup.pk)
            newly_safe = not backup.is_safe
            if newly_safe:
                backup.is_safe = True
                backup.marked_safe_at = timezone.now()
                backup.marked_safe_by_username = actor.username
            # Kept with the archives too, for failsafe_recover; a mark the storage cannot
            # keep refuses the marking. Marking again records a mark made before that.
            recovery.record_safe_mark(backup)
            if newly_safe:
                backup.save(update_fields=["is_safe", "marked_safe_at", "marked_safe_by_username"])
        return backup


def investigate_and_keep(*, backup: Backup, safe_backup: Backup | None) -> Investigation:
    """Investigate an emergency backup against the safe one, and keep the investigation with
    the backup (Backup.investigation), to be read again later (stored_investigation).

    Keeping it never fails the investigation: a database error is logged, and the report
    is still returned to whoever is looking at it now.
    """
    comparison = compare_with_baseline(baseline=safe_backup, current=backup)
    report = investigate(comparison=comparison, safe_backup=safe_backup)
    data = report.to_data()
    try:
        with transaction.atomic():
            Backup.objects.filter(pk=backup.pk).update(investigation=data)
    except DatabaseError as exc:
        logger.warning("The investigation of backup %s was not kept: %s", backup.id, exc)
    else:
        backup.investigation = data
    return report


def investigation_of(backup: Backup) -> Investigation:
    """The investigation kept with `backup`; InvestigationNotFound when it has none."""
    if backup.investigation is None:
        raise InvestigationNotFound(
            f"Backup {backup.id} has no stored investigation: only emergency backups (taken "
            "by a trigger or by the drift watch) keep one"
        )
    try:
        return Investigation.from_data(backup.investigation)
    except ValueError as exc:
        raise FailsafeError(
            f"The investigation stored with backup {backup.id} cannot be read: {exc}"
        ) from None


def stored_investigation(*, actor: Actor, backup_id) -> Investigation:
    """The investigation made when a backup was taken by a trigger, as it was then."""
    with audited(actor, ACTION_INVESTIGATION, target=str(backup_id)[:64]) as details:
        require_superadmin(actor)
        backup = get_backup(backup_id)
        report = investigation_of(backup)
        details.update(backup_id=str(backup.id), issues=len(report.comparison.issues))
        return report


def trigger(
    *, actor: Actor, passkey: str, reason: str = "", progress: Progress | None = None
) -> TriggerResult:
    """Take an emergency backup and investigate it against the last safe backup.

    It runs exactly when things are broken, so a missing or unreadable baseline becomes an
    issue in the report instead of a failure.
    """
    with audited(actor, ACTION_TRIGGER) as details, reporting(progress):
        require_superadmin(actor)
        licensing.require_failsafe_password_set()
        with secret_attempt(actor, ACTION_TRIGGER):
            licensing.require_valid_passkey(passkey)
        backup = take_backup(
            actor=actor, backup_type=Backup.Type.EMERGENCY, reason=reason or "Emergency trigger"
        )
        safe_backup = last_safe_backup()
        report = investigate_and_keep(backup=backup, safe_backup=safe_backup)
        comparison = report.comparison
        details.update(backup_id=str(backup.id), issues=comparison.issues[:20])
        result = TriggerResult(backup=backup, investigation=report)
        alerts.emergency_triggered(actor=actor, result=result, reason=reason, passkey=passkey)
        return result
