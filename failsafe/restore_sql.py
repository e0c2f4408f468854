"""Plain SQL writes of snapshot rows, with the values prepared as the ORM would prepare them.

The restore engine turns differences into rows to insert and update; this module is how
those rows reach the database fast: COPY on PostgreSQL, executemany elsewhere.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import connection, connections, models

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


def preparer(model_field: models.Field, db=None) -> Callable | None:
    """What turns an archived value of `model_field` into the driver's value for the
    connection `db` (default: the default database's); None: as is.

    Everything but the plain fields above goes through the field's own get_db_prep_save,
    as a save() would, except aware datetimes, the other common case, which take a
    shortcut (_datetime_preparer). A value prepared wrongly cannot go unnoticed: the
    verification pass compares every restored row with the backup.
    """
    db = db or connection
    if type(model_field) in _AS_IS_FIELDS:
        return None
    # A key is prepared as the field it points at: a plain integer key is as is.
    is_key = type(model_field) in (models.ForeignKey, models.OneToOneField)
    if is_key and preparer(model_field.target_field, db) is None:
        return None
    prepare = model_field.get_db_prep_save
    if type(model_field) is models.DateTimeField:
        return _datetimepreparer(lambda value: prepare(value, db), db)
    return lambda value: prepare(value, db)


def _datetimepreparer(prepare: Callable, db) -> Callable:
    """get_db_prep_save of a DateTimeField, shortened for the aware datetimes the ORM reads.

    For an aware datetime, get_prep_value changes nothing and the backend's
    adapt_datetimefield_value does the rest: nothing on PostgreSQL (the driver takes it),
    on SQLite the text of the naive datetime in the connection's time zone. That is all
    done here directly: through the layers of calls in between, the two datetime columns
    of users and of licenses were the largest single cost of the writes on SQLite.
    """
    if db.vendor == "postgresql":
        shortcut = None
    elif db.vendor == "sqlite" and settings.USE_TZ:
        zone = db.timezone

        def shortcut(value):
            if value.tzinfo is datetime.UTC and zone is datetime.UTC:
                # The common case, in one call: isoformat(" ") is str() of the naive
                # datetime, followed by the offset, which for UTC is always "+00:00".
                return value.isoformat(" ")[:-6]
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


class SqlTable:
    """Plain SQL writes to one table, with the values prepared as the ORM would.

    The ORM's bulk_create builds a model instance per row and compiles every value through
    several layers of field methods; for a restore of many rows that was three quarters
    of the time. Here a row is a list of column values: inserts go out as one COPY per batch
    on PostgreSQL (in the binary format when every column allows it: a third of the
    client's time of the text format) and as one executemany on the others, updates as
    one executemany. `using` names the database (default: the default one).
    """

    def __init__(
        self, model: type[models.Model], attnames: Iterable[str], *, using: str | None = None
    ):
        self.connection = connections[using] if using else connection
        meta = model._meta
        quote = self.connection.ops.quote_name
        fields = [meta.get_field(name) for name in attnames]
        self.name = quote(meta.db_table)
        self.columns = [quote(f.column) for f in fields]
        self.preparers = [
            (position, prepare)
            for position, prepare in enumerate(preparer(f, self.connection) for f in fields)
            if prepare is not None
        ]
        self.binary = all(_binary_copyable(f) for f in fields)
        self._column_types: list[int] | None = None

    def prepared(self, rows: Iterable[list], *, owned: bool = False) -> list[list]:
        """Copies of `rows` (only the table's columns) in the driver's values; with `owned`
        (lists of exactly the table's columns, the caller's to change), `rows` itself."""
        width = len(self.columns)
        prepared = rows if owned and isinstance(rows, list) else [row[:width] for row in rows]
        for position, prepare in self.preparers:
            for row in prepared:
                row[position] = prepare(row[position])
        return prepared

    def insert(self, rows: Iterable[list], *, owned: bool = False) -> None:
        """Inserts `rows`; with `owned`, see prepared()."""
        rows = self.prepared(rows, owned=owned)
        if not rows:
            return
        columns = ", ".join(self.columns)
        with self.connection.cursor() as cursor:
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
        with self.connection.wrap_database_errors, cursor.copy(copy_sql) as copy:
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
        # The driver's own executemany, as COPY above: past Django's execute wrappers, one of
        # which (django-pghistory's context, in a request or a command) prepends its
        # variables to the parameters as if there were one row, and breaks a batch.
        with self.connection.cursor() as cursor, self.connection.wrap_database_errors:
            cursor.cursor.executemany(
                f"UPDATE {self.name} SET {assignments} WHERE {self.columns[0]} = %s",  # noqa: S608
                [[row[i] for i in positions] + [row[0]] for row in rows],
            )
