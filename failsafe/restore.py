"""Make the live captured models equal to a snapshot, all or nothing.

Each archived section is merge-joined (diff.py) against the live rows of its model, and the
differences become writes: rows only in the backup are inserted with their old primary keys,
rows only in the database are deleted, rows that differ are updated column by column and
many-to-many pair by pair. Memory stays flat: writes go out in batches, and the live side is
read in primary-key pages rather than through one open cursor, because SQLite gives no
guarantee about a cursor over a table the same connection is writing to.

Why the paging is safe: the merge-join holds one live row in hand, and a difference is only
yielded for primary keys at or below it (or once the live side is exhausted). So every
write concerns a key the live reader has already passed, and the next page, which starts
after the last key read, cannot see our own writes.
"""

from __future__ import annotations

import contextlib
import datetime
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.core.management.color import no_style
from django.db import IntegrityError, connection, models, transaction
from django.db.models.deletion import Collector, ProtectedError, RestrictedError
from knox.models import AuthToken

from . import capture, progress
from .conf import setting
from .diff import ADDED, MODIFIED, REMOVED, RowDiff, diff_rows, paired_sections
from .exceptions import (
    CascadeRefused,
    InvalidSelection,
    RestoreConflict,
    RestoreVerificationFailed,
    SchemaMismatch,
)
from .restore_sql import SqlTable
from .snapshot import (
    ModelSpec,
    Section,
    iso,
    model_label,
    natural_key_field,
    record_namer,
)

# Inserts, updates and deletes buffered per model before they are written.
WRITE_BATCH = 1000
# Records a cascade hit names as examples.
CASCADE_EXAMPLES = 3

SectionsFactory = Callable[[], contextlib.AbstractContextManager[Iterable[Section]]]
# Called with the admin log entries a cascade is about to delete, before it deletes them.
EvidenceKeeper = Callable[[list[LogEntry]], None]


# --- results -------------------------------------------------------------------------


@dataclass
class ModelPlan:
    label: str
    insert: int = 0
    update: int = 0
    delete: int = 0
    # Natural keys (username, license key, group name, else the pk), DETAIL_LIMIT at most.
    sample_insert: list[str] = field(default_factory=list)
    sample_update: list[str] = field(default_factory=list)
    sample_delete: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return self.insert + self.update + self.delete


@dataclass
class CascadeHit:
    """Rows outside the captured models that deleting live-only rows would delete too."""

    model: str
    count: int
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        meta = apps.get_model(self.model)._meta
        noun = meta.verbose_name if self.count == 1 else meta.verbose_name_plural
        return f"{self.count} {meta.app_label} {noun} ({self.model})"


# The columns of an account whose change ends its sessions and revokes its API tokens.
CONTAINMENT_COLUMNS = ("password", "role", "is_active", "is_staff", "is_superuser", "groups")
RESTORED, DELETED = "restored", "deleted"


@dataclass
class AccountChange:
    """An account the restore changes in a way that must end its sessions and tokens."""

    pk: object
    username: str
    # RESTORED (the account comes back), DELETED, or the CONTAINMENT_COLUMNS changed.
    changes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.username} ({', '.join(self.changes)})"


@dataclass
class RecordPlan:
    """One selected record: what a selective restore does to it, and which columns change."""

    label: str
    record: str  # its natural key
    pk: object
    action: str  # "insert", "update", "delete", or "unchanged"
    columns: list[str] = field(default_factory=list)
    # Selected by actor and time: whose log entries selected it, and how many.
    selected_by: str = ""
    entries: int = 0
    # Restored to a moment (--at): where its state comes from, said in the plan.
    source: str = ""

    def describe(self) -> str:
        text = f"{self.action} {self.label} {self.record}"
        text = f"{text} ({', '.join(self.columns)})" if self.columns else text
        if self.source:
            text += f" [{self.source}]"
        if self.selected_by:
            plural = "entry" if self.entries == 1 else "entries"
            text += f" [{self.entries} log {plural} by {self.selected_by}]"
        return text


@dataclass
class RestorePlan:
    models: list[ModelPlan] = field(default_factory=list)
    cascades: list[CascadeHit] = field(default_factory=list)
    # Set by apply_restore only: the sessions it ended and the API tokens it revoked.
    sessions_flushed: int = 0
    tokens_revoked: int = 0
    # The accounts whose password, role, active flag or groups the restore changes, and
    # (set by the service) what it changes of the acting SuperAdmin's own account. A full
    # restore lists DETAIL_LIMIT of them (and the acting SuperAdmin's) and counts the rest:
    # into an emptied database it changes every account.
    accounts: list[AccountChange] = field(default_factory=list)
    accounts_unlisted: int = 0
    own_account: list[str] = field(default_factory=list)
    # The primary keys of every such account, listed or not, when a password reset is to
    # reach them (a full restore keeps them only then).
    account_pks: list | array = field(default_factory=list)
    # Whether those accounts were told to change their password (apply only).
    password_reset: bool = False
    # A selective restore: each selected record, and the conflicts it met.
    selective: bool = False
    records: list[RecordPlan] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def is_noop(self) -> bool:
        return not any(plan.changes for plan in self.models) and not self.cascades


# --- schema --------------------------------------------------------------------------


def check_schema(
    *,
    archived_migrations: dict[str, list[str]],
    sections_specs: list[ModelSpec] | None = None,
) -> None:
    """Raises SchemaMismatch unless the backup was captured under today's schema."""
    current = capture.captured_migrations()
    problems = []
    for app in sorted(set(archived_migrations) | set(current)):
        archived = list(archived_migrations.get(app, []))
        applied = current.get(app, [])
        if set(archived) != set(applied):
            problems.append(_migration_difference(app, archived, applied))
    if problems:
        raise SchemaMismatch(
            "Backup schema is incompatible with the current migrations: " + "; ".join(problems)
        )
    if sections_specs is None:
        return
    captured = [model_label(model) for model in capture.captured_models()]
    archived_labels = [spec.label for spec in sections_specs]
    if archived_labels != captured:
        problems.append(
            f"backup holds {', '.join(archived_labels) or 'nothing'} where the database "
            f"captures {', '.join(captured)}"
        )
    problems += filter(None, (_spec_problem(spec) for spec in sections_specs))
    if problems:
        raise SchemaMismatch(
            "Backup columns do not match the current models: " + "; ".join(problems)
        )


def _span(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} to {names[-1]}"


def _migration_difference(app: str, archived: list[str], applied: list[str]) -> str:
    backup_only = [name for name in archived if name not in applied]
    database_only = [name for name in applied if name not in archived]
    if not archived:
        return f"{app}: backup has no migrations, database has {_span(applied)}"
    if not applied:
        return f"{app}: database has no migrations, backup has {_span(archived)}"
    if not backup_only:
        return f"{app}: backup has {_span(archived)} only, database also has " + ", ".join(
            database_only
        )
    if not database_only:
        return f"{app}: database has {_span(applied)} only, backup also has " + ", ".join(
            backup_only
        )
    return (
        f"{app}: backup also has {', '.join(backup_only)}, "
        f"database also has {', '.join(database_only)}"
    )


def _spec_problem(spec: ModelSpec) -> str | None:
    try:
        model = apps.get_model(spec.label)
    except (LookupError, ValueError):
        return f"{spec.label}: no such model in the database"
    live = capture.spec_for(model)
    if spec == live:
        return None
    missing = [name for name in live.columns if name not in spec.columns]
    extra = [name for name in spec.columns if name not in live.columns]
    parts = []
    if missing:
        parts.append(f"backup lacks {', '.join(missing)}")
    if extra:
        parts.append(f"backup also has {', '.join(extra)}")
    if not parts:
        parts.append("columns are in another order")
    return f"{spec.label}: " + ", ".join(parts)


def _require_matching_spec(spec: ModelSpec) -> type[models.Model]:
    problem = _spec_problem(spec)
    if problem:
        raise SchemaMismatch(f"Backup columns do not match the current models: {problem}")
    return apps.get_model(spec.label)


