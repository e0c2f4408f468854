"""Turn a comparison into the seed's investigation: recommendations and root-cause hints.

The hints are who did what since the last safe backup: the failsafe audit trail, and the
admin log entries that touched the very records the comparison found changed.
"""

from __future__ import annotations

import datetime
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q
from django.utils import timezone

from . import compare as findings
from .capture import captured_models
from .compare import ComparisonResult
from .conf import setting
from .models import AuditEvent, Backup
from .snapshot import model_label

STATUS = "Investigating"
# Without a safe backup there is no "since": look at the last day.
LOOKBACK_WITHOUT_SAFE_BACKUP = datetime.timedelta(hours=24)
HINTS_PER_ACTOR = 50
NAMED_IN_RECOMMENDATION = 10
# Audit events with no acting user (the system itself, a cron job) are grouped under this.
NO_ACTOR = "(system)"

SOURCE_ADMIN_LOG = "admin-log"
SOURCE_AUDIT = "audit"

REVIEW_AUDIT_LOGS = "Review audit logs for suspicious activity"
NO_ACTION = "No action required; if this state is known to be good, mark the new backup as safe"
MARK_SAFE = "Mark a known-good backup as safe: manage.py failsafe_marksafe <backup-id>"
FORCE_PASSWORD_RESET = "Force a password reset for the affected users"
SCHEMA_ADVICE = "Restore only from a backup taken under the current schema, or migrate first"
VERIFY_BACKUPS = (
    "Verify backups with manage.py failsafe_verify --all and mark a readable backup as safe"
)
REVIEW_LICENSES = "Check with their owners why the listed licenses were revoked or suspended"

_LOG_VERBS = {ADDITION: "Added.", CHANGE: "Changed.", DELETION: "Deleted."}


@dataclass(frozen=True)
class Hint:
    actor: str
    when: datetime.datetime
    source: str  # SOURCE_ADMIN_LOG or SOURCE_AUDIT
    action: str
    target: str


@dataclass
class RootCause:
    since: datetime.datetime
    by_actor: dict[str, list[Hint]] = field(default_factory=dict)
    # Hints left out per actor beyond HINTS_PER_ACTOR.
    omitted: dict[str, int] = field(default_factory=dict)


@dataclass
class Investigation:
    last_safe_backup: str | None
    comparison: ComparisonResult
    recommendations: list[str]
    root_cause: RootCause
    status: str = STATUS


def investigate(*, comparison: ComparisonResult, safe_backup: Backup | None) -> Investigation:
    """Recommend what to do about `comparison` and gather who changed what since `safe_backup`."""
    if safe_backup is not None:
        last_safe_backup = str(safe_backup.id)
        since = safe_backup.created_at
    else:
        last_safe_backup = comparison.safe_backup_id
        since = timezone.now() - LOOKBACK_WITHOUT_SAFE_BACKUP
    return Investigation(
        last_safe_backup=last_safe_backup,
        comparison=comparison,
        recommendations=recommendations(comparison, last_safe_backup),
        root_cause=root_cause(since=since, affected_pks=comparison.affected_pks),
    )


# --- recommendations -----------------------------------------------------------------


def _names(names: list[str]) -> str:
    shown = names[:NAMED_IN_RECOMMENDATION]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


# The original module's advice, which clients of it parse: its lines come first, ours after.
ORIGINAL_NO_BASELINE = [
    "Mark this backup as safe if system is functioning correctly",
    "Run comprehensive system checks",
]
ORIGINAL_STABLE = [
    "System appears stable",
    "Consider marking this backup as safe",
    "Continue monitoring for anomalies",
]
INVESTIGATE_ISSUES = "Investigate the following issues:"
CONSIDER_SANCTIONS = "Consider issuing appropriate sanctions"


