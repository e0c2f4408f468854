"""Turn a comparison into the seed's investigation: recommendations and root-cause hints.

The hints are who did what since the last safe backup to the very records the comparison
found changed: the admin log entries on them, the restores that rewrote them and the audit
events naming them, each with its outcome. The changed records none of these account for are
said to have no recorded actor, rather than left to be pinned on whoever is listed last.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q
from django.utils import timezone

from . import audit, journal
from . import compare as findings
from .capture import captured_models
from .compare import (
    ChangedRecord,
    ComparisonResult,
    Consequence,
    FieldChange,
    ModelDifference,
    ModifiedRecord,
    RecordList,
)
from .conf import setting
from .journal import Entry as JournalEntry
from .journal import JournalReport
from .models import AuditEvent, Backup
from .snapshot import json_safe, model_label

STATUS = "Investigating"
# Without a safe backup there is no "since": look at the last day.
LOOKBACK_WITHOUT_SAFE_BACKUP = datetime.timedelta(hours=24)
HINTS_PER_ACTOR = 50
NAMED_IN_RECOMMENDATION = 10
# Audit events with no acting user (the system itself, a cron job) are grouped under this.
NO_ACTOR = "(system)"

SOURCE_ADMIN_LOG = "admin-log"
SOURCE_AUDIT = "audit"

# What the changed records nobody is on record for are called, wherever they are listed.
NO_RECORDED_ACTOR = "no recorded actor (changed outside the admin and the failsafe)"
NAMED_AS_UNATTRIBUTED = 10

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
# An admin log entry's outcome is what its action flag says it did.
_LOG_OUTCOMES = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}
# An evidence event's `record`: "<label> #<pk> <repr>".
_EVIDENCE_RECORD = re.compile(r"^(\S+) #(\S+)")


@dataclass(frozen=True)
class Hint:
    actor: str
    when: datetime.datetime
    source: str  # SOURCE_ADMIN_LOG or SOURCE_AUDIT
    action: str
    target: str  # a record as "<model label> <natural key>", or an audit event's target
    # SUCCESS, DENIED or FAILED for an audit event; added, changed or deleted for an admin
    # log entry.
    outcome: str = ""


@dataclass
class Unattributed:
    """The changed records no admin log entry, restore or audit event accounts for: changed
    outside the admin and the failsafe (the shell, a script, raw SQL, the site itself)."""

    count: int = 0
    records: dict[str, list[str]] = field(default_factory=dict)  # label -> natural keys
    # Changed records the comparison counted but did not name, so could not be looked up.
    not_checked: int = 0

    @property
    def summary(self) -> str:
        """One line, or "" when every changed record has an actor on record."""
        parts = []
        if self.count:
            names = [name for names in self.records.values() for name in names]
            shown = names[:NAMED_AS_UNATTRIBUTED]
            listed = ", ".join(shown)
            if self.count > len(shown):
                listed += f" and {self.count - len(shown)} more"
            changes = "1 change" if self.count == 1 else f"{self.count} changes"
            parts.append(f"{changes} with {NO_RECORDED_ACTOR}: {listed}")
        if self.not_checked:
            parts.append(
                f"{self.not_checked} more changed records were not named by the comparison, "
                "so nobody could be looked up for them"
            )
        return "; ".join(parts)


@dataclass
class RootCause:
    since: datetime.datetime
    by_actor: dict[str, list[Hint]] = field(default_factory=dict)
    # Hints left out per actor beyond HINTS_PER_ACTOR.
    omitted: dict[str, int] = field(default_factory=dict)
    no_recorded_actor: Unattributed = field(default_factory=Unattributed)
    # The change journal's entries on the changed records (PostgreSQL); None without one.
    journal: JournalReport | None = None


@dataclass
class Investigation:
    last_safe_backup: str | None
    comparison: ComparisonResult
    recommendations: list[str]
    root_cause: RootCause
    status: str = STATUS

    def to_data(self) -> dict:
        """The investigation as plain JSON-safe data, to keep with its backup
        (Backup.investigation); `from_data` gives back an equal Investigation.

        Everything ordered is a list, never an object's keys: PostgreSQL's jsonb does not
        keep key order, and the order of models and actors is part of the report.
        """
        return {
            "version": DATA_VERSION,
            "status": self.status,
            "last_safe_backup": self.last_safe_backup,
            "recommendations": list(self.recommendations),
            "comparison": _comparison_data(self.comparison),
            "root_cause": _root_cause_data(self.root_cause),
        }

    @classmethod
    def from_data(cls, data: dict) -> Investigation:
        """The Investigation `to_data` gave; ValueError when `data` is not one."""
        try:
            if data.get("version") != DATA_VERSION:
                raise ValueError(f"unknown version {str(data.get('version'))[:20]!r}")
            return cls(
                last_safe_backup=data["last_safe_backup"],
                comparison=_comparison_from(data["comparison"]),
                recommendations=list(data["recommendations"]),
                root_cause=_root_cause_from(data["root_cause"]),
                status=data["status"],
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stored investigation ({type(exc).__name__}: {exc})") from None


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
        root_cause=root_cause(since=since, comparison=comparison),
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


# A record of the comparison as the hints know it: (model label, pk as text).
_RecordKey = tuple[str, str]


def _key(label: str, pk) -> _RecordKey:
    # The admin log keeps object ids as text: so does this, for every source alike.
    return label, str(pk)


def _restored(event: AuditEvent, changed: dict[_RecordKey, ChangedRecord]) -> set[_RecordKey]:
    """The changed records a restore event rewrote, or would have: those of the models its
    plan changed; all of them when it stopped before it had a plan (refused, failed)."""
    details = event.details if isinstance(event.details, dict) else {}
    if details.get("dry_run"):
        return set()
    plan = details.get("changes")
    if isinstance(plan, dict):
        labels = {
            label
            for label, counts in plan.items()
            if isinstance(counts, dict) and any(counts.values())
        }
        return {key for key, record in changed.items() if record.label in labels}
    return set(changed)


def _evidence_hint(
    event: AuditEvent, since: datetime.datetime, changed: dict[_RecordKey, ChangedRecord]
) -> tuple[Hint, set[_RecordKey]] | None:
    """An admin log entry a restore's cascade deleted and the trail kept, as the entry was."""
    details = event.details if isinstance(event.details, dict) else {}
    match = _EVIDENCE_RECORD.match(str(details.get("record") or ""))
    key = _key(match[1], match[2]) if match else None
    if key not in changed:
        return None
    try:
        when = datetime.datetime.fromisoformat(str(details.get("when")))
    except ValueError:
        when = event.created_at
    if timezone.is_naive(when):
        when = timezone.make_aware(when, datetime.UTC)
    if when < since:
        return None
    flag = details.get("flag")
    hint = Hint(
        actor=str(details.get("by") or NO_ACTOR),
        when=when,
        source=SOURCE_ADMIN_LOG,
        action=str(details.get("change") or _LOG_VERBS.get(flag, "Changed.")),
        target=f"{key[0]} {changed[key].name}",
        outcome=_LOG_OUTCOMES.get(flag, "changed"),
    )
    return hint, {key}