# --- reading the live side -----------------------------------------------------------


@dataclass(frozen=True)
class _ManyToMany:
    through: type[models.Model]
    source: str  # attname of the through row's key to the captured model
    target: str  # attname of its key to the related model


def _many_to_many(model: type[models.Model], spec: ModelSpec) -> list[_ManyToMany]:
    links = []
    for name in spec.m2m:
        m2m_field = model._meta.get_field(name)
        through = m2m_field.remote_field.through
        links.append(
            _ManyToMany(
                through=through,
                source=through._meta.get_field(m2m_field.m2m_field_name()).attname,
                target=through._meta.get_field(m2m_field.m2m_reverse_field_name()).attname,
            )
        )
    return links


def _live_pages(model: type[models.Model], spec: ModelSpec) -> Iterator[list]:
    """The rows capture.live_rows yields, read one primary-key page at a time.

    Each page, with its many-to-many pairs, is fully fetched before its first row is
    handed out, so no cursor stays open while the caller writes.
    """
    page_size = setting("FETCH_SIZE")
    pk = spec.fields[0]
    links = _many_to_many(model, spec)
    after = None
    while True:
        query = model._default_manager.order_by(pk)
        if after is not None:
            query = query.filter(**{f"{pk}__gt": after})
        blocks = capture.row_blocks(query[:page_size], spec.fields, stream=False)
        page = [row for block in blocks for row in block]
        if not page:
            return
        first, last = page[0][0], page[-1][0]
        yield from _with_many_to_many(page, links, {"__gte": first, "__lte": last})
        if len(page) < page_size:
            # A short page is the end; asking again could see rows we inserted meanwhile.
            return
        after = last


def _in_scope() -> set[type[models.Model]]:
    """The captured models and the auto-created tables of their many-to-many fields."""
    scope = set()
    for model in capture.captured_models():
        scope.add(model)
        for m2m_field in model._meta.many_to_many:
            if m2m_field.remote_field.through._meta.auto_created:
                scope.add(m2m_field.remote_field.through)
    return scope


# --- the accounts a restore must contain ----------------------------------------------


class _AccountWatch:
    """Notes the accounts whose password hash, role, active flag or groups a restore changes.

    With `listed`, names at most that many (and always the account of `keep`, a pk) and
    counts the rest; with `all_pks` (a password reset will reach them), keeps the primary
    key of every one, 8 bytes each where they are integers. Memory stays flat when a
    restore brings back millions of accounts, but for those keys when they are asked for.
    """

    def __init__(
        self, spec: ModelSpec, *, listed: int | None = None, keep=None, all_pks: bool = True
    ):
        self.name = record_namer(spec)
        self.columns = [
            (name, spec.columns.index(name)) for name in CONTAINMENT_COLUMNS if name in spec.columns
        ]
        self.listed = listed
        self.keep = None if keep is None else str(keep)
        self.found: list[AccountChange] = []
        self.unlisted = 0
        self.all_pks = all_pks
        self.pks: list | array = array("q")

    # diff_rows(archived, live): REMOVED comes back, ADDED goes, MODIFIED is rolled back.
    def observe(self, row_diff: RowDiff) -> None:
        if row_diff.kind == REMOVED:
            self._note(row_diff.pk, row_diff.baseline, [RESTORED])
        elif row_diff.kind == ADDED:
            self._note(row_diff.pk, row_diff.current, [DELETED])
        else:
            changed = [
                name
                for name, index in self.columns
                if row_diff.baseline[index] != row_diff.current[index]
            ]
            if changed:
                self._note(row_diff.pk, row_diff.baseline, changed)

    def _note(self, pk, row: list, changes: list[str]) -> None:
        if self.all_pks:
            try:
                self.pks.append(pk)
            except TypeError:  # not an integer key: a plain list, as big as it needs
                self.pks = [*self.pks, pk]
        if self.listed is None or len(self.found) < self.listed or str(pk) == self.keep:
            self.found.append(AccountChange(pk, self.name(row), changes))
        else:
            self.unlisted += 1

    def add_to(self, plan: RestorePlan) -> None:
        plan.accounts += self.found
        plan.accounts_unlisted += self.unlisted
        plan.account_pks = [*plan.account_pks, *self.pks] if plan.account_pks else self.pks


def contain(
    accounts: list[AccountChange], *, force_password_reset: bool = False
) -> tuple[int, int]:
    """End the sessions and revoke the API tokens of `accounts`; with `force_password_reset`,
    the accounts still there must change their password at their next login. Returns the
    sessions ended and the tokens revoked."""
    if not accounts:
        return 0, 0
    pks = [account.pk for account in accounts]
    wanted = {str(pk) for pk in pks}
    ended = [
        session.pk
        for session in Session.objects.all()
        if str(session.get_decoded().get("_auth_user_id")) in wanted
    ]
    sessions, _per_model = Session.objects.filter(pk__in=ended).delete()
    tokens, _per_model = AuthToken.objects.filter(user_id__in=pks).delete()
    if force_password_reset:
        _require_password_change(pks)
    return sessions, tokens


def _require_password_change(pks: list | array) -> None:
    """The accounts of `pks` still there must change their password at their next login."""
    user_model = get_user_model()
    if not any(f.name == "must_change_password" for f in user_model._meta.concrete_fields):
        return
    # In batches: a full restore may name every account, more than one query may carry.
    for start in range(0, len(pks), LOOKUP_BATCH):
        user_model._base_manager.filter(pk__in=pks[start : start + LOOKUP_BATCH]).update(
            must_change_password=True
        )


# --- one model -----------------------------------------------------------------------


@dataclass
class _Write:
    archived: list
    live: list | None  # None: the row is inserted


