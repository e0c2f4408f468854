"""The snapshot vocabulary every layer shares: the store, the engine, the services, the doors.

A snapshot, live or archived, is a sequence of sections, one per captured model in
dependency order. A section has a `ModelSpec` (the model label, its concrete columns with
the primary key first, and its many-to-many fields) and an iterator of rows in primary-key
order. A row is a list: the column values, then one sorted list of related primary keys per
many-to-many field. Every reader (archive, compare, restore) works on this one shape, which
is what lets compare and restore merge-join two snapshots without holding either in memory.

This module is a leaf: it imports nothing of the failsafe but its settings, so the store
can speak of snapshots without knowing the engine that produces them.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models

Row = list


@dataclass(frozen=True)
class ModelSpec:
    label: str
    fields: tuple[str, ...]
    m2m: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.fields + self.m2m

    def to_header(self) -> dict:
        # The archive formats store this header; it is part of their layout, not a rendering.
        return {"model": self.label, "fields": list(self.fields), "m2m": list(self.m2m)}

    @classmethod
    def from_header(cls, header: dict) -> ModelSpec:
        return cls(header["model"], tuple(header["fields"]), tuple(header.get("m2m", ())))


@dataclass
class Section:
    spec: ModelSpec
    rows: Iterator[Row]


@dataclass
class Snapshot:
    """One side of a comparison; `sections` is consumed once, in lockstep with the other."""

    name: str  # "live" or a backup id
    state: dict  # the captured SystemState
    sections: Iterable[Section]


def model_label(model: type[models.Model]) -> str:
    return model._meta.label_lower


# --- the name people know a record by ---------------------------------------------------


def natural_key_field(model: type[models.Model]) -> str | None:
    """The attname of the column people know a record of `model` by, or None for the pk.

    The user model's USERNAME_FIELD, else the first unique column that is not the primary
    key (a license's key, a group's name).
    """
    if model is get_user_model():
        return model._meta.get_field(model.USERNAME_FIELD).attname
    for model_field in model._meta.concrete_fields:
        if model_field.unique and not model_field.primary_key:
            return model_field.attname
    return None


def record_namer(spec: ModelSpec) -> Callable[[Row], str]:
    """A function naming a row of `spec` by its natural key; by its pk where it has none."""
    try:
        key_field = natural_key_field(apps.get_model(spec.label))
    except (LookupError, ValueError):
        key_field = None
    key_index = spec.fields.index(key_field) if key_field in spec.fields else None

    def name(row: Row) -> str:
        if key_index is None or row[key_index] in (None, ""):
            return str(row[0])
        return str(row[key_index])

    return name


def is_secret_column(name: str) -> bool:
    """Columns whose values are never shown, only said to have changed."""
    return name == "password" or name.endswith("_hash")


# --- values as text ----------------------------------------------------------------------

SECRET_KEY_WORDS = ("password", "passkey", "secret", "token", "key")
REDACTED = "[redacted]"


def iso(moment: datetime.datetime | None, *, timespec: str = "auto") -> str | None:
    """A moment as ISO 8601 in UTC with a Z, the one timestamp format users see."""
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_KEY_WORDS)


def printable(value) -> str:
    # PostgreSQL cannot store NUL characters, in text columns or in jsonb; a user can type one.
    return str(value).replace("\x00", "\ufffd")


def json_safe(value, *, redact: bool = False):
    """`value` as JSON that reads back identically; with `redact`, values under keys that
    look like secrets (password, passkey, secret, token, key) become "[redacted]"."""
    if isinstance(value, dict):
        return {
            str(key): REDACTED
            if redact and looks_secret(str(key))
            else json_safe(item, redact=redact)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [json_safe(item, redact=redact) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((json_safe(item, redact=redact) for item in value), key=str)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        # jsonb prints a large whole float (1e+20) as an integer, which would read back
        # as an int and hash differently.
        return int(value) if value.is_integer() else value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        # Raw bytes are likely key material; their size is all anyone needs to see.
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, uuid.UUID | decimal.Decimal | datetime.timedelta):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value), redact=redact)
    return str(value)
