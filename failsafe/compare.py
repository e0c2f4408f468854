"""Compare a snapshot with the last safe one: what changed, and which changes are alarming.

Both snapshots are streamed through the merge-join of diff.py, so memory stays flat however
big the tables are: we keep counters, and name at most DETAIL_LIMIT records per list.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.apps import apps
from django.contrib.auth import get_user_model

from accounts.models import Role
from licensing.models import License

from .conf import setting
from .diff import ADDED, MODIFIED, REMOVED, RowDiff, diff_rows, paired_sections
from .exceptions import SchemaMismatch
from .snapshot import (
    ModelSpec,
    Section,
    Snapshot,
    is_secret_column,
    json_safe,
    model_label,
    record_namer,
)

# The kinds of alarm an issue raises, so investigate.py recommends without parsing our text.
USERS_DECREASED = "users_decreased"
LICENSES_DECREASED = "licenses_decreased"
SUPERADMINS_CHANGED = "superadmins_changed"
LICENSES_REVOKED = "licenses_revoked"
PASSWORDS_CHANGED = "passwords_changed"
SCHEMA_DIFFERS = "schema_differs"
BASELINE_UNREADABLE = "baseline_unreadable"

MESSAGE_ISSUES = "Issues detected"
MESSAGE_CLEAN = "No critical issues detected"
MESSAGE_NO_SAFE_BACKUP = "No safe backup found for comparison"
# The original module's one issue when there is nothing to compare against.
ISSUE_NO_BASELINE = "This is the first backup - no baseline to compare against"
LIVE = "live"  # the Snapshot name of the live database

# A one-line summary names this many records, then says how many more there are.
NAMED_IN_SUMMARY = 10

_WITHDRAWN_LICENSE = {License.Status.REVOKED.value, License.Status.SUSPENDED.value}
_SUPERADMIN = Role.SUPERADMIN.value


@dataclass(frozen=True)
class FieldChange:
    """One column of a modified record; a secret column says only that it changed."""

    name: str
    old: object = None  # JSON-safe
    new: object = None
    secret: bool = False


@dataclass(frozen=True)
class ModifiedRecord:
    record: str  # its natural key
    fields: list[FieldChange]


@dataclass
class RecordList:
    """A true count, and the records named (DETAIL_LIMIT at most)."""

    count: int = 0
    records: list = field(default_factory=list)  # natural keys, or ModifiedRecords


@dataclass
class ModelDifference:
    """One model's record-level difference between the two snapshots."""

    label: str
    added: RecordList
    removed: RecordList
    modified: RecordList
    truncated: bool  # some records were counted but not named


@dataclass
class ComparisonResult:
    has_safe_backup: bool
    safe_backup_id: str | None
    message: str
    issues: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    # Per model label, in capture order.
    details: dict[str, ModelDifference] = field(default_factory=dict)
    # For investigate.py, never rendered: the kinds of the issues, the SuperAdmins they name,
    # and the primary keys of the records the details name (model label -> pks).
    findings: set[str] = field(default_factory=set)
    superadmins: list[str] = field(default_factory=list)
    affected_pks: dict[str, list] = field(default_factory=dict)
    # The two sides, as Snapshot names them: a backup id, or "live". Changes read from the
    # baseline to the current side.
    baseline_name: str | None = None
    current_name: str | None = None
    # When the safe backup compared against was taken (None: live, or none).
    safe_backup_created_at: datetime.datetime | None = None

    @property
    def baseline_label(self) -> str | None:
        return _side_label(self.baseline_name)

    @property
    def current_label(self) -> str | None:
        return _side_label(self.current_name)

    @classmethod
    def no_safe_backup(cls) -> ComparisonResult:
        return cls(
            has_safe_backup=False,
            safe_backup_id=None,
            message=MESSAGE_NO_SAFE_BACKUP,
            issues=[ISSUE_NO_BASELINE],
        )

    @classmethod
    def unreadable_baseline(cls, backup_id: str, reason: str) -> ComparisonResult:
        return cls(
            has_safe_backup=True,
            safe_backup_id=backup_id,
            message=MESSAGE_ISSUES,
            issues=[f"Last safe backup {backup_id} is unreadable: {reason}"],
            findings={BASELINE_UNREADABLE},
            baseline_name=backup_id,
        )


def _side_label(name: str | None) -> str | None:
    if name is None:
        return None
    return "live now" if name == LIVE else f"backup {name}"


# --- small helpers --------------------------------------------------------------------


