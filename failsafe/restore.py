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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.management.color import no_style
from django.db import IntegrityError, connection, models, transaction
from django.db.models.deletion import Collector

from . import capture, progress
from .capture import ModelSpec, Section
from .conf import setting
from .diff import ADDED, MODIFIED, REMOVED, RowDiff, diff_rows, paired_sections
from .exceptions import CascadeRefused, RestoreVerificationFailed, SchemaMismatch

# Inserts, updates and deletes buffered per model before they are written.
WRITE_BATCH = 1000
# Records a cascade hit names as examples.
CASCADE_EXAMPLES = 3

SectionsFactory = Callable[[], contextlib.AbstractContextManager[Iterable[Section]]]


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

    def to_seed_json(self) -> dict:
        return {
            "Model": self.label,
            "Insert": self.insert,
            "Update": self.update,
            "Delete": self.delete,
            "SampleInsert": self.sample_insert,
            "SampleUpdate": self.sample_update,
            "SampleDelete": self.sample_delete,
        }

    def to_api_json(self) -> dict:
        return {
            "model": self.label,
            "insert": self.insert,
            "update": self.update,
            "delete": self.delete,
            "sample_insert": self.sample_insert,
            "sample_update": self.sample_update,
            "sample_delete": self.sample_delete,
        }


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

    def to_seed_json(self) -> dict:
        return {"Model": self.model, "Count": self.count, "Examples": self.examples}

    def to_api_json(self) -> dict:
        return {"model": self.model, "count": self.count, "examples": self.examples}


@dataclass
class RestorePlan:
    models: list[ModelPlan] = field(default_factory=list)
    cascades: list[CascadeHit] = field(default_factory=list)
    # Set by apply_restore only: the sessions it ended.
    sessions_flushed: int = 0

    @property
    def is_noop(self) -> bool:
        return not any(plan.changes for plan in self.models) and not self.cascades

    def to_seed_json(self) -> dict:
        return {
            "IsNoop": self.is_noop,
            "Models": [plan.to_seed_json() for plan in self.models],
            "Cascades": [hit.to_seed_json() for hit in self.cascades],
        }

    def to_api_json(self) -> dict:
        return {
            "is_noop": self.is_noop,
            "models": [plan.to_api_json() for plan in self.models],
            "cascades": [hit.to_api_json() for hit in self.cascades],
        }


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
    captured = [capture.model_label(model) for model in capture.captured_models()]
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
        related = []
        for link in links:
            by_parent: dict = {}
            pairs = link.through._default_manager.filter(
                **{f"{link.source}__gte": first, f"{link.source}__lte": last}
            ).order_by(link.source, link.target)
            for block in capture.row_blocks(pairs, (link.source, link.target), stream=False):
                for parent, target in block:
                    by_parent.setdefault(parent, []).append(target)
            related.append(by_parent)
        for row in page:
            yield row + [by_parent.get(row[0], []) for by_parent in related]
        if len(page) < page_size:
            # A short page is the end; asking again could see rows we inserted meanwhile.
            return
        after = last


def _natural_key_index(model: type[models.Model], spec: ModelSpec) -> int:
    """Where in a row the name people know a record by sits: username, key, name, else pk."""
    if model is get_user_model():
        return spec.fields.index(model._meta.get_field(model.USERNAME_FIELD).attname)
    for model_field in model._meta.concrete_fields:
        if model_field.unique and not model_field.primary_key:
            return spec.fields.index(model_field.attname)
    return 0


def _in_scope() -> set[type[models.Model]]:
    """The captured models and the auto-created tables of their many-to-many fields."""
    scope = set()
    for model in capture.captured_models():
        scope.add(model)
        for m2m_field in model._meta.many_to_many:
            if m2m_field.remote_field.through._meta.auto_created:
                scope.add(m2m_field.remote_field.through)
    return scope


# --- writing rows --------------------------------------------------------------------

