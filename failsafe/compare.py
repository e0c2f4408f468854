"""Compare a snapshot with the last safe one: what changed, and which changes are alarming.

Both snapshots are streamed through the merge-join of diff.py, so memory stays flat however
big the tables are: we keep counters, and name at most DETAIL_LIMIT records per list. The one
other thing kept is bounded too: the names of records relations point at that were removed,
added or renamed (NAMES_KEPT per model), so a license can say its owner was "alice" after
alice was deleted.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from accounts.models import Role
from licensing.models import License

from .capture import captured_models
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
    natural_key_field,
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
    """One column of a modified record; a secret column says only that it changed.

    A relation (a foreign key, a many-to-many field) is named by its field ("owner", not
    "owner_id") and its values are the natural keys of the records it points at (a list of
    them for a many-to-many field; None when it points at nothing).
    """

    name: str
    old: object = None  # JSON-safe
    new: object = None
    secret: bool = False
    relation: bool = False
    # The change is only the consequence of the records it pointed at being removed.
    follows_deletion: bool = False


@dataclass(frozen=True)
class ModifiedRecord:
    record: str  # its natural key
    fields: list[FieldChange]

    @property
    def follows_deletions_only(self) -> bool:
        """Nothing changed but relations to records removed in the same comparison."""
        return bool(self.fields) and all(change.follows_deletion for change in self.fields)


@dataclass
class Consequence:
    """The records of one model that changed only because the records a relation of theirs
    pointed at were removed: one line ("12 licenses lost their owner when their users were
    deleted") where the detail would have a line per record."""

    field: str  # the relation's name
    target: str  # the model label of the removed records
    count: int
    records: list[str]  # natural keys, DETAIL_LIMIT at most
    summary: str


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
    consequences: list[Consequence] = field(default_factory=list)

    @property
    def listed_modified(self) -> list[ModifiedRecord]:
        """The modified records a person reads one by one: those no consequence summarises."""
        return [record for record in self.modified.records if not record.follows_deletions_only]


@dataclass(frozen=True)
class ChangedRecord:
    """One record the comparison names as added, removed or modified."""

    label: str
    pk: object
    name: str  # its natural key
    kind: str  # ADDED, REMOVED or MODIFIED
    follows_deletions_only: bool = False  # see ModifiedRecord


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

    def changed_records(self) -> list[ChangedRecord]:
        """The records the details name, each with its primary key.

        `affected_pks` lists a model's pks in the order its details name the records (added,
        then removed, then modified), both taken from the same tallies; a stored comparison
        keeps both lists, so this holds for it too.
        """
        records = []
        for label, pks in self.affected_pks.items():
            difference = self.details.get(label)
            named = []
            if difference is not None:
                named += [(ADDED, name, False) for name in difference.added.records]
                named += [(REMOVED, name, False) for name in difference.removed.records]
                named += [
                    (MODIFIED, record.record, record.follows_deletions_only)
                    for record in difference.modified.records
                ]
            if len(named) != len(pks):
                # Not the shape this module builds: name the records by their pks only.
                named = [(MODIFIED, f"#{pk}", False) for pk in pks]
            records += [
                ChangedRecord(label, pk, name, kind, follows)
                for pk, (kind, name, follows) in zip(pks, named, strict=True)
            ]
        return records

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


# --- naming the records a relation points at -------------------------------------------

# How many removed, added and renamed records of one model are remembered by name while the
# snapshots stream: a relation's target removed since the baseline is named by the baseline
# only. Past this many, such a target is shown by its pk, and a change that followed its
# removal is shown as a change of its own rather than summarised.
NAMES_KEPT = 100_000
# Relation targets named from the live database, this many per query.
LOOKUP_BATCH = 500
_BASELINE, _CURRENT = "baseline", "current"


def _pk_key(value) -> str:
    # One spelling of a pk from either side: an archive and the live database may differ.
    return str(value)


@dataclass(frozen=True)
class _Relation:
    column: str  # in the spec: "owner_id", or a many-to-many field's name
    index: int
    name: str  # "owner"
    verbose: str
    target: str  # the label of the model it points at
    many: bool


def _relations(spec: ModelSpec) -> list[_Relation]:
    try:
        meta = apps.get_model(spec.label)._meta
    except (LookupError, ValueError):
        return []
    columns = {name: i for i, name in enumerate(spec.columns)}
    relations = []
    for model_field, column, many in [
        *((f, f.attname, False) for f in meta.concrete_fields),
        *((f, f.name, True) for f in meta.many_to_many),
    ]:
        if model_field.is_relation and model_field.related_model and column in columns:
            relations.append(
                _Relation(
                    column=column,
                    index=columns[column],
                    name=model_field.name,
                    verbose=str(model_field.verbose_name),
                    target=model_label(model_field.related_model),
                    many=many,
                )
            )
    return relations


def _relation_targets() -> set[str]:
    """The labels of the models a captured model's relations point at."""
    try:
        models = captured_models()
    except (LookupError, ValueError):
        return set()
    return {
        model_label(f.related_model)
        for model in models
        for f in [*model._meta.concrete_fields, *model._meta.many_to_many]
        if f.is_relation and f.related_model
    }


class _KnownNames:
    """One model's records whose names the live database may not give as the snapshots do:
    those removed (named as the baseline had them), added, and renamed."""

    def __init__(self):
        self.names: dict[str, dict[str, str]] = {_BASELINE: {}, _CURRENT: {}}
        self.removed: set[str] = set()
        self.kept = 0

    def keep(self, row_diff: RowDiff, name_of: Callable[[list], str]) -> None:
        if self.kept >= NAMES_KEPT:
            return
        pk = _pk_key(row_diff.pk)
        if row_diff.kind == REMOVED:
            self.removed.add(pk)
            self.names[_BASELINE][pk] = name_of(row_diff.baseline)
        elif row_diff.kind == ADDED:
            self.names[_CURRENT][pk] = name_of(row_diff.current)
        else:
            old, new = name_of(row_diff.baseline), name_of(row_diff.current)
            if old == new:
                return
            self.names[_BASELINE][pk], self.names[_CURRENT][pk] = old, new
        self.kept += 1


class _Directory:
    """Names the records relations point at: as the snapshots knew them where the live
    database may not (removed, added, renamed records), else as the live database does,
    else by pk ("#42")."""

    def __init__(self, targets: set[str]):
        self.known = {label: _KnownNames() for label in targets}

    def was_removed(self, label: str, pk) -> bool:
        known = self.known.get(label)
        return known is not None and _pk_key(pk) in known.removed

    def names(self, label: str, side: str, pks: set[str]) -> dict[str, str]:
        known = self.known.get(label)
        kept = known.names[side] if known is not None else {}
        found = {pk: kept[pk] for pk in pks if pk in kept}
        found.update(_live_names(label, sorted(pks - set(found))))
        return found


def _live_names(label: str, pks: list[str]) -> dict[str, str]:
    if not pks:
        return {}
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        return {}
    key_field = natural_key_field(model) or "pk"
    names = {}
    for start in range(0, len(pks), LOOKUP_BATCH):
        batch = pks[start : start + LOOKUP_BATCH]
        try:
            rows = list(model._default_manager.filter(pk__in=batch).values_list("pk", key_field))
        except (TypeError, ValueError, ValidationError):
            continue  # pks this model cannot hold: they stay named by pk
        for pk, name in rows:
            # As record_namer names a record: by its natural key, by its pk where it has none.
            names[_pk_key(pk)] = str(name) if name not in (None, "") else _pk_key(pk)
    return names


def _consequence_line(label: str, relation: _Relation, count: int) -> str:
    singular, plural = _model_nouns(label)
    target_singular, target_plural = _model_nouns(relation.target)
    records = _plural(count, singular, plural)
    if relation.many:
        return f"{records} lost {relation.verbose} when those {target_plural} were deleted"
    if count == 1:
        return f"{records} lost its {relation.verbose} when its {target_singular} was deleted"
    return f"{records} lost their {relation.verbose} when their {target_plural} were deleted"


# --- one model's record-level difference ----------------------------------------------


class _ModelDiff:
    def __init__(self, spec: ModelSpec, limit: int, directory: _Directory):
        self.spec = spec
        self.limit = limit
        self.index = {name: i for i, name in enumerate(spec.columns)}
        self.key = record_namer(spec)
        self.directory = directory
        self.relations = {relation.column: relation for relation in _relations(spec)}
        self.known = directory.known.get(spec.label)  # when relations point at this model
        self.added = _Tally(limit)  # of (pk, key)
        self.removed = _Tally(limit)  # of (pk, key)
        # Of (pk, (key, [(column, old, new)], columns that followed a deletion)): the field
        # detail is built at the end, when the records relations point at can be named.
        self.modified = _Tally(limit)
        self.consequences: dict[str, _Tally] = {}  # relation column -> record keys

    def add(self, row_diff: RowDiff) -> None:
        if self.known is not None:
            self.known.keep(row_diff, self.key)
        if row_diff.kind == ADDED:
            self.added.add((row_diff.pk, self.key(row_diff.current)))
        elif row_diff.kind == REMOVED:
            self.removed.add((row_diff.pk, self.key(row_diff.baseline)))
        elif row_diff.kind == MODIFIED:
            followed = self._followed_deletions(row_diff)
            for column in followed:
                self.consequences.setdefault(column, _Tally(self.limit)).add(
                    self.key(row_diff.current)
                )
            # Only keep the field detail of records we are going to show.
            pending = self._pending(row_diff, followed) if self.modified.has_room else None
            self.modified.add((row_diff.pk, pending))

    def _followed_deletions(self, row_diff: RowDiff) -> list[str]:
        """The relation columns whose change is only that what they pointed at was removed
        (the database cleared them). A model's relations to itself are left out: its own
        removals are not all known while its rows stream."""
        followed = []
        for relation in self.relations.values():
            if relation.target == self.spec.label:
                continue
            old, new = row_diff.baseline[relation.index], row_diff.current[relation.index]
            if old == new:
                continue
            if relation.many:
                old_pks, new_pks = set(old or ()), set(new or ())
                lost = old_pks - new_pks
                if (
                    lost
                    and new_pks <= old_pks
                    and all(self.directory.was_removed(relation.target, pk) for pk in lost)
                ):
                    followed.append(relation.column)
            elif new is None and self.directory.was_removed(relation.target, old):
                followed.append(relation.column)
        return followed

    def _pending(self, row_diff: RowDiff, followed: list[str]) -> tuple:
        changes = [
            (name, row_diff.baseline[self.index[name]], row_diff.current[self.index[name]])
            for name in row_diff.changed_columns(self.spec)
        ]
        return self.key(row_diff.current), changes, followed

    def _relation_names(self) -> dict[tuple[str, str], dict[str, str]]:
        """For the records to show: the names of what their changed relations point at, per
        (target label, side)."""
        wanted: dict[tuple[str, str], set[str]] = {}
        for _, (_, changes, _) in self.modified.items:
            for column, old, new in changes:
                relation = self.relations.get(column)
                if relation is None or is_secret_column(column):
                    continue
                for side, value in ((_BASELINE, old), (_CURRENT, new)):
                    pks = value if relation.many else [value]
                    wanted.setdefault((relation.target, side), set()).update(
                        _pk_key(pk) for pk in pks or () if pk is not None
                    )
        return {
            (target, side): self.directory.names(target, side, pks)
            for (target, side), pks in wanted.items()
        }

    def _modified_records(self) -> list[ModifiedRecord]:
        names = self._relation_names()

        def named(relation: _Relation, side: str, value):
            known = names.get((relation.target, side), {})

            def one(pk) -> str:
                return known.get(_pk_key(pk), f"#{pk}")

            if relation.many:
                return sorted(one(pk) for pk in value or ())
            return None if value is None else one(value)

        records = []
        for _, (key, changes, followed) in self.modified.items:
            fields = []
            for column, old, new in changes:
                relation = self.relations.get(column)
                if is_secret_column(column):
                    fields.append(FieldChange(column, secret=True))
                elif relation is not None:
                    fields.append(
                        FieldChange(
                            relation.name,
                            named(relation, _BASELINE, old),
                            named(relation, _CURRENT, new),
                            relation=True,
                            follows_deletion=column in followed,
                        )
                    )
                else:
                    fields.append(FieldChange(column, json_safe(old), json_safe(new)))
            records.append(ModifiedRecord(key, fields))
        return records

    def pks(self) -> list:
        return [pk for tally in (self.added, self.removed, self.modified) for pk, _ in tally.items]

    def _consequences(self) -> list[tuple[_Relation, _Tally]]:
        return [
            (relation, self.consequences[column])
            for column, relation in self.relations.items()
            if column in self.consequences
        ]

    def difference(self) -> ModelDifference:
        def listed(tally: _Tally) -> RecordList:
            return RecordList(tally.count, [named for _, named in tally.items])

        return ModelDifference(
            label=self.spec.label,
            added=listed(self.added),
            removed=listed(self.removed),
            modified=RecordList(self.modified.count, self._modified_records()),
            truncated=self.added.truncated or self.removed.truncated or self.modified.truncated,
            consequences=[
                Consequence(
                    field=relation.name,
                    target=relation.target,
                    count=tally.count,
                    records=list(tally.items),
                    summary=_consequence_line(self.spec.label, relation, tally.count),
                )
                for relation, tally in self._consequences()
            ],
        )

    def change_lines(self) -> list[str]:
        singular, plural = _model_nouns(self.spec.label)
        lines = [
            f"{_plural(tally.count, singular, plural)} {verb}"
            for tally, verb in (
                (self.added, "added"),
                (self.removed, "removed"),
                (self.modified, "modified"),
            )
            if tally.count
        ]
        # One line for what followed a removal, however many records it touched.
        lines += [
            _consequence_line(self.spec.label, relation, tally.count)
            for relation, tally in self._consequences()
        ]
        return lines


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


def _compare_section(
    old: Section, new: Section, result: _Builder, limit: int, directory: _Directory
) -> None:
    if old.spec != new.spec:
        _drain(old.rows)
        _drain(new.rows)
        plural = _model_nouns(old.spec.label)[1]
        result.changes.append(
            f"Record-level comparison of {plural} skipped: captured columns differ "
            f"({_spec_difference(old.spec, new.spec)})"
        )
        return
    model_diff = _ModelDiff(old.spec, limit, directory)
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
    directory = _Directory(_relation_targets())
    _compare_counts(baseline.state, current.state, result)
    _compare_schema(baseline.state, current.state, result)
    try:
        for old_section, new_section in paired_sections(baseline.sections, current.sections):
            _compare_section(old_section, new_section, result, limit, directory)
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