class _ModelRestore:
    """Turns one section's row differences into batched writes (or, dry, into counts)."""

    def __init__(
        self,
        model: type[models.Model],
        spec: ModelSpec,
        *,
        write: bool,
        allow_cascade: bool,
        scope: set[type[models.Model]],
        cascades: dict[str, CascadeHit],
        keep_evidence: EvidenceKeeper | None = None,
        own_pk=None,
        force_password_reset: bool = False,
    ):
        self.model = model
        self.keep_evidence = keep_evidence
        self.spec = spec
        self.write = write
        self.allow_cascade = allow_cascade
        self.scope = scope
        self.cascades = cascades
        self.plan = ModelPlan(model_label(model))
        self.width = len(spec.fields)
        self.links = _many_to_many(model, spec)
        self.table = SqlTable(model, spec.fields)
        self.link_tables = [
            SqlTable(link.through, (link.source, link.target)) for link in self.links
        ]
        self.record_name = record_namer(spec)
        self.sample_limit = setting("DETAIL_LIMIT")
        self.deletes: list[list] = []
        self.writes: list[_Write] = []
        # Writes refused by a unique constraint, retried once the rest of the model is done.
        self.deferred: list[_Write] = []
        self.last_conflict: IntegrityError | None = None
        self.accounts = (
            _AccountWatch(
                spec, listed=setting("DETAIL_LIMIT"), keep=own_pk, all_pks=force_password_reset
            )
            if model is get_user_model()
            else None
        )

    # Differences come from diff_rows(archived, live): REMOVED means only in the backup.
    def add(self, row_diff: RowDiff) -> None:
        if self.accounts is not None:
            self.accounts.observe(row_diff)
        if row_diff.kind == REMOVED:
            self._count("insert", row_diff.baseline)
            self.writes.append(_Write(row_diff.baseline, None))
        elif row_diff.kind == ADDED:
            self._count("delete", row_diff.current)
            self.deletes.append(row_diff.current)
        elif row_diff.kind == MODIFIED:
            self._count("update", row_diff.baseline)
            self.writes.append(_Write(row_diff.baseline, row_diff.current))
        if len(self.deletes) + len(self.writes) >= WRITE_BATCH:
            self._flush()

    def finish(self) -> ModelPlan:
        self._flush()
        if self.write:
            self._settle_deferred()
        return self.plan

    def _count(self, kind: str, row: list) -> None:
        setattr(self.plan, kind, getattr(self.plan, kind) + 1)
        samples = getattr(self.plan, f"sample_{kind}")
        if len(samples) < self.sample_limit:
            samples.append(self.record_name(row))

    def _flush(self) -> None:
        deletes, writes = self.deletes, self.writes
        self.deletes, self.writes = [], []
        # Deletes first: they free the usernames and keys the inserts may bring back.
        if deletes:
            self._delete([row[0] for row in deletes])
        if writes and self.write:
            self._write_batch(writes)

    # --- deletes and what they drag along

    def _delete(self, pks: list) -> None:
        collector = Collector(using=connection.alias, origin=self.model)
        collector.collect(self.model._base_manager.filter(pk__in=pks))
        hits = self._outside_scope(collector)
        if hits and self.write and not self.allow_cascade:
            # Before this batch is deleted; apply_restore rolls back what was written.
            raise _CascadeFound(hits)
        for hit in hits:
            known = self.cascades.setdefault(hit.model, CascadeHit(hit.model, 0))
            known.count += hit.count
            room = CASCADE_EXAMPLES - len(known.examples)
            known.examples += hit.examples[: max(room, 0)]
        if self.write:
            if hits and self.keep_evidence is not None:
                # The admin log says who did what: what a cascade deletes of it is evidence.
                entries = _admin_log_entries(collector)
                if entries:
                    self.keep_evidence(entries)
            collector.delete()

    def _outside_scope(self, collector: Collector) -> list[CascadeHit]:
        # SET_NULL updates (collector.field_updates) change rows but delete none: not counted.
        hits = []
        for model, instances in collector.data.items():
            if model._meta.concrete_model not in self.scope and instances:
                first = sorted(instances, key=lambda obj: obj.pk)[:CASCADE_EXAMPLES]
                examples = [_example(obj) for obj in first]
                hits.append(CascadeHit(model_label(model), len(instances), examples))
        for query in collector.fast_deletes:
            model = query.model
            if model._meta.concrete_model in self.scope:
                continue
            count = query.count()
            if count:
                examples = [_example(obj) for obj in query.order_by("pk")[:CASCADE_EXAMPLES]]
                hits.append(CascadeHit(model_label(model), count, examples))
        return hits

    # --- inserts and updates

    def _write_batch(self, writes: list[_Write]) -> None:
        try:
            with transaction.atomic():
                self._apply(writes)
        except IntegrityError:
            # Usually a unique value still held by a live row this section has not reached
            # yet (a deleted user recreated under a new pk): find which rows, retry later.
            for one in writes:
                self._try_one(one)

    def _try_one(self, one: _Write) -> bool:
        try:
            with transaction.atomic():
                self._apply([one])
        except IntegrityError as exc:
            self.deferred.append(one)
            self.last_conflict = exc
            return False
        return True

    def _settle_deferred(self) -> None:
        stepped_aside: set = set()
        while self.deferred:
            pending, self.deferred = self.deferred, []
            settled = [self._try_one(one) for one in pending]
            if any(settled):
                continue
            # Nothing moved: the rows hold each other's values (two usernames swapped).
            fresh = [one for one in self.deferred if one.archived[0] not in stepped_aside]
            if not fresh or not self._step_aside(fresh):
                raise self.last_conflict
            stepped_aside.update(one.archived[0] for one in fresh)

    def _step_aside(self, stuck: list[_Write]) -> bool:
        """Park the unique text values of stuck updates on placeholders, so the cycle opens."""
        moved = False
        for one in stuck:
            if one.live is None:
                continue
            placeholder = f"~failsafe-restore-{one.archived[0]}"
            parked = {}
            for model_field in self.model._meta.concrete_fields:
                if not (
                    model_field.unique
                    and not model_field.primary_key
                    and isinstance(model_field, models.CharField | models.TextField)
                ):
                    continue
                index = self.spec.fields.index(model_field.attname)
                fits = len(placeholder) <= (model_field.max_length or len(placeholder))
                if one.live[index] != one.archived[index] and fits:
                    parked[model_field.attname] = placeholder
            if parked:
                self.model._base_manager.filter(pk=one.archived[0]).update(**parked)
                moved = True
        return moved

    def _apply(self, writes: list[_Write]) -> None:
        # Plain SQL writes the values as given: no save(), no signals, no role-flag sync,
        # no auto_now, and the password hash column goes back untouched.
        updates, changed = [], set()
        for one in writes:
            if one.live is None:
                continue
            columns = [
                position
                for position in range(1, self.width)
                if one.archived[position] != one.live[position]
            ]
            if columns:
                updates.append(one.archived)
                changed.update(columns)
        if updates:
            self.table.update(updates, sorted(changed))
        self.table.insert(one.archived for one in writes if one.live is None)
        for position, link in enumerate(self.links):
            self._apply_pairs(link, self.link_tables[position], writes, self.width + position)

    def _apply_pairs(
        self, link: _ManyToMany, table: SqlTable, writes: list[_Write], index: int
    ) -> None:
        added, removed = [], set()
        for one in writes:
            parent = one.archived[0]
            if one.live is None:
                added += [[parent, target] for target in one.archived[index]]
                continue
            wanted = set(one.archived[index])
            present = set(one.live[index])
            added += [[parent, target] for target in sorted(wanted - present)]
            removed.update((parent, target) for target in present - wanted)
        if removed:
            manager = link.through._base_manager
            parents = sorted({parent for parent, _target in removed})
            stale = [
                through_pk
                for through_pk, parent, target in manager.filter(
                    **{f"{link.source}__in": parents}
                ).values_list("pk", link.source, link.target)
                if (parent, target) in removed
            ]
            manager.filter(pk__in=stale).delete()
        # The pairs are fresh lists of the through table's two columns: no copies needed.
        table.insert(added, owned=True)


# --- the passes ----------------------------------------------------------------------


def _example(obj) -> str:
    """How a record a cascade would delete is named in the plan. An API token is named by its
    user and creation time: its own text is the token's digest."""
    if isinstance(obj, AuthToken):
        return f"API token of {obj.user} created {iso(obj.created, timespec='seconds')}"
    return str(obj)


def _admin_log_entries(collector: Collector) -> list[LogEntry]:
    entries = [entry for entry in collector.data.get(LogEntry, ())]
    for query in collector.fast_deletes:
        if query.model is LogEntry:
            entries += query.select_related("user", "content_type").order_by("pk")
    return sorted(entries, key=lambda entry: entry.pk)


def _run(
    sections: Iterable[Section],
    *,
    write: bool,
    allow_cascade: bool,
    keep_evidence: EvidenceKeeper | None = None,
    digests: RowDigests | None = None,
    own_pk=None,
    force_password_reset: bool = False,
) -> RestorePlan:
    """One pass over `sections`; with `digests`, each section's rows are folded into it as
    they are read, so the verification need not read the backup again. `own_pk`: the
    acting user's account, always listed among the accounts the restore changes."""
    plan = RestorePlan()
    cascades: dict[str, CascadeHit] = {}
    scope = _in_scope()
    # Pairing with the (never read) live sections checks the backup captures the same
    # models in the same order.
    for archived, _live in paired_sections(sections, capture.live_sections()):
        model = _require_matching_spec(archived.spec)
        rows = archived.rows if digests is None else digests.fold(model, archived)
        restore = _ModelRestore(
            model,
            archived.spec,
            write=write,
            allow_cascade=allow_cascade,
            scope=scope,
            cascades=cascades,
            keep_evidence=keep_evidence,
            own_pk=own_pk,
            force_password_reset=force_password_reset,
        )
        # The live rows are read now, after the earlier sections' writes and cascades.
        for row_diff in diff_rows(rows, _live_pages(model, archived.spec)):
            restore.add(row_diff)
        plan.models.append(restore.finish())
        if restore.accounts is not None:
            restore.accounts.add_to(plan)
    plan.cascades = list(cascades.values())
    return plan