def _audit_hints(
    since: datetime.datetime, changed: dict[_RecordKey, ChangedRecord]
) -> Iterator[tuple[Hint, set[_RecordKey]]]:
    """The audit events that touched a changed record: restores, the admin log entries they
    kept as evidence, and events whose target names the record ("accounts.user alice").
    Everything else the trail holds (status reads, backups, comparisons) touched none."""
    if not changed:
        return
    named = {f"{record.label} {record.name}": key for key, record in changed.items()}
    touching = Q(action__in=[audit.ACTION_RESTORE, audit.ACTION_EVIDENCE]) | Q(
        target__in=list(named)
    )
    events = (
        AuditEvent.objects.filter(touching, created_at__gte=since)
        .order_by("created_at", "seq")
        .iterator(chunk_size=setting("FETCH_SIZE"))
    )
    for event in events:
        if event.action == audit.ACTION_EVIDENCE:
            evidence = _evidence_hint(event, since, changed)
            if evidence is not None:
                yield evidence
            continue
        if event.action == audit.ACTION_RESTORE:
            touched = _restored(event, changed)
        else:
            touched = {named[event.target]} if event.target in named else set()
        if touched:
            hint = Hint(
                actor=event.actor_username or NO_ACTOR,
                when=event.created_at,
                source=SOURCE_AUDIT,
                action=event.action,
                target=event.target,
                outcome=event.outcome,
            )
            yield hint, touched