def recommendations(comparison: ComparisonResult, last_safe_backup: str | None) -> list[str]:
    if not comparison.has_safe_backup:
        return ORIGINAL_NO_BASELINE + [MARK_SAFE]
    if not comparison.issues:
        return ORIGINAL_STABLE + [NO_ACTION]
    found = comparison.findings
    advice = []
    # Restoring from the very backup we could not read would only fail again.
    if last_safe_backup and findings.BASELINE_UNREADABLE not in found:
        advice.append(f"RECOMMENDED: Restore from last safe backup (ID: {last_safe_backup})")
    advice.append(INVESTIGATE_ISSUES)
    advice += [f"  - {issue}" for issue in comparison.issues]
    advice += [REVIEW_AUDIT_LOGS, CONSIDER_SANCTIONS]
    missing = [
        noun
        for noun, finding in (
            ("users", findings.USERS_DECREASED),
            ("licenses", findings.LICENSES_DECREASED),
        )
        if finding in found
    ]
    if missing:
        advice.append(f"Investigate missing {' and '.join(missing)}")
    if findings.SUPERADMINS_CHANGED in found and comparison.superadmins:
        advice.append(f"Verify SuperAdmin accounts: {_names(sorted(comparison.superadmins))}")
    if findings.LICENSES_REVOKED in found:
        advice.append(REVIEW_LICENSES)
    if findings.PASSWORDS_CHANGED in found:
        advice.append(FORCE_PASSWORD_RESET)
    if findings.SCHEMA_DIFFERS in found:
        advice.append(SCHEMA_ADVICE)
    if findings.BASELINE_UNREADABLE in found:
        advice.append(VERIFY_BACKUPS)
    return advice


# --- root-cause hints ----------------------------------------------------------------


def _audit_hints(since: datetime.datetime) -> Iterator[Hint]:
    events = (
        AuditEvent.objects.filter(created_at__gte=since)
        .order_by("created_at", "seq")
        .iterator(chunk_size=setting("FETCH_SIZE"))
    )
    for event in events:
        yield Hint(
            actor=event.actor_username or NO_ACTOR,
            when=event.created_at,
            source=SOURCE_AUDIT,
            action=event.action,
            target=event.target,
        )


def _admin_log_hints(since: datetime.datetime, affected_pks: dict[str, list]) -> Iterator[Hint]:
    touched = Q()
    for model in captured_models():
        pks = affected_pks.get(model_label(model))
        if pks:
            content_type = ContentType.objects.get_for_model(model)
            touched |= Q(content_type=content_type, object_id__in=[str(pk) for pk in pks])
    if not touched:
        return
    entries = (
        LogEntry.objects.filter(touched, action_time__gte=since)
        .select_related("user", "content_type")
        .order_by("action_time", "id")
        .iterator(chunk_size=setting("FETCH_SIZE"))
    )
    for entry in entries:
        content_type = entry.content_type
        yield Hint(
            actor=entry.user.get_username(),
            when=entry.action_time,
            source=SOURCE_ADMIN_LOG,
            action=entry.get_change_message() or _LOG_VERBS.get(entry.action_flag, "Changed."),
            target=f"{content_type.app_label}.{content_type.model} {entry.object_repr}",
        )


def root_cause(*, since: datetime.datetime, affected_pks: dict[str, list]) -> RootCause:
    """Who did what since `since`, oldest first, at most HINTS_PER_ACTOR per actor.

    Admin log entries count only when they touched a record the comparison names, so the
    everyday admin work on other records does not bury the one that matters.
    """
    cause = RootCause(since=since)
    hints = heapq.merge(
        _audit_hints(since), _admin_log_hints(since, affected_pks), key=lambda h: h.when
    )
    for hint in hints:
        listed = cause.by_actor.setdefault(hint.actor, [])
        if len(listed) < HINTS_PER_ACTOR:
            listed.append(hint)
        else:
            cause.omitted[hint.actor] = cause.omitted.get(hint.actor, 0) + 1
    return cause