# Fields whose archived value (what the ORM read) is exactly what the ORM would hand the
# driver when saving it: their get_db_prep_save returns str, int and bool values as they
# are. Exact classes only: a subclass may prepare its values differently.
_AS_IS_FIELDS = frozenset(
    {
        models.AutoField,
        models.BigAutoField,
        models.SmallAutoField,
        models.IntegerField,
        models.BigIntegerField,
        models.SmallIntegerField,
        models.PositiveIntegerField,
        models.PositiveBigIntegerField,
        models.PositiveSmallIntegerField,
        models.BooleanField,
        models.CharField,
        models.TextField,
        models.EmailField,
        models.SlugField,
        models.URLField,
    }
)


def _preparer(model_field: models.Field) -> Callable | None:
    """What turns an archived value of `model_field` into the driver's value; None: as is.

    Everything but the plain fields above goes through the field's own get_db_prep_save,
    as a save() would, except aware datetimes, the other common case, which take a
    shortcut (_datetime_preparer). A value prepared wrongly cannot go unnoticed: the
    verification pass compares every restored row with the backup.
    """
    if type(model_field) in _AS_IS_FIELDS:
        return None
    # A key is prepared as the field it points at: a plain integer key is as is.
    is_key = type(model_field) in (models.ForeignKey, models.OneToOneField)
    if is_key and _preparer(model_field.target_field) is None:
        return None
    prepare = model_field.get_db_prep_save
    if type(model_field) is models.DateTimeField:
        return _datetime_preparer(lambda value: prepare(value, connection))
    return lambda value: prepare(value, connection)


def _datetime_preparer(prepare: Callable) -> Callable:
    """get_db_prep_save of a DateTimeField, shortened for the aware datetimes the ORM reads.

    For an aware datetime, get_prep_value changes nothing and the backend's
    adapt_datetimefield_value does the rest: nothing on PostgreSQL (the driver takes it),
    on SQLite the text of the naive datetime in the connection's time zone. That is all
    done here directly: through the layers of calls in between, the two datetime columns
    of users and of licenses were the largest single cost of the writes on SQLite.
    """
    if connection.vendor == "postgresql":
        shortcut = None
    elif connection.vendor == "sqlite" and settings.USE_TZ:
        zone = connection.timezone

        def shortcut(value):
            return str(value.astimezone(zone).replace(tzinfo=None))

    else:
        return prepare

    def prepare_datetime(value):
        if value is None:
            return None
        if value.__class__ is datetime.datetime and value.tzinfo is not None:
            return value if shortcut is None else shortcut(value)
        return prepare(value)

    return prepare_datetime


def _binary_copyable(model_field: models.Field) -> bool:
    """Whether psycopg sends this field's prepared values in COPY's binary format, told the
    column's type: the plain ints, bools and strings, and datetimes."""
    if type(model_field) in (models.ForeignKey, models.OneToOneField):
        model_field = model_field.target_field
    return type(model_field) in _AS_IS_FIELDS or type(model_field) is models.DateTimeField