def _admin_log_hints(
    since: datetime.datetime, changed: dict[_RecordKey, ChangedRecord]
) -> Iterator[tuple[Hint, set[_RecordKey]]]:
    touched = Q()
    for model in captured_models():
        label = model_label(model)
        object_ids = [pk for record_label, pk in changed if record_label == label]
        if object_ids:
            content_type = ContentType.objects.get_for_model(model)
            touched |= Q(content_type=content_type, object_id__in=object_ids)
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
        key = _key(f"{content_type.app_label}.{content_type.model}", entry.object_id)
        record = changed.get(key)
        hint = Hint(
            actor=entry.user.get_username(),
            when=entry.action_time,
            source=SOURCE_ADMIN_LOG,
            action=entry.get_change_message() or _LOG_VERBS.get(entry.action_flag, "Changed."),
            target=f"{key[0]} {record.name if record else entry.object_repr}",
            outcome=_LOG_OUTCOMES.get(entry.action_flag, "changed"),
        )
        yield hint, {key}


# An admin log entry records a change made; an audit event changed something only when it
# succeeded. A denied or failed attempt is listed, but accounts for nothing.
_MADE_CHANGES = {AuditEvent.Outcome.SUCCESS, *_LOG_OUTCOMES.values()}


def root_cause(*, since: datetime.datetime, comparison: ComparisonResult) -> RootCause:
    """Who did what since `since` to the records `comparison` names as changed, oldest
    first, at most HINTS_PER_ACTOR per actor; and the changed records nobody is on record for.

    Only events that touched those records count, so neither the everyday admin work on
    other records nor the SuperAdmin's own reads (status, backups, comparisons) bury the
    one that matters. A record changed only because what it pointed at was removed (a
    license whose owner was deleted) is accounted for by that removal.
    """
    changed = {_key(record.label, record.pk): record for record in comparison.changed_records()}
    hints = sorted(
        [*_audit_hints(since, changed), *_admin_log_hints(since, changed)],
        key=lambda pair: pair[0].when,
    )
    cause = RootCause(since=since)
    accounted: set[_RecordKey] = set()
    for hint, touched in hints:
        if hint.outcome in _MADE_CHANGES:
            accounted |= touched
        listed = cause.by_actor.setdefault(hint.actor, [])
        if len(listed) < HINTS_PER_ACTOR:
            listed.append(hint)
        else:
            cause.omitted[hint.actor] = cause.omitted.get(hint.actor, 0) + 1
    unattributed = cause.no_recorded_actor
    for key, record in changed.items():
        if key in accounted or record.follows_deletions_only:
            continue
        unattributed.count += 1
        unattributed.records.setdefault(record.label, []).append(record.name)
    counted = sum(
        difference.added.count + difference.removed.count + difference.modified.count
        for difference in comparison.details.values()
    )
    unattributed.not_checked = max(0, counted - len(changed))
    # Beside the hints, not among them: the journal names a database role for every change,
    # so it would account for all of them, while the admin log and the audit trail are
    # what say which were made through the application.
    cause.journal = journal.entries(
        since=since, records={key: record.name for key, record in changed.items()}
    )
    return cause


# --- kept as data (Backup.investigation) --------------------------------------------

DATA_VERSION = 1


def _moment(value: datetime.datetime | None) -> str | None:
    # Full precision and the offset: an exact round trip, unlike the displayed `iso`.
    return value.isoformat() if value is not None else None


