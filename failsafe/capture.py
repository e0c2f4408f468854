"""The live database as a snapshot stream (see failsafe.snapshot for the shape)."""

from __future__ import annotations

import bisect
import datetime
import platform
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter

import django
from django.apps import apps
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.exceptions import EmptyResultSet
from django.db import connection, models, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.db.models import F, Func, TextField
from django.db.models.expressions import Col
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .conf import setting
from .snapshot import ModelSpec, Section, Snapshot, iso, model_label


def captured_models() -> list[type[models.Model]]:
    return [apps.get_model(label) for label in setting("CAPTURE")]


def spec_for(model: type[models.Model]) -> ModelSpec:
    meta = model._meta
    pk = meta.pk.attname
    fields = [pk] + [f.attname for f in meta.concrete_fields if f.attname != pk]
    m2m = [f.name for f in meta.many_to_many if f.remote_field.through._meta.auto_created]
    return ModelSpec(model_label(model), tuple(fields), tuple(m2m))


def _binary(value):
    # PostgreSQL hands binary columns back as memoryview; the rest of a snapshot is bytes.
    return bytes(value) if isinstance(value, memoryview) else value


class _AsStored(Func):
    """SQLite: a column read without its declared type (`+column` is SQLite's no-op), so
    the driver hands its stored text over instead of running a converter on it."""

    template = "+%(expressions)s"


def _column_conversions(compiler) -> tuple[list[tuple[int, Callable]], list[int]]:
    """(position, convert) for each selected column the ORM would convert, and for binary
    columns; every other column is handed out exactly as the driver returned it. Second,
    the positions of the columns better read as their stored text (`_AsStored`): their
    conversion takes that text as well as what the driver would have made of it.

    These are the converters the ORM itself applies (the backend's, then the field's
    from_db_value), found the way the compiler finds them. Two of SQLite's are replaced
    by equivalents that skip the work their values never need (_sqlite_equivalent): per
    value, a converter is most of what reading a row costs.
    """
    connection = compiler.connection
    expressions = [selected[0] for selected in compiler.select[: compiler.col_count]]
    conversions = []
    as_text = []
    for position, (converters, expression) in compiler.get_converters(expressions).items():
        equivalents = [_sqlite_equivalent(c, expression, connection) for c in converters]
        stored = equivalents and isinstance(equivalents[0], _StoredDatetime)
        if stored and isinstance(expression, Col):
            as_text.append(position)
        converters = [converter for converter in equivalents if converter is not None]
        if converters:
            conversions.append((position, _chain(converters, expression, connection)))
    conversions += [
        (position, _binary)
        for position, expression in enumerate(expressions)
        if expression.output_field.get_internal_type() == "BinaryField"
    ]
    return conversions, as_text


def _chain(converters: list[Callable], expression, connection) -> Callable:
    if len(converters) == 1:
        (converter,) = converters
        if isinstance(converter, _StoredDatetime):
            return converter.convert
        return lambda value: converter(value, expression, connection)

    def convert(value):
        for converter in converters:
            value = converter(value, expression, connection)
        return value

    return convert


class _StoredDatetime:
    """SQLite's datetime converter for a column that may come as the text Django stored
    ("2024-02-29 23:59:59.999999", in the connection's time zone) rather than parsed.

    Gives what the driver's parser (Django's parse_datetime, registered for `datetime`
    columns) followed by the backend's converter give: the same aware datetime. Text in
    the common shape, in UTC, is parsed with its zone in one step; `datetime.replace`
    attaching a zone cost more than the parsing. Anything else takes the ORM's own path.
    """

    def __init__(self, original: Callable, expression, connection):
        self.original = original
        self.expression = expression
        self.connection = connection
        self.zone = connection.timezone
        # The conversion of one value, called once per value: a closure over locals.
        self.convert = self._utc_text() if self.zone is datetime.UTC else self.any_shape

    def __call__(self, value, expression, connection):
        return self.convert(value)

    def _utc_text(self) -> Callable:
        fromisoformat = datetime.datetime.fromisoformat
        any_shape = self.any_shape

        def utc_text(value):
            if value.__class__ is str:
                try:
                    return fromisoformat(value + "+00:00")
                except ValueError:
                    pass  # already has an offset, or not ISO: as the driver would
            return any_shape(value)

        return utc_text

    def any_shape(self, value):
        if value is None:
            return None
        if value.__class__ is str:
            value = parse_datetime(value)
        elif value.__class__ is datetime.datetime and value.tzinfo is None:
            return value.replace(tzinfo=self.zone)
        elif not isinstance(value, datetime.datetime):
            text = value.decode() if isinstance(value, bytes) else str(value)
            value = parse_datetime(text)
        return self.original(value, self.expression, self.connection)