class _Table:
    """Plain SQL writes to one table, with the values prepared as the ORM would.

    The ORM's bulk_create builds a model instance per row and compiles every value through
    several layers of field methods; for a restore of many rows that was three quarters
    of the time. Here a row is a list of column values: inserts go out as one COPY per batch
    on PostgreSQL (in the binary format when every column allows it: a third of the
    client's time of the text format) and as one executemany on the others, updates as
    one executemany.
    """

    def __init__(self, model: type[models.Model], attnames: Iterable[str]):
        meta = model._meta
        quote = connection.ops.quote_name
        fields = [meta.get_field(name) for name in attnames]
        self.name = quote(meta.db_table)
        self.columns = [quote(f.column) for f in fields]
        self.preparers = [
            (position, prepare)
            for position, prepare in enumerate(_preparer(f) for f in fields)
            if prepare is not None
        ]
        self.binary = all(_binary_copyable(f) for f in fields)
        self._column_types: list[int] | None = None

    def prepared(self, rows: Iterable[list]) -> list[list]:
        """Copies of `rows` (only the table's columns) in the driver's values."""
        width = len(self.columns)
        prepared = [row[:width] for row in rows]
        for position, prepare in self.preparers:
            for row in prepared:
                row[position] = prepare(row[position])
        return prepared

    def insert(self, rows: Iterable[list]) -> None:
        rows = self.prepared(rows)
        if not rows:
            return
        columns = ", ".join(self.columns)
        with connection.cursor() as cursor:
            if hasattr(cursor.cursor, "copy"):  # psycopg 3
                self._copy(cursor, columns, rows)
            else:
                placeholders = ", ".join(["%s"] * len(self.columns))
                cursor.executemany(
                    f"INSERT INTO {self.name} ({columns}) VALUES ({placeholders})",  # noqa: S608
                    rows,
                )

    def _copy(self, cursor, columns: str, rows: list[list]) -> None:
        copy_sql = f"COPY {self.name} ({columns}) FROM STDIN"
        if self.binary and self._column_types is None:
            # The binary format carries no type names: psycopg must be told the columns'.
            cursor.execute(f"SELECT {columns} FROM {self.name} WHERE false")  # noqa: S608
            self._column_types = [column.type_code for column in cursor.description]
        if self.binary:
            copy_sql += " (FORMAT BINARY)"
        # psycopg 3's COPY; its errors are raised as Django's, like any query's.
        with connection.wrap_database_errors, cursor.copy(copy_sql) as copy:
            if self.binary:
                copy.set_types(self._column_types)
            for row in rows:
                copy.write_row(row)

    def update(self, rows: Iterable[list], positions: list[int]) -> None:
        """Sets the columns at `positions` (never the first, the primary key) by pk."""
        rows = self.prepared(rows)
        if not rows:
            return
        assignments = ", ".join(f"{self.columns[i]} = %s" for i in positions)
        with connection.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {self.name} SET {assignments} WHERE {self.columns[0]} = %s",  # noqa: S608
                [[row[i] for i in positions] + [row[0]] for row in rows],
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
    ):
        self.model = model
        self.spec = spec
        self.write = write
        self.allow_cascade = allow_cascade
        self.scope = scope
        self.cascades = cascades
        self.plan = ModelPlan(capture.model_label(model))
        self.width = len(spec.fields)
        self.links = _many_to_many(model, spec)
        self.table = _Table(model, spec.fields)
        self.link_tables = [_Table(link.through, (link.source, link.target)) for link in self.links]
        self.key_index = _natural_key_index(model, spec)
        self.sample_limit = setting("DETAIL_LIMIT")
        self.deletes: list[list] = []
        self.writes: list[_Write] = []
        # Writes refused by a unique constraint, retried once the rest of the model is done.
        self.deferred: list[_Write] = []
        self.last_conflict: IntegrityError | None = None

    # Differences come from diff_rows(archived, live): REMOVED means only in the backup.
    def add(self, row_diff: RowDiff) -> None:
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
            samples.append(str(row[self.key_index]))

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
            collector.delete()

    def _outside_scope(self, collector: Collector) -> list[CascadeHit]:
        # SET_NULL updates (collector.field_updates) change rows but delete none: not counted.
        hits = []
        for model, instances in collector.data.items():
            if model._meta.concrete_model not in self.scope and instances:
                first = sorted(instances, key=lambda obj: obj.pk)[:CASCADE_EXAMPLES]
                examples = [str(obj) for obj in first]
                hits.append(CascadeHit(capture.model_label(model), len(instances), examples))
        for query in collector.fast_deletes:
            model = query.model
            if model._meta.concrete_model in self.scope:
                continue
            count = query.count()
            if count:
                examples = [str(obj) for obj in query.order_by("pk")[:CASCADE_EXAMPLES]]
                hits.append(CascadeHit(capture.model_label(model), count, examples))
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
        self, link: _ManyToMany, table: _Table, writes: list[_Write], index: int
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
        table.insert(added)


# --- the passes ----------------------------------------------------------------------


def _run(sections: Iterable[Section], *, write: bool, allow_cascade: bool) -> RestorePlan:
    plan = RestorePlan()
    cascades: dict[str, CascadeHit] = {}
    scope = _in_scope()
    # Pairing with the (never read) live sections checks the backup captures the same
    # models in the same order.
    for archived, _live in paired_sections(sections, capture.live_sections()):
        model = _require_matching_spec(archived.spec)
        restore = _ModelRestore(
            model,
            archived.spec,
            write=write,
            allow_cascade=allow_cascade,
            scope=scope,
            cascades=cascades,
        )
        # The live rows are read now, after the earlier sections' writes and cascades.
        for row_diff in diff_rows(archived.rows, _live_pages(model, archived.spec)):
            restore.add(row_diff)
        plan.models.append(restore.finish())
    plan.cascades = list(cascades.values())
    return plan