def plan_restore(*, sections: Iterable[Section], own_pk=None) -> RestorePlan:
    """What a restore from `sections` would insert, update and delete. Writes nothing.

    Raises SchemaMismatch if the sections do not capture today's models and columns.
    """
    return _run(sections, write=False, allow_cascade=False, own_pk=own_pk)


def _cascade_message(hits: list[CascadeHit]) -> str:
    return (
        "Restore would also delete data outside the backup: "
        + ", ".join(hit.describe() for hit in hits)
        + ". Re-run with --allow-cascade to accept"
    )


def _constraint_failure(exc: IntegrityError) -> RestoreVerificationFailed:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RestoreVerificationFailed(
        f"Restore rolled back: the backup's rows break a database constraint ({first_line})"
    )


class _CascadeFound(Exception):
    """Raised by the write pass, inside its savepoint, at the first cascade it would cause."""

    def __init__(self, hits: list[CascadeHit]):
        super().__init__(_cascade_message(hits))
        self.hits = hits


@transaction.atomic
def apply_restore(
    *,
    sections_factory: SectionsFactory,
    allow_cascade: bool = False,
    total_rows: int | None = None,
    keep_evidence: EvidenceKeeper | None = None,
    force_password_reset: bool = False,
    own_pk=None,
) -> RestorePlan:
    """Make the captured models equal to the backup, in one transaction, or change nothing.

    `sections_factory` opens the backup afresh each time it is called: a context manager
    whose value is the sections stream (e.g. a function wrapping the archive store's
    `open`). The backup is read once, by the restore itself, which folds each model's rows
    into a digest as it reads them; the verification then reads the live rows and compares
    their digests (it reads the backup again only to name the rows that differ). After
    the writes, sequences are reset (before them too), the result is checked against the
    backup, and every session is ended and every API token revoked (the counts are in
    `sessions_flushed` and `tokens_revoked`); the accounts whose password, role, active
    flag or groups changed are listed in `accounts`, and with `force_password_reset` must
    change their password at their next login. `total_rows`, the rows the
    backup holds, only sizes the progress display of each pass.

    Cascades are refused as they are met, before the batch that would cause one is
    deleted; the writes before it are rolled back, and a dry planning pass then names every
    cascade the restore would cause. Reading the backup a third time only when a cascade
    is refused keeps the common case to two passes.

    With `allow_cascade`, `keep_evidence` is handed the admin log entries a cascade deletes,
    just before it deletes them, in the restore's transaction.

    Raises CascadeRefused (nothing changed) when deleting live-only rows would delete rows
    of other models and `allow_cascade` is false; SchemaMismatch when the sections do not
    match today's models; RestoreVerificationFailed (rolled back) when the rows break a
    database constraint or the database does not equal the backup afterwards.
    """
    # Rows the restore inserts without their key (many-to-many pairs) take it from the
    # sequences: one left behind the table's keys would collide with the rows kept.
    reset_sequences()
    digests = RowDigests()
    try:
        with transaction.atomic(), progress.stage("Restore", total_rows):
            with sections_factory() as sections:
                plan = _run(
                    sections,
                    write=True,
                    allow_cascade=allow_cascade,
                    keep_evidence=keep_evidence,
                    digests=digests,
                    own_pk=own_pk,
                    force_password_reset=force_password_reset,
                )
            # Foreign keys are deferred until commit; check now so a bad row rolls back here.
            connection.check_constraints(table_names=_captured_tables())
    except IntegrityError as exc:
        raise _constraint_failure(exc) from exc
    except _CascadeFound as found:
        with progress.stage("Plan restore", total_rows), sections_factory() as sections:
            preview = plan_restore(sections=sections)
        raise CascadeRefused(_cascade_message(preview.cascades or found.hits)) from None
    reset_sequences()
    with progress.stage("Verify restore", total_rows):
        differences = verify_identical(sections=ReadBackup(digests, sections_factory))
    if differences:
        raise RestoreVerificationFailed(
            "Restore rolled back: the database did not match the backup afterwards: "
            + "; ".join(differences[:5])
        )
    plan.sessions_flushed = flush_sessions()
    plan.tokens_revoked = revoke_api_tokens()
    # Every session and token is gone already; what is left is the password reset. (Not
    # contain(): after a restore into an empty database it would look up every account's
    # sessions and tokens, 100 000 keys in one query, to delete nothing.)
    if force_password_reset and plan.account_pks:
        _require_password_change(plan.account_pks)
    plan.password_reset = force_password_reset and bool(plan.accounts)
    return plan


# --- after the writes ----------------------------------------------------------------


def verify_identical(*, sections: Iterable[Section] | ReadBackup) -> list[str]:
    """How the live captured models differ from `sections`; [] when they are identical.

    `sections` may be a backup the caller has already read (ReadBackup): the live rows are
    then folded into digests and compared with the backup's, and the backup is read again,
    row by row, only when they differ, to name the differences.

    Names records and columns, never values: a difference may be a password hash.
    """
    if isinstance(sections, ReadBackup):
        if _live_digests() == sections.digests.by_label:
            return []
        with sections.reopen() as stream:
            return verify_identical(sections=stream)
    limit = setting("DETAIL_LIMIT")
    differences: list[str] = []
    unlisted = 0
    for archived, live in paired_sections(sections, capture.live_sections()):
        problem = _spec_problem(archived.spec)
        if problem:
            differences.append(problem)
            continue
        name_of = record_namer(archived.spec)
        label = archived.spec.label
        for row_diff in diff_rows(archived.rows, live.rows):
            if len(differences) >= limit:
                unlisted += 1
                continue
            if row_diff.kind == REMOVED:
                name = name_of(row_diff.baseline)
                differences.append(f"{label} {name}: in the backup, missing from the database")
            elif row_diff.kind == ADDED:
                name = name_of(row_diff.current)
                differences.append(f"{label} {name}: in the database, not in the backup")
            else:
                name = name_of(row_diff.baseline)
                columns = ", ".join(row_diff.changed_columns(archived.spec))
                differences.append(f"{label} {name}: {columns} differ")
    if unlisted:
        differences.append(f"and {unlisted} more differences")
    return differences


# --- row digests: verifying without reading the backup again ---------------------------


def _frozen(value):
    """`value` made hashable (JSON arrays and objects), equal exactly when `value` is."""
    if isinstance(value, list):
        return (list, tuple(_frozen(item) for item in value))
    if isinstance(value, dict):
        return (dict, frozenset((key, _frozen(item)) for key, item in value.items()))
    return value


class RowDigests:
    """Each model's rows folded, in primary-key order, into one hash.

    Two sections fold to the same digest when their rows are equal (==, as the row by row
    comparison tests them); rows that differ fold to the same one by chance only, one in
    2**64 for a 64-bit build's hash. CPython hashes -1 as -2, so integer columns are folded
    as 2 * value + 1, an odd number, which no other integer of 61 bits or less hashes to;
    the rest (strings, datetimes, UUIDs, ...) hash by their full content. Both sides are
    hashed in one process, with one seed. A mismatch never fails a restore by itself: the
    verification then compares row by row, which names the rows that differ.
    """

    def __init__(self):
        # model label -> (rows, digest)
        self.by_label: dict[str, tuple[int, int]] = {}

    def fold(self, model: type[models.Model], section: Section) -> Iterator[list]:
        """The rows of `section`, unchanged, folded into the digest as they pass."""
        spec = section.spec
        width = len(spec.fields)
        integers = _integer_positions(model, spec)
        digest = count = 0
        for row in section.rows:
            key = row[:width]
            for position in integers:
                value = key[position]
                if value.__class__ is int:
                    key[position] = 2 * value + 1
            try:
                digest = hash((digest, *key, *map(tuple, row[width:])))
            except TypeError:  # a JSON value: a list or a dict
                digest = hash((digest, *map(_frozen, key), *map(_frozen, row[width:])))
            count += 1
            yield row
        self.by_label[spec.label] = (count, digest)