def _sqlite_equivalent(converter, expression, connection) -> Callable | None:
    """`converter`, or a faster one giving the same values, or None when it changes nothing.

    The sqlite3 driver already parses the columns Django declares `datetime` and `bool`
    (Django registers those converters with it), so SQLite's backend converter gets a
    bool and returns it unchanged, or gets a naive datetime and only attaches the
    connection's time zone; a `datetime` column is better read as its text
    (_StoredDatetime). Anything else still goes through the original.
    """
    if connection.vendor != "sqlite":
        return converter
    function = getattr(converter, "__func__", None)
    declared = expression.output_field.db_type(connection)
    if function is type(connection.ops).convert_booleanfield_value and declared == "bool":
        return None
    if (
        function is type(connection.ops).convert_datetimefield_value
        and declared == "datetime"
        and settings.USE_TZ
    ):
        return _StoredDatetime(converter, expression, connection)
    return converter


def _native_timestamps(cursor, connection) -> None:
    """Lets psycopg 3 parse this cursor's timestamps in C, when that gives the same values.

    Django loads every timestamptz through a Python subclass of psycopg's loader that sets
    the connection's time zone; reading 100 000 users, that was a third of a backup on
    PostgreSQL. psycopg's own loader already gives datetimes in the session's time zone,
    which Django sets to the connection's: when the two agree, the values are the same.
    """
    raw = getattr(cursor, "cursor", None)
    adapters = getattr(raw, "adapters", None)
    if connection.vendor != "postgresql" or adapters is None:
        return  # not psycopg 3
    import psycopg
    from psycopg.postgres import types
    from psycopg.pq import Format

    if raw.connection.info.timezone != connection.timezone:
        return
    timestamptz = types["timestamptz"].oid
    adapters.register_loader(timestamptz, psycopg.adapters.get_loader(timestamptz, Format.TEXT))


# Rows handed out per block. Every row is a new list, which the cyclic garbage collector
# tracks; a block that outlives a few hundred allocations is promoted to the oldest
# generation, and enough of those trigger a full collection, which walks every object the
# process holds (Django's own, some 120 000). Small blocks die young: comparing 100 000
# live users with themselves took half the CPU in blocks of 256 rows than of 2 000.
BLOCK_ROWS = 256


def row_blocks(
    queryset: models.QuerySet, fields: Sequence[str], *, stream: bool = True
) -> Iterator[list[list]]:
    """`queryset.values_list(*fields)` as blocks of rows, each row a list: FETCH_SIZE rows
    fetched per round trip, handed out BLOCK_ROWS at a time.

    The values are the ones the ORM gives (aware datetimes, Decimals, decoded JSON, UUIDs,
    bytes for binary columns), converted a block at a time without the ORM's per-row
    machinery. `stream` reads through a server-side cursor where the database has one
    (PostgreSQL, unless DISABLE_SERVER_SIDE_CURSORS); otherwise PostgreSQL sends the whole
    result at once, which suits a small one.
    """
    return _blocks(queryset, fields, stream=stream, tuples=False)


def _blocks(
    queryset: models.QuerySet, fields: Sequence[str], *, stream: bool, tuples: bool
) -> Iterator[list]:
    """row_blocks; with `tuples`, a query whose values need no conversion hands out the
    driver's tuples as fetched (for a reader that only unpacks them)."""
    values = queryset.values_list(*fields)
    compiler = values.query.get_compiler(using=queryset.db)
    try:
        compiler.setup_query()
    except EmptyResultSet:
        return
    conversions, as_text = _column_conversions(compiler)
    if as_text:
        # The same rows, with those columns read as annotations (which keep their place).
        columns = list(fields)
        annotations = {}
        for position in as_text:
            columns[position] = alias = f"_failsafe_stored_{position}"
            annotations[alias] = _AsStored(F(fields[position]), output_field=TextField())
        values = queryset.annotate(**annotations).values_list(*columns)
        compiler = values.query.get_compiler(using=queryset.db)
    connection = compiler.connection
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return
    if not sql:
        return
    server_side = stream and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    cursor = connection.chunked_cursor() if server_side else connection.cursor()
    try:
        _native_timestamps(cursor, connection)
        cursor.execute(sql, params)
        fetch_size = setting("FETCH_SIZE")
        while fetched := cursor.fetchmany(fetch_size):
            if tuples and not conversions:
                yield fetched
                continue
            for start in range(0, len(fetched), BLOCK_ROWS):
                rows = list(map(list, fetched[start : start + BLOCK_ROWS]))
                for position, convert in conversions:
                    for row in rows:
                        row[position] = convert(row[position])
                yield rows
    finally:
        cursor.close()