def plan_restore(*, sections: Iterable[Section]) -> RestorePlan:
    """What a restore from `sections` would insert, update and delete. Writes nothing.

    Raises SchemaMismatch if the sections do not capture today's models and columns.
    """
    return _run(sections, write=False, allow_cascade=False)


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
) -> RestorePlan:
    """Make the captured models equal to the backup, in one transaction, or change nothing.

    `sections_factory` opens the backup afresh each time it is called: a context manager
    whose value is the sections stream (e.g. a function wrapping the archive store's
    `open`). The backup is read twice: the restore itself, then a verification pass. After
    the writes, sequences are reset, the result is checked against the backup, and every
    session is ended (the count is in `sessions_flushed`). `total_rows`, the rows the
    backup holds, only sizes the progress display of each pass.

    Cascades are refused as they are met, before the batch that would cause one is
    deleted; the writes before it are rolled back, and a dry planning pass then names every
    cascade the restore would cause. Reading the backup a third time only when a cascade
    is refused keeps the common case to two passes.

    Raises CascadeRefused (nothing changed) when deleting live-only rows would delete rows
    of other models and `allow_cascade` is false; SchemaMismatch when the sections do not
    match today's models; RestoreVerificationFailed (rolled back) when the rows break a
    database constraint or the database does not equal the backup afterwards.
    """
    try:
        with transaction.atomic(), progress.stage("Restore", total_rows):
            with sections_factory() as sections:
                plan = _run(sections, write=True, allow_cascade=allow_cascade)
            # Foreign keys are deferred until commit; check now so a bad row rolls back here.
            connection.check_constraints(table_names=_captured_tables())
    except IntegrityError as exc:
        raise _constraint_failure(exc) from exc
    except _CascadeFound as found:
        with progress.stage("Plan restore", total_rows), sections_factory() as sections:
            preview = plan_restore(sections=sections)
        raise CascadeRefused(_cascade_message(preview.cascades or found.hits)) from None
    reset_sequences()
    with progress.stage("Verify restore", total_rows), sections_factory() as sections:
        differences = verify_identical(sections=sections)
    if differences:
        raise RestoreVerificationFailed(
            "Restore rolled back: the database did not match the backup afterwards: "
            + "; ".join(differences[:5])
        )
    plan.sessions_flushed = flush_sessions()
    return plan


# --- after the writes ----------------------------------------------------------------


def verify_identical(*, sections: Iterable[Section]) -> list[str]:
    """How the live captured models differ from `sections`; [] when they are identical.

    Names records and columns, never values: a difference may be a password hash.
    """
    limit = setting("DETAIL_LIMIT")
    differences: list[str] = []
    unlisted = 0
    for archived, live in paired_sections(sections, capture.live_sections()):
        problem = _spec_problem(archived.spec)
        if problem:
            differences.append(problem)
            continue
        model = apps.get_model(archived.spec.label)
        key_index = _natural_key_index(model, archived.spec)
        label = archived.spec.label
        for row_diff in diff_rows(archived.rows, live.rows):
            if len(differences) >= limit:
                unlisted += 1
                continue
            if row_diff.kind == REMOVED:
                name = row_diff.baseline[key_index]
                differences.append(f"{label} {name}: in the backup, missing from the database")
            elif row_diff.kind == ADDED:
                name = row_diff.current[key_index]
                differences.append(f"{label} {name}: in the database, not in the backup")
            else:
                name = row_diff.baseline[key_index]
                columns = ", ".join(row_diff.changed_columns(archived.spec))
                differences.append(f"{label} {name}: {columns} differ")
    if unlisted:
        differences.append(f"and {unlisted} more differences")
    return differences


def flush_sessions() -> int:
    """End every session stored in the database: everyone logs in again. Returns how many."""
    deleted, _per_model = Session.objects.all().delete()
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
    statements = connection.ops.sequence_reset_sql(
        no_style(), sorted(_in_scope(), key=capture.model_label)
    )
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