def _integer_positions(model: type[models.Model], spec: ModelSpec) -> list[int]:
    positions = []
    for position, name in enumerate(spec.fields):
        model_field = model._meta.get_field(name)
        if model_field.is_relation:
            model_field = model_field.target_field
        if isinstance(model_field, models.IntegerField | models.AutoField):
            positions.append(position)
    return positions


@dataclass(frozen=True)
class ReadBackup:
    """A backup the restore has read once: its rows' digests, and how to open it again."""

    digests: RowDigests
    reopen: SectionsFactory


def _live_digests() -> dict[str, tuple[int, int]]:
    live = RowDigests()
    report = progress.current()
    for section in capture.live_sections():
        pending = 0
        for _row in live.fold(apps.get_model(section.spec.label), section):
            pending += 1
            if pending == _PROGRESS_EVERY:
                report.advance(pending)
                pending = 0
        report.advance(pending)
    return live.by_label


# How many live rows the verification reads between two progress reports.
_PROGRESS_EVERY = 4096


def flush_sessions() -> int:
    """End every session stored in the database: everyone logs in again. Returns how many."""
    deleted, _per_model = Session.objects.all().delete()
    return deleted


def revoke_api_tokens() -> int:
    """Revoke every API token: one obtained with a password the restore rolled back must not
    keep its access. Returns how many."""
    deleted, _per_model = AuthToken.objects.all().delete()
    return deleted


def _captured_tables() -> list[str]:
    return sorted(model._meta.db_table for model in _in_scope())


def reset_sequences() -> None:
    """Point PostgreSQL's id sequences past the restored primary keys.

    Without it the next user created after restoring high pks would collide. SQLite needs
    nothing: its AUTOINCREMENT counter follows the highest rowid ever inserted.
    """
    if connection.vendor != "postgresql":
        return
    statements = connection.ops.sequence_reset_sql(no_style(), sorted(_in_scope(), key=model_label))
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


# --- selective restore -----------------------------------------------------------------

DAMAGE_KINDS = (REMOVED, MODIFIED, ADDED)
DEFAULT_DAMAGE = (REMOVED, MODIFIED)
# Records looked up in the live database per query.
LOOKUP_BATCH = 500
# Conflicts and dangling references a refusal names, then says how many more.
NAMED_IN_REFUSAL = 5
# How much of a user's own text a refusal repeats.
ECHO_LIMIT = 64

INSERT, UPDATE, DELETE, UNCHANGED = "insert", "update", "delete", "unchanged"


@dataclass(frozen=True)
class Selection:
    """What a selective restore brings back: records named per model label (natural keys,
    or "#pk"), or the damage: every record the comparison of the backup with the live data
    names with one of `damage`'s kinds (diff.REMOVED, MODIFIED, ADDED)."""

    only: dict[str, list[str]] = field(default_factory=dict)
    damage: tuple[str, ...] = ()
    # By actor and time: the records `actor` touched since `since`, in `only`, with how
    # many log entries name each, by (label, key as in `only`).
    actor: str = ""
    since: datetime.datetime | None = None
    evidence: dict[tuple[str, str], int] = field(default_factory=dict)
    # To a moment between two backups (--at, the change journal): `state_at(spec, pks)`
    # gives, by pk text, each record's row at `at` (None: deleted or not yet created) for
    # the records the journal changed between the backup and `at`; the others keep the
    # backup's row.
    at: datetime.datetime | None = None
    state_at: Callable | None = None

    def describe(self) -> dict:
        """For the audit trail: how many keys per model, or the kinds; never the keys."""
        if self.at is not None:
            return {
                "at": iso(self.at),
                "only": {label: len(keys) for label, keys in self.only.items()},
            }
        if self.actor:
            return {
                "undo_actor": self.actor,
                "since": iso(self.since) if self.since else None,
                "only": {label: len(keys) for label, keys in self.only.items()},
            }
        if self.damage:
            return {"damage": list(self.damage)}
        return {"only": {label: len(keys) for label, keys in self.only.items()}}