def _pair_blocks(model, field_name, using: str | None = None) -> Iterator[list]:
    """Blocks of a many-to-many field's (parent pk, related pk) pairs, in that order."""
    field = model._meta.get_field(field_name)
    through = field.remote_field.through
    source = field.m2m_field_name()
    target = field.m2m_reverse_field_name()
    src_col, dst_col = f"{source}_id", f"{target}_id"
    pairs = through._default_manager.db_manager(using).order_by(src_col, dst_col)
    return _blocks(pairs, (src_col, dst_col), stream=True, tuples=True)


_parent_pk = itemgetter(0)


class _Memberships:
    """One many-to-many field's pairs, handed out grouped by parent, a block of parents at a
    time: one dict per block instead of a generator step per pair and per parent."""

    def __init__(self, blocks: Iterator[list]):
        self._blocks = blocks
        self._pending: list = []  # pairs read past the last block of parents

    def through(self, last_pk) -> dict:
        """{parent pk: [related pks, sorted]} of every pair whose parent pk is <= last_pk."""
        grouped: dict = {}
        while True:
            pairs = self._pending or next(self._blocks, None)
            if pairs is None:
                self._pending = []
                return grouped
            if pairs[-1][0] <= last_pk:
                self._pending = []
            else:
                cut = bisect.bisect_right(pairs, last_pk, key=_parent_pk)
                pairs, self._pending = pairs[:cut], pairs[cut:]
            for parent, related in pairs:
                if parent in grouped:
                    grouped[parent].append(related)
                else:
                    grouped[parent] = [related]
            if self._pending:
                return grouped


def live_rows(
    model: type[models.Model], spec: ModelSpec | None = None, *, using: str | None = None
) -> Iterator[list]:
    """Rows of `model` in primary-key order, each with its sorted many-to-many pks appended.

    `using` reads another database than the default (a restore drill's scratch database).
    """
    spec = spec or spec_for(model)
    rows = model._default_manager.db_manager(using).order_by(spec.fields[0])
    blocks = row_blocks(rows, spec.fields)
    if not spec.m2m:
        for block in blocks:
            yield from block
        return
    # One ordered stream of pairs per many-to-many field, merged in a block of rows at a
    # time. Pairs whose parent is gone (impossible under FK constraints) are never asked for.
    fields = [_Memberships(_pair_blocks(model, name, using)) for name in spec.m2m]
    for block in blocks:
        last_pk = block[-1][0]
        for memberships in fields:
            grouped = memberships.through(last_pk)
            for row in block:
                row.append(grouped.get(row[0]) or [])
        yield from block


def live_sections(*, using: str | None = None) -> Iterator[Section]:
    for model in captured_models():
        spec = spec_for(model)
        yield Section(spec, live_rows(model, spec, using=using))


@contextmanager
def live_snapshot() -> Iterator[Snapshot]:
    """The live database as one side of a comparison, read in one consistent transaction."""
    with consistent_read():
        yield Snapshot("live", system_state(), live_sections())


@contextmanager
def consistent_read():
    """One transaction for the whole capture; repeatable read where the database has it."""
    # Inside an outer transaction (a test, a restore) the snapshot is that transaction's.
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def applied_migrations() -> dict[str, list[str]]:
    recorder = MigrationRecorder(connection)
    result: dict[str, list[str]] = {}
    for app, name in sorted(recorder.applied_migrations()):
        result.setdefault(app, []).append(name)
    return result


def captured_migrations() -> dict[str, list[str]]:
    """Applied migrations of the apps whose models are captured: the snapshot's schema."""
    wanted = {model._meta.app_label for model in captured_models()}
    return {app: names for app, names in applied_migrations().items() if app in wanted}


def active_sessions() -> int:
    return Session.objects.filter(expire_date__gt=timezone.now()).count()


def system_state() -> dict:
    """The seed's SystemState for the live database, with per-model counts and the schema."""
    from django.contrib.auth import get_user_model

    from licensing.models import License

    counts = {model_label(m): m._default_manager.count() for m in captured_models()}
    user_label = model_label(get_user_model())
    license_label = model_label(License)
    return {
        "Timestamp": iso(timezone.now()),
        "TotalUsers": counts.get(user_label, get_user_model()._default_manager.count()),
        "ActiveSessions": active_sessions(),
        "TotalLicenses": counts.get(license_label, License.objects.count()),
        "SystemMetrics": {
            "ModelCounts": counts,
            "Migrations": captured_migrations(),
            "DatabaseVendor": connection.vendor,
            "DjangoVersion": django.get_version(),
            "PythonVersion": platform.python_version(),
        },
    }