def _moment_from(value: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(value) if value is not None else None


def _record_list_data(records: RecordList) -> dict:
    return {"count": records.count, "records": list(records.records)}


def _modified_data(records: RecordList) -> dict:
    return {
        "count": records.count,
        "records": [
            {
                "record": modified.record,
                "fields": [
                    {
                        "name": f.name,
                        "old": f.old,
                        "new": f.new,
                        "secret": f.secret,
                        "relation": f.relation,
                        "follows_deletion": f.follows_deletion,
                    }
                    for f in modified.fields
                ],
            }
            for modified in records.records
        ],
    }


def _comparison_data(result: ComparisonResult) -> dict:
    return {
        "has_safe_backup": result.has_safe_backup,
        "safe_backup_id": result.safe_backup_id,
        "message": result.message,
        "issues": list(result.issues),
        "changes": list(result.changes),
        "details": [
            {
                "label": difference.label,
                "added": _record_list_data(difference.added),
                "removed": _record_list_data(difference.removed),
                "modified": _modified_data(difference.modified),
                "truncated": difference.truncated,
                "consequences": [
                    {
                        "field": c.field,
                        "target": c.target,
                        "count": c.count,
                        "records": list(c.records),
                        "summary": c.summary,
                    }
                    for c in difference.consequences
                ],
            }
            for difference in result.details.values()
        ],
        "findings": sorted(result.findings),
        "superadmins": list(result.superadmins),
        # A primary key JSON cannot hold (a UUID) is kept as its text, as the admin log's
        # object_id holds it.
        "affected_pks": [[label, json_safe(pks)] for label, pks in result.affected_pks.items()],
        "baseline_name": result.baseline_name,
        "current_name": result.current_name,
        "safe_backup_created_at": _moment(result.safe_backup_created_at),
    }


def _comparison_from(data: dict) -> ComparisonResult:
    def records(entry: dict) -> RecordList:
        return RecordList(entry["count"], list(entry["records"]))

    def modified(entry: dict) -> RecordList:
        return RecordList(
            entry["count"],
            [
                ModifiedRecord(
                    record["record"],
                    [
                        FieldChange(
                            f["name"],
                            f["old"],
                            f["new"],
                            bool(f["secret"]),
                            # Kept before relations were named: plain changes.
                            relation=bool(f.get("relation")),
                            follows_deletion=bool(f.get("follows_deletion")),
                        )
                        for f in record["fields"]
                    ],
                )
                for record in entry["records"]
            ],
        )

    details = {
        entry["label"]: ModelDifference(
            label=entry["label"],
            added=records(entry["added"]),
            removed=records(entry["removed"]),
            modified=modified(entry["modified"]),
            truncated=bool(entry["truncated"]),
            consequences=[
                Consequence(
                    field=c["field"],
                    target=c["target"],
                    count=c["count"],
                    records=list(c["records"]),
                    summary=c["summary"],
                )
                for c in entry.get("consequences", [])
            ],
        )
        for entry in data["details"]
    }
    return ComparisonResult(
        has_safe_backup=bool(data["has_safe_backup"]),
        safe_backup_id=data["safe_backup_id"],
        message=data["message"],
        issues=list(data["issues"]),
        changes=list(data["changes"]),
        details=details,
        findings=set(data["findings"]),
        superadmins=list(data["superadmins"]),
        affected_pks={label: list(pks) for label, pks in data["affected_pks"]},
        baseline_name=data["baseline_name"],
        current_name=data["current_name"],
        safe_backup_created_at=_moment_from(data["safe_backup_created_at"]),
    )


def _root_cause_data(cause: RootCause) -> dict:
    return {
        "since": _moment(cause.since),
        "by_actor": [
            [
                actor,
                [
                    {
                        "when": _moment(h.when),
                        "source": h.source,
                        "action": h.action,
                        "target": h.target,
                        "outcome": h.outcome,
                    }
                    for h in hints
                ],
            ]
            for actor, hints in cause.by_actor.items()
        ],
        "omitted": [[actor, count] for actor, count in cause.omitted.items()],
        "no_recorded_actor": {
            "count": cause.no_recorded_actor.count,
            "records": [[label, names] for label, names in cause.no_recorded_actor.records.items()],
            "not_checked": cause.no_recorded_actor.not_checked,
        },
        "journal": _journal_data(cause.journal),
    }


def _root_cause_from(data: dict) -> RootCause:
    return RootCause(
        since=_moment_from(data["since"]),
        by_actor={
            actor: [
                Hint(
                    actor=actor,
                    when=_moment_from(h["when"]),
                    source=h["source"],
                    action=h["action"],
                    target=h["target"],
                    outcome=h.get("outcome", ""),
                )
                for h in hints
            ]
            for actor, hints in data["by_actor"]
        },
        omitted={actor: count for actor, count in data["omitted"]},
        no_recorded_actor=_unattributed_from(data.get("no_recorded_actor")),
        journal=_journal_from(data.get("journal")),
    )


def _unattributed_from(data: dict | None) -> Unattributed:
    if data is None:
        return Unattributed()  # kept before changes without an actor were told apart
    return Unattributed(
        count=data["count"],
        records={label: list(names) for label, names in data["records"]},
        not_checked=data["not_checked"],
    )


def _journal_data(report: JournalReport | None) -> dict | None:
    if report is None:
        return None
    return {
        "entries": [
            {
                "when": _moment(entry.when),
                "operation": entry.operation,
                "target": entry.target,
                "database_role": entry.database_role,
                "username": entry.username,
                "columns": list(entry.columns),
            }
            for entry in report.entries
        ],
        "omitted": report.omitted,
        "problem": report.problem,
    }


def _journal_from(data: dict | None) -> JournalReport | None:
    if data is None:
        return None  # kept where there is no journal, or before there was one
    return JournalReport(
        entries=[
            JournalEntry(
                when=_moment_from(entry["when"]),
                operation=entry["operation"],
                target=entry["target"],
                database_role=entry["database_role"],
                username=entry["username"],
                columns=tuple(entry["columns"]),
            )
            for entry in data["entries"]
        ],
        omitted=data["omitted"],
        problem=data.get("problem", ""),
    )


# --- what one actor touched (a selective restore "by actor and time") -------------------


@dataclass
class ActorRecords:
    """The captured records one actor touched since a moment: (model label, key) -> how
    many audit events, admin log entries and journal entries name it. A key is "#pk" (admin
    log, journal) or the natural key (an audit event's target)."""

    username: str
    since: datetime.datetime
    records: dict[tuple[str, str], int] = field(default_factory=dict)
    # Whether the logs name this user at all (a deleted account still appears in them).
    known: bool = False


def touched_by(*, username: str, since: datetime.datetime) -> ActorRecords:
    """What `username` changed since `since`, as the audit trail (successful events whose
    target names a captured record), the admin log and, on PostgreSQL, the change journal
    record it. Denied and failed attempts changed nothing, so they select nothing."""
    found = ActorRecords(username=username, since=since)
    records = found.records

    def count(key: tuple[str, str], times: int = 1) -> None:
        records[key] = records.get(key, 0) + times

    labels = {model_label(model): model for model in captured_models()}
    events = AuditEvent.objects.filter(actor_username=username)
    found.known = events.exists()
    for target in events.filter(
        created_at__gte=since, outcome=AuditEvent.Outcome.SUCCESS
    ).values_list("target", flat=True):
        label, _space, name = str(target or "").partition(" ")
        if label in labels and name:
            count((label, name))
    content_types = {
        ContentType.objects.get_for_model(model).pk: label for label, model in labels.items()
    }
    by_user = {f"user__{get_user_model().USERNAME_FIELD}": username}
    entries = LogEntry.objects.filter(
        **by_user, action_time__gte=since, content_type_id__in=list(content_types)
    )
    found.known = found.known or LogEntry.objects.filter(**by_user).exists()
    for content_type_id, object_id in entries.values_list("content_type_id", "object_id"):
        if object_id:
            count((content_types[content_type_id], f"#{object_id}"))
    journaled = journal.touched_by(username=username, since=since)
    for key, times in (journaled or {}).items():
        count(key, times)
    found.known = found.known or bool(journaled)
    return found
