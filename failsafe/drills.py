"""Restore drills: a backup restored where nothing depends on it, then read back and checked.

A drill makes a scratch database beside the live one (a temporary SQLite file, or a
PostgreSQL database `<name>_drill` it creates and drops), registers it as a temporary
connection alias, builds today's schema there with the migrate command, and writes the
backup's rows into it with the restore's own writes (restore_sql.SqlTable: the same value
preparation, COPY on PostgreSQL). Then it reads the scratch rows back the way a backup reads
the live ones (capture.live_rows) and merge-joins them (diff.diff_rows) against a second pass
over the archive, model by model. Memory stays flat: rows go in batches one way and stream
the other.

The live database is only read, never written: the rows of the tables the captured models
point at without capturing them (permissions and their content types) are copied from it
into the scratch database, so that the backup's references meet the same rows a real
restore would meet.

The archive itself is opened by the caller (`sections_factory`, e.g. archives.open_sections
of the backup): this module only knows snapshots.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.apps import apps
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.utils import load_backend

from . import capture
from .diff import ADDED, REMOVED, diff_rows, paired_sections
from .exceptions import FailsafeError, SchemaMismatch
from .progress import stage
from .restore_sql import SqlTable
from .snapshot import ModelSpec, Section, model_label, record_namer

SectionsFactory = Callable[[], contextlib.AbstractContextManager[Iterable[Section]]]

# The scratch database's connection alias, while a drill runs.
SCRATCH_ALIAS = "failsafe_drill"
# How the drill names a SQLite scratch database (it has no name worth keeping).
SQLITE_SCRATCH = "sqlite (temporary file)"
# Rows written to the scratch database per batch.
WRITE_BATCH = 1000
# Differing records a model's check names, at most.
EXAMPLES = 5
# PostgreSQL's longest identifier, in bytes.
POSTGRES_NAME_MAX = 63


class DrillStepFailed(FailsafeError):
    """A step of the drill (the scratch database, its schema, loading the rows) failed."""


# --- results ---------------------------------------------------------------------------


@dataclass
class ModelCheck:
    """One captured model: rows the archive holds, rows read back, and how they differ."""

    label: str
    expected: int = 0
    found: int = 0
    differences: int = 0
    # Records (by natural key) and columns, never values: a difference may be a password.
    examples: list[str] = field(default_factory=list)

    def differ(self, text: str) -> None:
        self.differences += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


@dataclass
class DrillReport:
    scratch_database: str
    models: list[ModelCheck] = field(default_factory=list)

    @property
    def rows_checked(self) -> int:
        return sum(check.expected for check in self.models)

    @property
    def passed(self) -> bool:
        return not any(check.differences for check in self.models)

    @property
    def problem(self) -> str:
        """What differed, in one line ("" when the drill passed)."""
        failing = [check for check in self.models if check.differences]
        if not failing:
            return ""
        return "Rows read back from the scratch database differ from the archive: " + "; ".join(
            f"{check.label} {check.differences} ({', '.join(check.examples)})" for check in failing
        )


# --- the drill -------------------------------------------------------------------------


def run(
    *,
    sections_factory: SectionsFactory,
    recorded_counts: dict[str, int] | None = None,
    total_rows: int | None = None,
    on_scratch: Callable[[str], None] | None = None,
) -> DrillReport:
    """Restore the backup `sections_factory` opens into a scratch database and check it.

    The archive is read twice: once to load the rows, once to compare them with what the
    scratch database gives back. `recorded_counts` (the backup's ModelCounts) are checked
    against the rows the archive really holds. `on_scratch` is told the scratch database's
    name as soon as it exists. The scratch database is gone when this returns or raises.

    Raises ArchiveCorrupt (the archive cannot be read), SchemaMismatch (it does not hold
    today's models and columns), DrillStepFailed (the scratch database, its schema or the
    rows' writes failed); differences in the rows are the report's, not an exception.
    """
    with scratch_database() as (alias, where):
        if on_scratch is not None:
            on_scratch(where)
        build_schema(alias)
        copy_references(alias)
        loading = stage("Drill: restore into the scratch database", total_rows)
        with loading, sections_factory() as sections:
            load(alias, sections)
        checking = stage("Drill: check the rows read back", total_rows)
        with checking, sections_factory() as sections:
            checks = compare(alias, sections, recorded_counts=recorded_counts or {})
        return DrillReport(where, checks)


# --- the scratch database --------------------------------------------------------------


@contextlib.contextmanager
def scratch_database() -> Iterator[tuple[str, str]]:
    """(connection alias, name to show) of an empty scratch database, removed afterwards."""
    live = connections[DEFAULT_DB_ALIAS]
    settings_dict = copy.deepcopy(live.settings_dict)
    if live.vendor == "sqlite":
        with tempfile.TemporaryDirectory(prefix="failsafe-drill-") as folder:
            settings_dict["NAME"] = os.path.join(folder, "drill.sqlite3")
            with _registered(settings_dict) as alias:
                yield alias, SQLITE_SCRATCH
        return
    if live.vendor != "postgresql":
        raise DrillStepFailed(
            f"Restore drills need SQLite or PostgreSQL; this database is {live.vendor}"
        )
    name = scratch_name(settings_dict["NAME"])
    _postgres_admin(live, _recreate_sql(live, name))
    try:
        settings_dict["NAME"] = name
        with _registered(settings_dict) as alias:
            yield alias, name
    finally:
        _postgres_admin(live, [_drop_sql(live, name)])


def scratch_name(live_name: str) -> str:
    """`<name>_drill`, cut to fit PostgreSQL's identifiers."""
    suffix = "_drill"
    base = live_name.encode()[: POSTGRES_NAME_MAX - len(suffix)].decode(errors="ignore")
    return base + suffix


def _drop_sql(live, name: str) -> str:
    # FORCE (PostgreSQL 13+) ends sessions a crashed drill may have left on it.
    force = " WITH (FORCE)" if live.pg_version >= 130000 else ""
    return f"DROP DATABASE IF EXISTS {live.ops.quote_name(name)}{force}"


def _recreate_sql(live, name: str) -> list[str]:
    # One left by a crashed drill is dropped first: the drill lock says none is running.
    return [_drop_sql(live, name), f"CREATE DATABASE {live.ops.quote_name(name)}"]


def _postgres_admin(live, statements: list[str]) -> None:
    """CREATE and DROP DATABASE, which cannot run in a transaction: on a connection of its
    own to the live database, in autocommit, closed afterwards."""
    admin = live.__class__(copy.deepcopy(live.settings_dict), alias=f"{SCRATCH_ALIAS}_admin")
    try:
        with admin.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    except Exception as exc:
        raise DrillStepFailed(
            f"Could not create or drop the scratch database: {_first_line(exc)}"
        ) from exc
    finally:
        admin.close()


@contextlib.contextmanager
def _registered(settings_dict: dict) -> Iterator[str]:
    """The database as the connection alias SCRATCH_ALIAS for the block."""
    if SCRATCH_ALIAS in connections.settings:
        raise DrillStepFailed("A restore drill is already running in this process")
    scratch = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(
        settings_dict, alias=SCRATCH_ALIAS
    )
    try:
        # Connected before it is registered: Django's test cases refuse to open a registered
        # alias they were not told of (they isolate the databases they know), and a drill's
        # database needs no isolation: it is made and dropped by the drill itself.
        scratch.ensure_connection()
        if scratch.vendor == "sqlite":
            # A scratch file needs no durability: without fsyncs, migrate is several times
            # faster.
            with scratch.cursor() as cursor:
                cursor.execute("PRAGMA synchronous = OFF")
                cursor.execute("PRAGMA journal_mode = MEMORY")
        connections.settings[SCRATCH_ALIAS] = settings_dict
        connections[SCRATCH_ALIAS] = scratch
        yield SCRATCH_ALIAS
    finally:
        try:
            scratch.close()
        finally:
            if SCRATCH_ALIAS in connections.settings:
                del connections[SCRATCH_ALIAS]
                del connections.settings[SCRATCH_ALIAS]


def build_schema(alias: str) -> None:
    """Today's schema by the migrate command, then every table emptied: migrate's own rows
    (content types, permissions) make way for the live ones copy_references brings.

    Only the apps of the captured and reference models are migrated (with the apps their
    migrations depend on): their tables are all a restore writes, and rendering the other
    apps' migration states is most of what a whole migrate costs.
    """
    quiet = io.StringIO()
    options = {"database": alias, "interactive": False, "verbosity": 0}
    options |= {"stdout": quiet, "stderr": quiet}
    try:
        loader = MigrationLoader(None, ignore_no_migrations=True)
        if all(label in loader.migrated_apps for label in schema_apps()):
            for label in schema_apps():
                call_command("migrate", label, **options)
        else:
            # An app without migrations gets its tables from syncdb, which runs for all.
            call_command("migrate", run_syncdb=True, **options)
        call_command("flush", inhibit_post_migrate=True, **options)
    except Exception as exc:
        raise DrillStepFailed(f"Migrating the scratch database failed: {_first_line(exc)}") from exc


def schema_apps() -> list[str]:
    """The app labels whose tables a drill writes."""
    models_written = [*capture.captured_models(), *reference_models()]
    return sorted({model._meta.app_label for model in models_written})


def reference_models() -> list[type[models.Model]]:
    """The models the captured ones point at without capturing them (auth's permissions),
    and those these point at in turn (content types), by label."""
    captured = {model._meta.concrete_model for model in capture.captured_models()}
    found: set[type[models.Model]] = set()
    pending = [target for model in captured for target in _targets(model, many=True)]
    while pending:
        model = pending.pop()._meta.concrete_model
        if model in captured or model in found:
            continue
        found.add(model)
        pending += _targets(model, many=False)
    return sorted(found, key=model_label)


def _targets(model: type[models.Model], *, many: bool) -> list[type[models.Model]]:
    targets = [f.related_model for f in model._meta.concrete_fields if f.is_relation]
    if many:
        targets += [f.related_model for f in model._meta.many_to_many]
    return [target for target in targets if target is not None and target != model]


def copy_references(alias: str) -> None:
    """Copy the reference models' rows from the live database (read only) to the scratch."""
    with transaction.atomic(using=alias):
        for model in reference_models():
            attnames = [f.attname for f in model._meta.concrete_fields]
            table = SqlTable(model, attnames, using=alias)
            rows = model._default_manager.db_manager(DEFAULT_DB_ALIAS).order_by("pk")
            for block in capture.row_blocks(rows, attnames):
                table.insert(block)


# --- loading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Links:
    """A many-to-many field's table, and its two key columns."""

    table: SqlTable
    position: int  # where the row holds the field's sorted related keys


def _require_current(archived: ModelSpec, model: type[models.Model]) -> None:
    live = capture.spec_for(model)
    if archived != live:
        missing = [name for name in live.columns if name not in archived.columns]
        extra = [name for name in archived.columns if name not in live.columns]
        parts = [f"backup lacks {', '.join(missing)}"] if missing else []
        parts += [f"backup also has {', '.join(extra)}"] if extra else []
        raise SchemaMismatch(
            f"Backup columns do not match the current models: {archived.label}: "
            + (", ".join(parts) or "columns are in another order")
        )


def _link_tables(model: type[models.Model], spec: ModelSpec, alias: str) -> list[_Links]:
    links = []
    for offset, name in enumerate(spec.m2m):
        m2m_field = model._meta.get_field(name)
        through = m2m_field.remote_field.through
        source = through._meta.get_field(m2m_field.m2m_field_name()).attname
        target = through._meta.get_field(m2m_field.m2m_reverse_field_name()).attname
        links.append(
            _Links(SqlTable(through, (source, target), using=alias), len(spec.fields) + offset)
        )
    return links


def load(alias: str, sections: Iterable[Section]) -> None:
    """Write every archived row (and its many-to-many pairs) into the scratch database, in
    one transaction whose foreign keys are checked before it commits."""
    scratch = connections[alias]
    try:
        with transaction.atomic(using=alias):
            for archived, _scratch in paired_sections(sections, capture.live_sections(using=alias)):
                # Paired with the captured models in order: the label is one of them.
                model = apps.get_model(archived.spec.label)
                _require_current(archived.spec, model)
                _load_section(archived, model, alias)
            scratch.check_constraints()
    except (SchemaMismatch, DrillStepFailed):
        raise
    except FailsafeError:
        raise  # ArchiveCorrupt and the store's other refusals, as they are
    except Exception as exc:
        raise DrillStepFailed(
            f"Restoring the rows into the scratch database failed: {_first_line(exc)}"
        ) from exc


def _load_section(archived: Section, model: type[models.Model], alias: str) -> None:
    table = SqlTable(model, archived.spec.fields, using=alias)
    links = _link_tables(model, archived.spec, alias)
    batch: list[list] = []

    def write() -> None:
        table.insert(batch)
        for link in links:
            link.table.insert([row[0], target] for row in batch for target in row[link.position])
        batch.clear()

    for row in archived.rows:
        batch.append(row)
        if len(batch) >= WRITE_BATCH:
            write()
    if batch:
        write()


# --- checking --------------------------------------------------------------------------


class _Counted:
    """An iterator of rows that counts what it hands out."""

    def __init__(self, rows: Iterable[list]):
        self.rows = iter(rows)
        self.count = 0

    def __iter__(self) -> Iterator[list]:
        for row in self.rows:
            self.count += 1
            yield row


def compare(
    alias: str, sections: Iterable[Section], *, recorded_counts: dict[str, int]
) -> list[ModelCheck]:
    """Each model's archived rows merge-joined with the rows the scratch database gives."""
    checks = []
    for archived, scratch in paired_sections(sections, capture.live_sections(using=alias)):
        spec = archived.spec
        check = ModelCheck(spec.label)
        name_of = record_namer(spec)
        expected, found = _Counted(archived.rows), _Counted(scratch.rows)
        for row_diff in diff_rows(expected, found):
            if row_diff.kind == REMOVED:
                check.differ(f"{name_of(row_diff.baseline)} missing")
            elif row_diff.kind == ADDED:
                check.differ(f"{name_of(row_diff.current)} not in the archive")
            else:
                columns = ", ".join(row_diff.changed_columns(spec))
                check.differ(f"{name_of(row_diff.baseline)}: {columns} differ")
        check.expected, check.found = expected.count, found.count
        recorded = recorded_counts.get(spec.label)
        if recorded is not None and recorded != check.expected:
            check.differ(f"the archive holds {check.expected} rows, the backup recorded {recorded}")
        checks.append(check)
    return checks


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)[:300]
