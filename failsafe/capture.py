"""The live database as a snapshot stream (see failsafe.snapshot for the shape)."""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import django
from django.apps import apps
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.exceptions import EmptyResultSet
from django.db import connection, models, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

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


def _column_conversions(compiler) -> list[tuple[int, Callable]]:
    """(position, convert) for each selected column the ORM would convert, and for binary
    columns; every other column is handed out exactly as the driver returned it.

    These are the converters the ORM itself applies (the backend's, then the field's
    from_db_value), found the way the compiler finds them. Two of SQLite's are replaced
    by equivalents that skip the work their values never need (_sqlite_equivalent): per
    value, a converter is most of what reading a row costs.
    """
    connection = compiler.connection
    expressions = [selected[0] for selected in compiler.select[: compiler.col_count]]
    conversions = []
    for position, (converters, expression) in compiler.get_converters(expressions).items():
        converters = [
            equivalent
            for converter in converters
            if (equivalent := _sqlite_equivalent(converter, expression, connection)) is not None
        ]
        if converters:
            conversions.append((position, _chain(converters, expression, connection)))
    conversions += [
        (position, _binary)
        for position, expression in enumerate(expressions)
        if expression.output_field.get_internal_type() == "BinaryField"
    ]
    return conversions


def _chain(converters: list[Callable], expression, connection) -> Callable:
    if len(converters) == 1:
        (converter,) = converters
        return lambda value: converter(value, expression, connection)

    def convert(value):
        for converter in converters:
            value = converter(value, expression, connection)
        return value

    return convert


def _sqlite_equivalent(converter, expression, connection) -> Callable | None:
    """`converter`, or a faster one giving the same values, or None when it changes nothing.

    The sqlite3 driver already parses the columns Django declares `datetime` and `bool`
    (Django registers those converters with it), so SQLite's backend converter gets a
    bool and returns it unchanged, or gets a naive datetime and only attaches the
    connection's time zone. Anything else still goes through the original.
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
        zone = connection.timezone

        def convert_datetime(value, expression, connection):
            if value.__class__ is datetime.datetime and value.tzinfo is None:
                return value.replace(tzinfo=zone)
            return converter(value, expression, connection)

        return convert_datetime
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


def row_blocks(
    queryset: models.QuerySet, fields: Sequence[str], *, stream: bool = True
) -> Iterator[list[list]]:
    """`queryset.values_list(*fields)` as blocks of FETCH_SIZE rows, each row a list.

    The values are the ones the ORM gives (aware datetimes, Decimals, decoded JSON, UUIDs,
    bytes for binary columns), converted a block at a time without the ORM's per-row
    machinery. `stream` reads through a server-side cursor where the database has one
    (PostgreSQL, unless DISABLE_SERVER_SIDE_CURSORS); otherwise PostgreSQL sends the whole
    result at once, which suits a small one.
    """
    compiler = queryset.values_list(*fields).query.get_compiler(using=queryset.db)
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
        conversions = _column_conversions(compiler)
        fetch_size = setting("FETCH_SIZE")
        while block := cursor.fetchmany(fetch_size):
            rows = list(map(list, block))
            for position, convert in conversions:
                for row in rows:
                    row[position] = convert(row[position])
            yield rows
    finally:
        cursor.close()


def _m2m_pairs(model, field_name, using: str | None = None) -> Iterator[tuple]:
    field = model._meta.get_field(field_name)
    through = field.remote_field.through
    source = field.m2m_field_name()
    target = field.m2m_reverse_field_name()
    src_col, dst_col = f"{source}_id", f"{target}_id"
    pairs = through._default_manager.db_manager(using).order_by(src_col, dst_col)
    for block in row_blocks(pairs, (src_col, dst_col)):
        yield from block


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
    # One ordered stream per many-to-many field, merged in as the parent rows go by.
    pair_streams = [_m2m_pairs(model, name, using) for name in spec.m2m]
    pending = [next(stream, None) for stream in pair_streams]
    for block in blocks:
        for row in block:
            pk = row[0]
            for i, stream in enumerate(pair_streams):
                related = []
                pair = pending[i]
                # Skip pairs whose parent is gone (cannot happen under FK constraints, but cheap).
                while pair is not None and pair[0] < pk:
                    pair = next(stream, None)
                while pair is not None and pair[0] == pk:
                    related.append(pair[1])
                    pair = next(stream, None)
                pending[i] = pair
                row.append(related)
            yield row


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
