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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.sessions.models import Session
from django.core.management.color import no_style
from django.db import IntegrityError, connection, models, transaction
from django.db.models.deletion import Collector
from knox.models import AuthToken

from . import capture, progress
from .conf import setting
from .diff import ADDED, MODIFIED, REMOVED, RowDiff, diff_rows, paired_sections
from .exceptions import CascadeRefused, RestoreVerificationFailed, SchemaMismatch
from .restore_sql import SqlTable
from .snapshot import ModelSpec, Section, iso, model_label, record_namer

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


@dataclass
class RestorePlan:
    models: list[ModelPlan] = field(default_factory=list)
    cascades: list[CascadeHit] = field(default_factory=list)
    # Set by apply_restore only: the sessions it ended and the API tokens it revoked.
    sessions_flushed: int = 0
    tokens_revoked: int = 0

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


def _in_scope() -> set[type[models.Model]]:
    """The captured models and the auto-created tables of their many-to-many fields."""
    scope = set()
    for model in capture.captured_models():
        scope.add(model)
        for m2m_field in model._meta.many_to_many:
            if m2m_field.remote_field.through._meta.auto_created:
                scope.add(m2m_field.remote_field.through)
    return scope


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
        table.insert(added)


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
) -> RestorePlan:
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
            keep_evidence=keep_evidence,
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
    keep_evidence: EvidenceKeeper | None = None,
) -> RestorePlan:
    """Make the captured models equal to the backup, in one transaction, or change nothing.

    `sections_factory` opens the backup afresh each time it is called: a context manager
    whose value is the sections stream (e.g. a function wrapping the archive store's
    `open`). The backup is read twice: the restore itself, then a verification pass. After
    the writes, sequences are reset (before them too), the result is checked against the
    backup, and every session is ended and every API token revoked (the counts are in
    `sessions_flushed` and `tokens_revoked`). `total_rows`, the rows the
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
    try:
        with transaction.atomic(), progress.stage("Restore", total_rows):
            with sections_factory() as sections:
                plan = _run(
                    sections,
                    write=True,
                    allow_cascade=allow_cascade,
                    keep_evidence=keep_evidence,
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
    with progress.stage("Verify restore", total_rows), sections_factory() as sections:
        differences = verify_identical(sections=sections)
    if differences:
        raise RestoreVerificationFailed(
            "Restore rolled back: the database did not match the backup afterwards: "
            + "; ".join(differences[:5])
        )
    plan.sessions_flushed = flush_sessions()
    plan.tokens_revoked = revoke_api_tokens()
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
    statements = connection.ops.sequence_reset_sql(
        no_style(), sorted(_in_scope(), key=model_label)
    )
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
