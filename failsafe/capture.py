"""The live database as a snapshot stream.

A snapshot, live or archived, is a sequence of sections, one per captured model in
dependency order. A section has a `ModelSpec` (the model label, its concrete columns with
the primary key first, and its many-to-many fields) and an iterator of rows in primary-key
order. A row is a list: the column values, then one sorted list of related primary keys per
many-to-many field. Every reader (archive, compare, restore) works on this one shape, which
is what lets compare and restore merge-join two snapshots without holding either in memory.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import django
from django.apps import apps
from django.contrib.sessions.models import Session
from django.db import connection, models, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from .conf import setting


@dataclass(frozen=True)
class ModelSpec:
    label: str
    fields: tuple[str, ...]
    m2m: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.fields + self.m2m

    def to_header(self) -> dict:
        return {"model": self.label, "fields": list(self.fields), "m2m": list(self.m2m)}

    @classmethod
    def from_header(cls, header: dict) -> ModelSpec:
        return cls(header["model"], tuple(header["fields"]), tuple(header.get("m2m", ())))


@dataclass
class Section:
    spec: ModelSpec
    rows: Iterator[list]


def captured_models() -> list[type[models.Model]]:
    return [apps.get_model(label) for label in setting("CAPTURE")]


def model_label(model: type[models.Model]) -> str:
    return model._meta.label_lower


def spec_for(model: type[models.Model]) -> ModelSpec:
    meta = model._meta
    pk = meta.pk.attname
    fields = [pk] + [f.attname for f in meta.concrete_fields if f.attname != pk]
    m2m = [f.name for f in meta.many_to_many if f.remote_field.through._meta.auto_created]
    return ModelSpec(model_label(model), tuple(fields), tuple(m2m))


def _plain(value):
    # PostgreSQL hands binary columns back as memoryview; everything else compares as is.
    return bytes(value) if isinstance(value, memoryview) else value


def _m2m_pairs(model, field_name) -> Iterator[tuple]:
    field = model._meta.get_field(field_name)
    through = field.remote_field.through
    source = field.m2m_field_name()
    target = field.m2m_reverse_field_name()
    src_col, dst_col = f"{source}_id", f"{target}_id"
    return (
        through._default_manager.order_by(src_col, dst_col)
        .values_list(src_col, dst_col)
        .iterator(chunk_size=setting("FETCH_SIZE"))
    )


def live_rows(model: type[models.Model], spec: ModelSpec | None = None) -> Iterator[list]:
    """Rows of `model` in primary-key order, each with its sorted many-to-many pks appended."""
    spec = spec or spec_for(model)
    base = (
        model._default_manager.order_by(spec.fields[0])
        .values_list(*spec.fields)
        .iterator(chunk_size=setting("FETCH_SIZE"))
    )
    # One ordered stream per many-to-many field, merged in as the parent rows go by.
    pair_streams = [_m2m_pairs(model, name) for name in spec.m2m]
    pending = [next(stream, None) for stream in pair_streams]
    for values in base:
        row = [_plain(v) for v in values]
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


def live_sections() -> Iterator[Section]:
    for model in captured_models():
        spec = spec_for(model)
        yield Section(spec, live_rows(model, spec))


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
        "Timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
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