class _Tally:
    """A true count, and the first `limit` items counted."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.items: list = []

    def add(self, item) -> None:
        self.count += 1
        if self.has_room:
            self.items.append(item)

    @property
    def has_room(self) -> bool:
        return len(self.items) < self.limit

    @property
    def truncated(self) -> bool:
        return self.count > len(self.items)


def _named(names: list[str], total: int) -> str:
    shown = names[:NAMED_IN_SUMMARY]
    text = ", ".join(shown)
    if total > len(shown):
        text += f" and {total - len(shown)} more"
    return text


def _overflow(tally: _Tally, what: str) -> list[str]:
    # A per-record list stops at DETAIL_LIMIT lines and then says how many it left out.
    return [f"...and {tally.count - len(tally.items)} more {what}"] if tally.truncated else []


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _model_nouns(label: str) -> tuple[str, str]:
    try:
        meta = apps.get_model(label)._meta
    except (LookupError, ValueError):
        return label, label
    return str(meta.verbose_name), str(meta.verbose_name_plural)


def _drain(rows: Iterable) -> None:
    # An archive yields sections from one stream: a skipped section must still be read.
    collections.deque(rows, maxlen=0)


# --- one model's record-level difference ----------------------------------------------


class _ModelDiff:
    def __init__(self, spec: ModelSpec, limit: int):
        self.spec = spec
        self.index = {name: i for i, name in enumerate(spec.columns)}
        self.key = record_namer(spec)
        self.added = _Tally(limit)  # of (pk, key)
        self.removed = _Tally(limit)  # of (pk, key)
        self.modified = _Tally(limit)  # of (pk, ModifiedRecord)

    def add(self, row_diff: RowDiff) -> None:
        if row_diff.kind == ADDED:
            self.added.add((row_diff.pk, self.key(row_diff.current)))
        elif row_diff.kind == REMOVED:
            self.removed.add((row_diff.pk, self.key(row_diff.baseline)))
        elif row_diff.kind == MODIFIED:
            # Only build the field detail of records we are going to show.
            record = self._modified_record(row_diff) if self.modified.has_room else None
            self.modified.add((row_diff.pk, record))

    def _modified_record(self, row_diff: RowDiff) -> ModifiedRecord:
        fields = []
        for name in row_diff.changed_columns(self.spec):
            if is_secret_column(name):
                fields.append(FieldChange(name, secret=True))
            else:
                i = self.index[name]
                fields.append(
                    FieldChange(
                        name, json_safe(row_diff.baseline[i]), json_safe(row_diff.current[i])
                    )
                )
        return ModifiedRecord(self.key(row_diff.current), fields)

    def pks(self) -> list:
        return [pk for tally in (self.added, self.removed, self.modified) for pk, _ in tally.items]

    def difference(self) -> ModelDifference:
        def listed(tally: _Tally) -> RecordList:
            return RecordList(tally.count, [named for _, named in tally.items])

        return ModelDifference(
            label=self.spec.label,
            added=listed(self.added),
            removed=listed(self.removed),
            modified=listed(self.modified),
            truncated=self.added.truncated or self.removed.truncated or self.modified.truncated,
        )

    def change_lines(self) -> list[str]:
        singular, plural = _model_nouns(self.spec.label)
        return [
            f"{_plural(tally.count, singular, plural)} {verb}"
            for tally, verb in (
                (self.added, "added"),
                (self.removed, "removed"),
                (self.modified, "modified"),
            )
            if tally.count
        ]


# --- watchers: the alarming patterns in one model's differences -------------------------


class _UserWatch:
    """SuperAdmins gained or lost, roles changed, and password hashes changed."""

    def __init__(self, spec: ModelSpec, limit: int):
        index = {name: i for i, name in enumerate(spec.columns)}
        self.role = index.get("role")
        self.active = index.get("is_active")
        self._name = record_namer(spec)
        self.password = index.get("password")
        self.removed = _Tally(limit)
        self.added = _Tally(limit)
        self.demoted = _Tally(limit)  # of (name, old role, new role)
        self.deactivated = _Tally(limit)
        self.reactivated = _Tally(limit)
        self.promoted = _Tally(limit)
        self.role_changed = _Tally(limit)  # of (name, old role, new role)
        self.passwords = _Tally(limit)

    def _value(self, row: list, index: int | None):
        return None if index is None else row[index]

    def observe(self, row_diff: RowDiff) -> None:
        old, new = row_diff.baseline, row_diff.current
        if row_diff.kind == REMOVED:
            if self._value(old, self.role) == _SUPERADMIN:
                self.removed.add(self._name(old))
            return
        if row_diff.kind == ADDED:
            if self._value(new, self.role) == _SUPERADMIN:
                self.added.add(self._name(new))
            return
        name = self._name(new)
        old_role, new_role = self._value(old, self.role), self._value(new, self.role)
        was_active, is_active = self._value(old, self.active), self._value(new, self.active)
        if old_role == _SUPERADMIN and new_role != _SUPERADMIN:
            self.demoted.add((name, old_role, new_role))
        elif old_role != _SUPERADMIN and new_role == _SUPERADMIN:
            self.promoted.add(name)
        elif old_role != new_role:
            self.role_changed.add((name, old_role, new_role))
        # `is not None`: a user model without `is_active` is never (de)activated.
        deactivated = bool(was_active) and is_active is not None and not is_active
        reactivated = bool(is_active) and was_active is not None and not was_active
        if old_role == _SUPERADMIN and deactivated:
            self.deactivated.add(name)
        elif old_role == new_role == _SUPERADMIN and reactivated:
            self.reactivated.add(name)
        if self.password is not None and old[self.password] != new[self.password]:
            self.passwords.add(name)

    def report(self, result: _Builder) -> None:
        demoted = [(name, f"{name} ({old} -> {new})") for name, old, new in self.demoted.items]
        for tally, named, line, more in (
            (self.removed, None, "SuperAdmin removed: {}", "SuperAdmins removed"),
            (self.added, None, "SuperAdmin added: {}", "SuperAdmins added"),
            (self.demoted, demoted, "SuperAdmin demoted: {}", "SuperAdmins demoted"),
            (self.deactivated, None, "SuperAdmin deactivated: {}", "SuperAdmins deactivated"),
            (self.reactivated, None, "SuperAdmin reactivated: {}", "SuperAdmins reactivated"),
            (self.promoted, None, "User promoted to SuperAdmin: {}", "users promoted"),
        ):
            for name, text in named or [(name, name) for name in tally.items]:
                result.issue(SUPERADMINS_CHANGED, line.format(text))
                result.superadmin(name)
            for text in _overflow(tally, more):
                result.issue(SUPERADMINS_CHANGED, text)

        result.changes += [
            f"Role changed: {name} ({old} -> {new})" for name, old, new in self.role_changed.items
        ]
        result.changes += _overflow(self.role_changed, "roles changed")

        count = self.passwords.count
        if count and count >= setting("BULK_PASSWORD_CHANGE_THRESHOLD"):
            hashes = _plural(count, "password hash", "password hashes")
            names = _named(self.passwords.items, count)
            result.issue(PASSWORDS_CHANGED, f"{hashes} changed: {names}")
        else:
            result.changes += [f"Password changed: {name}" for name in self.passwords.items]
            result.changes += _overflow(self.passwords, "passwords changed")


class _LicenseWatch:
    """Licenses revoked or suspended: a few is administration, many at once is an attack."""

    def __init__(self, spec: ModelSpec, limit: int):
        index = {name: i for i, name in enumerate(spec.columns)}
        self.status = index.get("status")
        self.key = index.get("key")
        self.withdrawn = _Tally(limit)  # of (key, new status)

    def observe(self, row_diff: RowDiff) -> None:
        if row_diff.kind != MODIFIED or self.status is None:
            return
        old_status = row_diff.baseline[self.status]
        new_status = row_diff.current[self.status]
        if new_status in _WITHDRAWN_LICENSE and new_status != old_status:
            key = row_diff.current[self.key] if self.key is not None else row_diff.pk
            self.withdrawn.add((str(key), new_status))

    def report(self, result: _Builder) -> None:
        count = self.withdrawn.count
        if count and count >= setting("BULK_LICENSE_STATUS_THRESHOLD"):
            licenses = _plural(count, "license", "licenses")
            keys = _named([key for key, _ in self.withdrawn.items], count)
            result.issue(LICENSES_REVOKED, f"{licenses} revoked or suspended: {keys}")
            return
        for key, status in self.withdrawn.items:
            verb = "revoked" if status == License.Status.REVOKED else "suspended"
            result.changes.append(f"License {verb}: {key}")
        result.changes += _overflow(self.withdrawn, "licenses revoked or suspended")


def _watch_for(spec: ModelSpec, limit: int):
    if spec.label == model_label(get_user_model()):
        return _UserWatch(spec, limit)
    if spec.label == model_label(License):
        return _LicenseWatch(spec, limit)
    return None


# --- the comparison -------------------------------------------------------------------


class _Builder:
    def __init__(self):
        self.issues: list[str] = []
        self.changes: list[str] = []
        self.findings: set[str] = set()
        self.superadmins: list[str] = []
        self.details: dict[str, ModelDifference] = {}
        self.affected_pks: dict[str, list] = {}

    def issue(self, finding: str, text: str) -> None:
        self.findings.add(finding)
        self.issues.append(text)

    def superadmin(self, name: str) -> None:
        if name not in self.superadmins:
            self.superadmins.append(name)


def _compare_counts(baseline: dict, current: dict, result: _Builder) -> None:
    for key, noun, finding in (
        ("TotalUsers", "User", USERS_DECREASED),
        ("TotalLicenses", "License", LICENSES_DECREASED),
    ):
        old, new = baseline.get(key), current.get(key)
        if old is None or new is None or old == new:
            continue
        if new < old:
            result.issue(finding, f"{noun} count decreased: {old} -> {new}")
        else:
            result.changes.append(f"{noun} count increased: {old} -> {new}")


def _migrations(state: dict) -> dict | None:
    return (state.get("SystemMetrics") or {}).get("Migrations")


def _compare_schema(baseline: dict, current: dict, result: _Builder) -> None:
    old, new = _migrations(baseline), _migrations(current)
    if old is None or new is None:
        return  # a state from before migrations were recorded: nothing to compare with
    per_app = []
    for app in sorted(set(old) | set(new)):
        old_names, new_names = old.get(app, []), new.get(app, [])
        extra = [f"+{name}" for name in new_names if name not in old_names]
        missing = [f"-{name}" for name in old_names if name not in new_names]
        if extra or missing:
            per_app.append(f"{app}: {', '.join(extra + missing)}")
    if per_app:
        result.issue(SCHEMA_DIFFERS, f"Captured schema differs: {'; '.join(per_app)}")


def _spec_difference(old: ModelSpec, new: ModelSpec) -> str:
    extra = [f"+{c}" for c in new.columns if c not in old.columns]
    missing = [f"-{c}" for c in old.columns if c not in new.columns]
    return ", ".join(extra + missing) or "same columns in another order"


def _compare_section(old: Section, new: Section, result: _Builder, limit: int) -> None:
    if old.spec != new.spec:
        _drain(old.rows)
        _drain(new.rows)
        plural = _model_nouns(old.spec.label)[1]
        result.changes.append(
            f"Record-level comparison of {plural} skipped: captured columns differ "
            f"({_spec_difference(old.spec, new.spec)})"
        )
        return
    model_diff = _ModelDiff(old.spec, limit)
    watch = _watch_for(old.spec, limit)
    for row_diff in diff_rows(old.rows, new.rows):
        model_diff.add(row_diff)
        if watch is not None:
            watch.observe(row_diff)
    result.details[old.spec.label] = model_diff.difference()
    result.affected_pks[old.spec.label] = model_diff.pks()
    result.changes += model_diff.change_lines()
    if watch is not None:
        watch.report(result)


def compare(
    *, baseline: Snapshot, current: Snapshot, baseline_backup_id: str | None
) -> ComparisonResult:
    """Compare `current` against `baseline`, streaming both once.

    Raises ArchiveCorrupt (from either side's reader) when a snapshot cannot be read: the
    caller decides whether that is an unreadable baseline or its own failure.
    """
    limit = setting("DETAIL_LIMIT")
    result = _Builder()
    _compare_counts(baseline.state, current.state, result)
    _compare_schema(baseline.state, current.state, result)
    try:
        for old_section, new_section in paired_sections(baseline.sections, current.sections):
            _compare_section(old_section, new_section, result, limit)
    except SchemaMismatch as exc:
        result.issue(SCHEMA_DIFFERS, f"Record-level comparison stopped: {exc}")
    return ComparisonResult(
        has_safe_backup=True,
        safe_backup_id=baseline_backup_id,
        message=MESSAGE_ISSUES if result.issues else MESSAGE_CLEAN,
        issues=result.issues,
        changes=result.changes,
        details=result.details,
        findings=result.findings,
        superadmins=result.superadmins,
        affected_pks=result.affected_pks,
        baseline_name=baseline.name,
        current_name=current.name,
    )