def _echo(text: str) -> str:
    text = " ".join(str(text).split())
    return repr(text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…")


def parse_only(specs: Iterable[str]) -> dict[str, list[str]]:
    """`["accounts.user:alice,bob", "licensing.license:#42"]` as {label: [keys]}.

    Raises InvalidSelection for a malformed item, a model the backups do not capture, or
    an item (or the whole selection) naming no record.
    """
    labels = [model_label(model) for model in capture.captured_models()]
    selected: dict[str, list[str]] = {}
    for spec in specs or ():
        text = str(spec or "").strip()
        label, colon, keys = text.partition(":")
        label = label.strip().lower()
        if not colon or not label:
            raise InvalidSelection(
                f"Cannot read the selection {_echo(text)}: write MODEL:KEY,KEY "
                "(accounts.user:alice,bob; #42 for a primary key)"
            )
        if label not in labels:
            raise InvalidSelection(
                f"Unknown model {_echo(label)} in the selection: the backups capture "
                + ", ".join(labels)
            )
        names = [key.strip() for key in keys.split(",") if key.strip()]
        if not names:
            raise InvalidSelection(
                f"The selection {_echo(text)} names no record: write {label}:KEY,KEY"
            )
        bucket = selected.setdefault(label, [])
        bucket += [name for name in names if name not in bucket]
    if not selected:
        raise InvalidSelection(
            "Nothing selected: name records (--only MODEL:KEY,KEY) or restore the damage (--damage)"
        )
    return selected


def parse_damage(kinds: Iterable[str] | str | None) -> tuple[str, ...]:
    """ "removed,modified" (or a list of kinds) as a tuple of kinds; nothing: the default,
    removed and modified. Raises InvalidSelection for an unknown kind."""
    if isinstance(kinds, str):
        kinds = [kinds]
    words = [word.strip().lower() for kind in kinds or () for word in str(kind).split(",")]
    words = [word for word in words if word]
    if not words:
        return DEFAULT_DAMAGE
    unknown = [word for word in words if word not in DAMAGE_KINDS]
    if unknown:
        raise InvalidSelection(
            f"Unknown kind of damage {_echo(unknown[0])}: choose among " + ", ".join(DAMAGE_KINDS)
        )
    return tuple(kind for kind in DAMAGE_KINDS if kind in words)


@dataclass
class _Change:
    pk: object
    archived: list | None  # None: not in the backup (the restore deletes it)
    live: list | None  # None: not in the live data (the restore inserts it)
    # With --at: the backup's (else the live) row, which still names a record gone at `at`.
    known: list | None = None

    @property
    def action(self) -> str:
        if self.archived is None:
            return DELETE if self.live is not None else UNCHANGED
        if self.live is None:
            return INSERT
        return UPDATE if list(self.archived) != list(self.live) else UNCHANGED

    def row_diff(self) -> RowDiff | None:
        action = self.action
        if action == INSERT:
            return RowDiff(REMOVED, self.pk, self.archived, None)
        if action == DELETE:
            return RowDiff(ADDED, self.pk, None, self.live)
        if action == UPDATE:
            return RowDiff(MODIFIED, self.pk, self.archived, self.live)
        return None


@dataclass
class _Selected:
    """One model's selected records, by their pk's text."""

    model: type[models.Model]
    spec: ModelSpec
    changes: dict[str, _Change] = field(default_factory=dict)
    # With --at: the rows the journal gave (by pk text) in place of the backup's.
    at_rows: dict[str, list | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.spec.label

    def name(self, change: _Change) -> str:
        row = change.archived or change.live or change.known
        return record_namer(self.spec)(row) if row else f"#{change.pk}"

    def after(self, pk) -> tuple[bool, list | None]:
        """(selected, the row it will have): whether `pk` is selected, and its backup row."""
        change = self.changes.get(_pk_key(pk))
        return (False, None) if change is None else (True, change.archived)


def _pk_key(value) -> str:
    return str(value)


def _drain(rows: Iterable) -> None:
    # An archive yields sections from one stream: a skipped section must still be read.
    for _row in rows:
        pass


def _live_rows_for(model: type[models.Model], spec: ModelSpec, pks: Iterable) -> dict[str, list]:
    """The live rows (with their many-to-many pks, as capture reads them) of `pks`."""
    found: dict[str, list] = {}
    wanted = list(pks)
    links = _many_to_many(model, spec)
    for start in range(0, len(wanted), LOOKUP_BATCH):
        query = model._default_manager.filter(pk__in=wanted[start : start + LOOKUP_BATCH])
        blocks = capture.row_blocks(query.order_by(spec.fields[0]), spec.fields, stream=False)
        page = [row for block in blocks for row in block]
        parents = [row[0] for row in page]
        for row in _with_many_to_many(page, links, {"__in": parents}):
            found[_pk_key(row[0])] = row
    return found


def _with_many_to_many(page: list, links, parent_lookups: dict) -> list:
    """`page`'s rows, each followed by its sorted many-to-many target pks per link, as
    capture writes them; `parent_lookups` ({"__in": pks} or a range) picks the through rows
    of the page's parents."""
    related = []
    for link in links:
        by_parent: dict = {}
        where = {f"{link.source}{lookup}": value for lookup, value in parent_lookups.items()}
        pairs = link.through._default_manager.filter(**where).order_by(link.source, link.target)
        for block in capture.row_blocks(pairs, (link.source, link.target), stream=False):
            for parent, target in block:
                by_parent.setdefault(parent, []).append(target)
        related.append(by_parent)
    return [row + [by_parent.get(row[0], []) for by_parent in related] for row in page]


def _live_matches(model: type[models.Model], keys: list[str]) -> dict[str, list]:
    """Per key ("alice", "#42"), the pks of the live records it names."""
    key_field = natural_key_field(model)
    names = [key for key in keys if not key.startswith("#")]
    pk_texts = [key[1:] for key in keys if key.startswith("#")]
    if key_field is None:  # records without a natural key are named by their pk
        pk_texts += names
    pks = []
    for text in pk_texts:
        try:
            pks.append(model._meta.pk.to_python(text))
        except ValidationError:
            continue  # not a pk this model can hold: that key stays unknown
    query = model._default_manager.filter(pk__in=pks)
    if key_field is not None and names:
        query = query | model._default_manager.filter(**{f"{key_field}__in": names})
    matches: dict[str, list] = {}
    for pk, name in query.values_list("pk", key_field or "pk"):
        for key in (f"#{pk}", str(pk), str(name)):
            if key in keys and (key != str(pk) or key_field is None or key == str(name)):
                matches.setdefault(key, []).append(pk)
    return matches


def _choose_only(
    sections: Iterable[Section], only: dict[str, list[str]], *, strict: bool = True
) -> dict[str, _Selected]:
    """The named records; `strict`: a key naming no record is refused, else passed over
    (an actor's record created and deleted again since the backup)."""
    chosen: dict[str, _Selected] = {}
    for archived, _live in paired_sections(sections, capture.live_sections()):
        keys = only.get(archived.spec.label)
        if keys is None:
            _drain(archived.rows)
            continue
        model = _require_matching_spec(archived.spec)
        selected = _Selected(model, archived.spec)
        name = record_namer(archived.spec)
        wanted, found = set(keys), set()
        for row in archived.rows:
            hits = {key for key in (name(row), f"#{row[0]}") if key in wanted}
            if hits:
                found |= hits
                selected.changes[_pk_key(row[0])] = _Change(row[0], row, None)
        matches = _live_matches(model, keys)
        found |= set(matches)
        unknown = [key for key in keys if key not in found]
        if unknown and strict:
            raise InvalidSelection(
                f"{archived.spec.label}: no record {', '.join(_echo(k) for k in unknown[:5])} "
                "in the backup or in the live data"
            )
        live_pks = [pk for pks in matches.values() for pk in pks]
        for pk in live_pks:
            selected.changes.setdefault(_pk_key(pk), _Change(pk, None, None))
        live_rows = _live_rows_for(model, archived.spec, [c.pk for c in selected.changes.values()])
        for key, change in selected.changes.items():
            change.live = live_rows.get(key)
        if selected.changes or strict:
            chosen[archived.spec.label] = selected
    return chosen


def _choose_damage(sections: Iterable[Section], kinds: tuple[str, ...]) -> dict[str, _Selected]:
    chosen: dict[str, _Selected] = {}
    for archived, _live in paired_sections(sections, capture.live_sections()):
        model = _require_matching_spec(archived.spec)
        selected = _Selected(model, archived.spec)
        for row_diff in diff_rows(archived.rows, _live_pages(model, archived.spec)):
            if row_diff.kind in kinds:
                selected.changes[_pk_key(row_diff.pk)] = _Change(
                    row_diff.pk, row_diff.baseline, row_diff.current
                )
        if selected.changes:
            chosen[archived.spec.label] = selected
    if not chosen:
        raise InvalidSelection(
            "Nothing to restore: the live data has no records "
            + " or ".join(kinds)
            + " compared with the backup"
        )
    return chosen


def _later_rows(sections: Iterable[Section], chosen: dict[str, _Selected]) -> dict[str, dict]:
    """The rows a later backup holds of the selected records, per label and pk text."""
    rows: dict[str, dict] = {}
    for section in sections:
        selected = chosen.get(section.spec.label)
        if selected is None or section.spec != selected.spec:
            _drain(section.rows)
            continue
        held = rows.setdefault(section.spec.label, {})
        for row in section.rows:
            key = _pk_key(row[0])
            if key in selected.changes:
                held[key] = row
    return rows


# --- selective restore: what the selection would break ----------------------------------


def _refusal(lines: list[str]) -> str:
    text = "; ".join(lines[:NAMED_IN_REFUSAL])
    if len(lines) > NAMED_IN_REFUSAL:
        text += f"; and {len(lines) - NAMED_IN_REFUSAL} more"
    return text


def _relation_columns(selected: _Selected) -> list[tuple[str, int, str, type[models.Model]]]:
    """(field name, index in a row, target label, target model) of each relation captured."""
    meta = selected.model._meta
    columns = selected.spec.columns
    relations = []
    for model_field in [*meta.concrete_fields, *meta.many_to_many]:
        column = model_field.attname if not model_field.many_to_many else model_field.name
        if model_field.is_relation and model_field.related_model and column in columns:
            target = model_field.related_model
            relations.append((model_field.name, columns.index(column), model_label(target), target))
    return relations


def _dangling(chosen: dict[str, _Selected]) -> list[str]:
    """The references restored rows would make to records neither live nor selected."""
    needed: dict[str, tuple[type[models.Model], set]] = {}
    uses: list[tuple[str, str, str, object]] = []  # (record, field, target label, pk)
    for selected in chosen.values():
        relations = _relation_columns(selected)
        for change in selected.changes.values():
            if change.archived is None:
                continue
            record = f"{selected.label} {selected.name(change)}"
            for name, index, target_label, target in relations:
                value = change.archived[index]
                for pk in value if isinstance(value, list) else [value]:
                    if pk is None:
                        continue
                    target_selected = chosen.get(target_label)
                    if target_selected is not None:
                        is_selected, row = target_selected.after(pk)
                        if is_selected:
                            if row is None:
                                uses.append((record, name, target_label, pk))
                            continue
                    needed.setdefault(target_label, (target, set()))[1].add(pk)
                    uses.append((record, name, target_label, pk))
    existing: dict[str, set[str]] = {}
    for target_label, (target, pks) in needed.items():
        wanted = sorted(pks, key=str)
        present = existing.setdefault(target_label, set())
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start : start + LOOKUP_BATCH]
            present.update(
                _pk_key(pk)
                for pk in target._base_manager.filter(pk__in=batch).values_list("pk", flat=True)
            )
    problems = []
    for record, name, target_label, pk in uses:
        if _pk_key(pk) in existing.get(target_label, set()):
            continue
        problems.append(
            f"{record}: its {name} points at {target_label} #{pk}, which is not in the live "
            f"data and not selected (select it too: {target_label}:#{pk})"
        )
    return problems


def _unique_conflicts(chosen: dict[str, _Selected]) -> list[str]:
    """Unique values the restored rows would take from live records not selected."""
    problems = []
    for selected in chosen.values():
        meta = selected.model._meta
        for model_field in meta.concrete_fields:
            if not model_field.unique or model_field.primary_key:
                continue
            if model_field.attname not in selected.spec.fields:
                continue
            index = selected.spec.fields.index(model_field.attname)
            by_value = {
                change.archived[index]: change
                for change in selected.changes.values()
                if change.archived is not None and change.archived[index] is not None
            }
            values = list(by_value)
            for start in range(0, len(values), LOOKUP_BATCH):
                batch = values[start : start + LOOKUP_BATCH]
                holders = selected.model._base_manager.filter(
                    **{f"{model_field.attname}__in": batch}
                ).values_list("pk", model_field.attname)
                for holder_pk, value in holders:
                    change = by_value.get(value)
                    if change is None or _pk_key(holder_pk) == _pk_key(change.pk):
                        continue
                    is_selected, row = selected.after(holder_pk)
                    if is_selected and (row is None or row[index] != value):
                        continue  # the restore moves the holder off that value
                    holder = selected.model._base_manager.get(pk=holder_pk)
                    problems.append(
                        f"{selected.label} {selected.name(change)} (#{change.pk}): its "
                        f"{model_field.name} is now held by {selected.label} "
                        f"{_record_text(holder)} (#{holder_pk}), which is not selected"
                    )
    return problems


def _record_text(obj: models.Model) -> str:
    key_field = natural_key_field(type(obj))
    value = getattr(obj, key_field) if key_field else None
    return str(value) if value not in (None, "") else f"#{obj.pk}"


def _deletion_effects(chosen: dict[str, _Selected]) -> tuple[list[str], list[CascadeHit]]:
    """What deleting the selected live-only records does to records not selected: the
    captured ones it would delete or change (refused), and the cascades outside the
    captured models (refused unless allowed, as in a full restore)."""
    captured = {model_label(model): model for model in capture.captured_models()}
    scope = _in_scope()
    problems: list[str] = []
    hits: list[CascadeHit] = []

    def unselected(label: str, pks: Iterable) -> list:
        selected = chosen.get(label)
        return [pk for pk in pks if selected is None or _pk_key(pk) not in selected.changes]

    for selected in reversed(list(chosen.values())):
        pks = [c.pk for c in selected.changes.values() if c.action == DELETE]
        if not pks:
            continue
        collector = Collector(using=connection.alias, origin=selected.model)
        try:
            collector.collect(selected.model._base_manager.filter(pk__in=pks))
        except (ProtectedError, RestrictedError) as exc:
            blockers = sorted({_example(obj) for obj in exc.args[1]})[:CASCADE_EXAMPLES]
            problems.append(
                f"deleting {selected.label} records would break protected references from "
                + ", ".join(blockers)
            )
            continue
        touched: dict[str, list] = {}
        for model, instances in collector.data.items():
            label = model_label(model._meta.concrete_model)
            if label in captured:
                touched.setdefault(label, []).extend(obj.pk for obj in instances)
        for query in collector.fast_deletes:
            label = model_label(query.model._meta.concrete_model)
            if label in captured:
                touched.setdefault(label, []).extend(query.values_list("pk", flat=True))
        for (model_field, _value), batches in collector.field_updates.items():
            label = model_label(model_field.model._meta.concrete_model)
            if label in captured:
                for objs in batches:
                    touched.setdefault(label, []).extend(obj.pk for obj in objs)
        for label, pks_touched in touched.items():
            others = unselected(label, pks_touched)
            if others:
                model = captured[label]
                names = [
                    _record_text(obj)
                    for obj in model._base_manager.filter(pk__in=others[:CASCADE_EXAMPLES])
                ]
                problems.append(
                    f"deleting {selected.label} records would also change {len(set(others))} "
                    f"{label} records not selected ({', '.join(names)}): select them too"
                )
        hits += [hit for hit in _cascade_hits(collector, scope) if hit.model not in captured]
    return problems, hits


def _cascade_hits(collector: Collector, scope: set[type[models.Model]]) -> list[CascadeHit]:
    hits = []
    for model, instances in collector.data.items():
        if model._meta.concrete_model not in scope and instances:
            first = sorted(instances, key=lambda obj: obj.pk)[:CASCADE_EXAMPLES]
            hits.append(
                CascadeHit(model_label(model), len(instances), [_example(o) for o in first])
            )
    for query in collector.fast_deletes:
        if query.model._meta.concrete_model in scope:
            continue
        count = query.count()
        if count:
            examples = [_example(obj) for obj in query.order_by("pk")[:CASCADE_EXAMPLES]]
            hits.append(CascadeHit(model_label(query.model), count, examples))
    return hits


def _plan_selected(
    chosen: dict[str, _Selected], later: dict[str, dict] | None, later_name: str
) -> RestorePlan:
    """The plan of a selective restore; raises InvalidSelection or RestoreConflict for what
    no option can accept (a dangling reference, a unique value taken)."""
    plan = RestorePlan(selective=True)
    limit = setting("DETAIL_LIMIT")
    user_model = get_user_model()
    for selected in chosen.values():
        model_plan = ModelPlan(selected.label)
        watch = _AccountWatch(selected.spec) if selected.model is user_model else None
        for change in selected.changes.values():
            row_diff = change.row_diff()
            name = selected.name(change)
            columns = list(row_diff.changed_columns(selected.spec)) if row_diff else []
            plan.records.append(RecordPlan(selected.label, name, change.pk, change.action, columns))
            if row_diff is None:
                continue
            if watch is not None:
                watch.observe(row_diff)
            kind = change.action
            setattr(model_plan, kind, getattr(model_plan, kind) + 1)
            samples = getattr(model_plan, f"sample_{kind}")
            if len(samples) < limit:
                samples.append(name)
            if later is not None:
                plan.conflicts += _changed_again(selected, change, name, later, later_name)
        plan.models.append(model_plan)
        if watch is not None:
            watch.add_to(plan)
    dangling = _dangling(chosen)
    deletion_problems, plan.cascades = _deletion_effects(chosen)
    dangling += deletion_problems
    if dangling:
        raise InvalidSelection(
            "The selection would leave references dangling: " + _refusal(dangling)
        )
    taken = _unique_conflicts(chosen)
    if taken:
        raise RestoreConflict("A unique value is taken: " + _refusal(taken))
    return plan


def _changed_again(
    selected: _Selected, change: _Change, name: str, later: dict[str, dict], later_name: str
) -> list[str]:
    """A selected record whose damage the later backup saw, changed again since then."""
    later_row = later.get(selected.label, {}).get(_pk_key(change.pk))
    rows = [None if row is None else list(row) for row in (change.archived, later_row, change.live)]
    archived, seen, live = rows
    if seen in (archived, live):
        return []  # the later backup predates the damage, or nothing changed since it
    if seen is None or live is None:
        what = "deleted" if live is None else "created again"
    else:
        columns = [
            column
            for column, old, new in zip(selected.spec.columns, seen, live, strict=True)
            if old != new
        ]
        what = "changed again (" + ", ".join(columns) + ")"
    return [f"{selected.label} {name} was {what} after {later_name}"]


def _write_selected(chosen: dict[str, _Selected], keep_evidence: EvidenceKeeper | None) -> None:
    scope = _in_scope()
    cascades: dict[str, CascadeHit] = {}

    def restorer(selected: _Selected) -> _ModelRestore:
        return _ModelRestore(
            selected.model,
            selected.spec,
            write=True,
            allow_cascade=True,  # refused or accepted in the plan already
            scope=scope,
            cascades=cascades,
            keep_evidence=keep_evidence,
        )

    # Deletes first, dependents before what they depend on; then inserts and updates.
    for selected in reversed(list(chosen.values())):
        restore = restorer(selected)
        for change in selected.changes.values():
            if change.action == DELETE:
                restore.add(change.row_diff())
        restore.finish()
    for selected in chosen.values():
        restore = restorer(selected)
        for change in selected.changes.values():
            if change.action in (INSERT, UPDATE):
                restore.add(change.row_diff())
        restore.finish()


def _verify_selected(sections: Iterable[Section], chosen: dict[str, _Selected]) -> list[str]:
    """How the selected records differ from the backup now; [] when each equals its row
    there (or, absent from it, is absent from the live data too)."""
    differences = []
    for section in sections:
        selected = chosen.get(section.spec.label)
        if selected is None:
            _drain(section.rows)
            continue
        archived = {}
        for row in section.rows:
            key = _pk_key(row[0])
            if key in selected.changes:
                archived[key] = list(row)
        live = _live_rows_for(
            selected.model, selected.spec, [c.pk for c in selected.changes.values()]
        )
        for key, change in selected.changes.items():
            expected = selected.at_rows[key] if key in selected.at_rows else archived.get(key)
            actual = live.get(key)
            expected = None if expected is None else list(expected)
            actual = None if actual is None else list(actual)
            if expected == actual:
                continue
            name = selected.name(change)
            if actual is None:
                differences.append(
                    f"{selected.label} {name}: in the backup, missing from the database"
                )
            elif expected is None:
                differences.append(f"{selected.label} {name}: in the database, not in the backup")
            else:
                columns = RowDiff(MODIFIED, change.pk, expected, actual).changed_columns(
                    selected.spec
                )
                differences.append(f"{selected.label} {name}: {', '.join(columns)} differ")
    return differences


def _choose(sections: Iterable[Section], selection: Selection) -> dict[str, _Selected]:
    if selection.actor:
        chosen = _choose_only(sections, selection.only, strict=False) if selection.only else {}
        if not chosen:
            raise InvalidSelection(_nothing_by(selection))
        return chosen
    if selection.damage:
        return _choose_damage(sections, selection.damage)
    if not selection.only:
        raise InvalidSelection(
            "Nothing selected: name records (--only MODEL:KEY,KEY) or restore the damage (--damage)"
        )
    return _choose_only(sections, selection.only)


def _selective_plan(
    sections_factory: SectionsFactory,
    selection: Selection,
    later_factory: SectionsFactory | None,
    later_name: str,
) -> tuple[dict[str, _Selected], RestorePlan]:
    with sections_factory() as sections:
        chosen = _choose(sections, selection)
    if selection.state_at is not None:
        _to_moment(chosen, selection)
    later = None
    if later_factory is not None:
        with later_factory() as sections:
            later = _later_rows(sections, chosen)
    plan = _plan_selected(chosen, later, later_name)
    if selection.at is not None:
        moment = iso(selection.at)
        for record in plan.records:
            journaled = _pk_key(record.pk) in chosen[record.label].at_rows
            record.source = (
                f"as at {moment}, from the change journal"
                if journaled
                else f"no journal entry between the backup and {moment}: the backup's row"
            )
            if journaled and chosen[record.label].spec.m2m:
                links = ", ".join(chosen[record.label].spec.m2m)
                record.source += f"; {links} from the backup (not journaled)"
    if selection.actor:
        for record in plan.records:
            entries = selection.evidence.get((record.label, f"#{record.pk}"), 0)
            if record.record != f"#{record.pk}":
                entries += selection.evidence.get((record.label, record.record), 0)
            record.selected_by = selection.actor
            record.entries = entries
    return chosen, plan


def _to_moment(chosen: dict[str, _Selected], selection: Selection) -> None:
    """Replace the backup's row of each selected record by its state at `selection.at`,
    where the journal changed it since the backup. Many-to-many links are not journaled:
    they stay the backup's (else the live record's)."""
    for selected in chosen.values():
        states = selection.state_at(selected.spec, [c.pk for c in selected.changes.values()])
        if states is None:
            raise InvalidSelection(
                f"--at: the change journal does not cover {selected.label}; restore it "
                "from a backup without --at"
            )
        links = len(selected.spec.m2m)
        for key, row in states.items():
            change = selected.changes.get(key)
            if change is None:
                continue
            if row is not None:
                source = change.archived or change.live
                related = list(source[-links:]) if source and links else [[]] * links
                row = list(row) + related
            change.known = change.archived or change.live
            change.archived = row
            selected.at_rows[key] = row


def _nothing_by(selection: Selection) -> str:
    since = iso(selection.since) if selection.since else "then"
    return f"{selection.actor} changed no captured record since {since}"


def plan_selective(
    *,
    sections_factory: SectionsFactory,
    selection: Selection,
    later_factory: SectionsFactory | None = None,
    later_name: str = "the later backup",
) -> RestorePlan:
    """What restoring only `selection` from the backup would do, per record, with its
    conflicts listed. Writes nothing.

    `later_factory` opens a backup taken after the damage (if any): a selected record the
    later backup saw damaged and that changed again since is a conflict.

    Raises InvalidSelection (unknown model or record, nothing selected, a reference left
    dangling) and RestoreConflict (a unique value held by a record not selected).
    """
    _chosen, plan = _selective_plan(sections_factory, selection, later_factory, later_name)
    return plan


@transaction.atomic
def apply_selective(
    *,
    sections_factory: SectionsFactory,
    selection: Selection,
    later_factory: SectionsFactory | None = None,
    later_name: str = "the later backup",
    allow_cascade: bool = False,
    accept_conflicts: bool = False,
    force_password_reset: bool = False,
    keep_evidence: EvidenceKeeper | None = None,
) -> RestorePlan:
    """Restore only the selected records, in one transaction, or change nothing.

    Every other record stays as it is. The selected records are written (deletes first),
    then checked against a fresh read of the backup; the accounts whose password, role,
    active flag or groups changed lose their sessions and API tokens (and with
    `force_password_reset` must change their password).

    Raises what plan_selective raises, RestoreConflict for conflicts unless
    `accept_conflicts`, CascadeRefused unless `allow_cascade` when deleting a selected
    record would delete rows outside the captured models, and RestoreVerificationFailed
    (rolled back) when the rows break a constraint or differ from the backup afterwards.
    """
    reset_sequences()
    chosen, plan = _selective_plan(sections_factory, selection, later_factory, later_name)
    if plan.conflicts and not accept_conflicts:
        raise RestoreConflict(
            "Selected records changed after the damage: "
            + _refusal(plan.conflicts)
            + ". Nothing was restored; re-run with --accept-conflicts to restore them anyway"
        )
    if plan.cascades and not allow_cascade:
        raise CascadeRefused(_cascade_message(plan.cascades))
    try:
        with transaction.atomic():
            _write_selected(chosen, keep_evidence)
            connection.check_constraints(table_names=_captured_tables())
    except IntegrityError as exc:
        raise _constraint_failure(exc) from exc
    reset_sequences()
    with sections_factory() as sections:
        differences = _verify_selected(sections, chosen)
    if differences:
        raise RestoreVerificationFailed(
            "Restore rolled back: the selected records did not match the backup afterwards: "
            + "; ".join(differences[:5])
        )
    plan.sessions_flushed, plan.tokens_revoked = contain(
        plan.accounts, force_password_reset=force_password_reset
    )
    plan.password_reset = force_password_reset and bool(plan.accounts)
    return plan
