"""The change journal (the `journal` app, PostgreSQL only), read for an investigation.

Between two backups, the journal's triggers record every insert, update and delete of the
captured models with the database role and the time, and the Django user when the change
came through a web request: so a change from the shell, a bulk `.update()` or raw SQL still
has someone on record. Where the app is not installed (SQLite), there is no journal:
`available()` says so and `entries()` returns None.

The failsafe knows the journal only by its app label and its models' `pgh_*` columns, and
hands back plain data. It names the columns a change touched, never their values: a user's
journal row holds the password hash as the users table does, and that stays in the database.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass, field

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.models import Q

from . import capture
from .snapshot import model_label

APP_LABEL = "journal"
# The most entries one investigation lists; the rest are counted.
ENTRIES_AT_MOST = 200

INSERT = "insert"
UPDATE = "update"
DELETE = "delete"


@dataclass(frozen=True)
class Entry:
    when: datetime.datetime
    operation: str  # INSERT, UPDATE or DELETE
    target: str  # "<model label> <natural key>"
    database_role: str
    username: str = ""  # the Django user of the request that made it; "" when none did
    columns: tuple[str, ...] = ()  # the fields an update changed, by name

    @property
    def who(self) -> str:
        return self.username or f"database role {self.database_role}"

    @property
    def what(self) -> str:
        if self.operation == UPDATE and self.columns:
            return f"{UPDATE}: {', '.join(self.columns)}"
        return self.operation


@dataclass
class JournalReport:
    """The journal's entries on the records an investigation looked at, oldest first."""

    entries: list[Entry] = field(default_factory=list)
    omitted: int = 0  # entries beyond ENTRIES_AT_MOST
    # Why the journal could not be read (its tables missing, the database failing): the
    # investigation goes on without it and says so.
    problem: str = ""


def available(using: str = DEFAULT_DB_ALIAS) -> bool:
    return apps.is_installed(APP_LABEL) and connections[using].vendor == "postgresql"


def attributed(username: str):
    """A context in which the journal names `username` for the changes made (a command's
    actor); nothing where there is no journal."""
    if not available():
        return contextlib.nullcontext()
    import pghistory  # only where the journal is installed

    return pghistory.context(username=username)


def _event_models() -> dict[str, type]:
    """The journal's event model of each tracked model, by the tracked model's label."""
    return {
        model_label(event_model.pgh_tracked_model): event_model
        for event_model in apps.get_app_config(APP_LABEL).get_models()
        if getattr(event_model, "pgh_tracked_model", None) is not None
    }


def entries(
    *, since: datetime.datetime, records: dict[tuple[str, str], str]
) -> JournalReport | None:
    """What the journal holds since `since` on `records` ((model label, pk as text) ->
    natural key), oldest first; None where there is no journal."""
    if not available():
        return None
    if not records:
        return JournalReport()
    try:
        # In a savepoint: a failed read must not break the transaction it runs in.
        with transaction.atomic():
            found, total = _read(since, records)
    except DatabaseError as exc:
        # The database's first line names what failed; the lines after it quote the query.
        first_line = " ".join(str(exc).strip().split("\n")[0].split())[:200]
        return JournalReport(
            problem=f"The change journal could not be read: {type(exc).__name__}: {first_line}"
        )
    found.sort(key=lambda entry: entry.when)
    entries = found[:ENTRIES_AT_MOST]
    return JournalReport(entries=entries, omitted=total - len(entries))


def _read(since: datetime.datetime, records: dict[tuple[str, str], str]) -> tuple[list, int]:
    found: list[Entry] = []
    total = 0
    for label, event_model in _event_models().items():
        pks = [pk for record_label, pk in records if record_label == label]
        if not pks:
            continue
        rows = event_model.objects.filter(pgh_obj_id__in=pks, pgh_created_at__gte=since)
        total += rows.count()
        field_names = {f.column: f.name for f in event_model.pgh_tracked_model._meta.fields}
        for row in rows.order_by("pgh_created_at", "pgh_id").values(
            "pgh_created_at", "pgh_label", "pgh_obj_id", "pgh_db_role", "pgh_changed", "pgh_context"
        )[:ENTRIES_AT_MOST]:
            found.append(
                Entry(
                    when=row["pgh_created_at"],
                    operation=row["pgh_label"],
                    target=f"{label} {_name(records, label, row['pgh_obj_id'])}",
                    database_role=row["pgh_db_role"],
                    username=_username(row["pgh_context"]),
                    columns=tuple(
                        field_names.get(column, column) for column in row["pgh_changed"] or ()
                    ),
                )
            )
    return found, total


def _name(records: dict[tuple[str, str], str], label: str, pk) -> str:
    return records.get((label, str(pk)), f"#{pk}")


def _username(context) -> str:
    """The Django user a journal row's context names: by name (journal.middleware, a
    command), else by pk (a user set by the API's authentication after the middleware)."""
    if not isinstance(context, dict):
        return ""
    if context.get("username"):
        return str(context["username"])
    pk = context.get("user")
    if pk is None:
        return ""
    user_model = get_user_model()
    name = (
        user_model.objects.filter(pk=pk).values_list(user_model.USERNAME_FIELD, flat=True).first()
    )
    return str(name) if name is not None else f"user #{pk}"


def touched_by(*, username: str, since: datetime.datetime) -> dict[tuple[str, str], int] | None:
    """The records the journal says the Django user `username` changed since `since`:
    (model label, "#pk") -> how many entries; None where there is no journal. A deleted
    user still matches by the name its rows keep."""
    if not available():
        return None
    user_model = get_user_model()
    pk = (
        user_model.objects.filter(**{user_model.USERNAME_FIELD: username})
        .values_list("pk", flat=True)
        .first()
    )
    by_user = Q(pgh_context__username=username)
    if pk is not None:
        by_user |= Q(pgh_context__user=pk)
    found: dict[tuple[str, str], int] = {}
    with transaction.atomic():
        for label, event_model in _event_models().items():
            rows = event_model.objects.filter(by_user, pgh_created_at__gte=since)
            for obj_id in rows.values_list("pgh_obj_id", flat=True):
                key = (label, f"#{obj_id}")
                found[key] = found.get(key, 0) + 1
    return found


def rows_at(
    *, spec, pks: list, after: datetime.datetime, at: datetime.datetime
) -> dict[str, list | None] | None:
    """Each record of `pks` (model `spec`) as the journal last saw it between `after`
    (excluded) and `at` (included), by its pk's text: its columns in `spec.fields` as
    capture reads them (no many-to-many: the journal has none), or None when the last
    change there deleted it. A record with no entry in that span is left out. None where
    there is no journal or it does not cover the model."""
    if not available():
        return None
    event_model = _event_models().get(spec.label)
    if event_model is None:
        return None
    found: dict[str, list | None] = {}
    query = (
        event_model.objects.filter(
            pgh_obj_id__in=list(pks), pgh_created_at__gt=after, pgh_created_at__lte=at
        )
        .order_by("pgh_obj_id", "-pgh_created_at", "-pgh_id")
        .distinct("pgh_obj_id")
    )
    newest = {
        str(obj_id): (pgh_id, label)
        for pgh_id, obj_id, label in query.values_list("pgh_id", "pgh_obj_id", "pgh_label")
    }
    kept = [pgh_id for pgh_id, label in newest.values() if label != DELETE]
    rows = {}
    if kept:
        by_event = event_model.objects.filter(pgh_id__in=kept)
        for block in capture.row_blocks(by_event, spec.fields, stream=False):
            for row in block:
                rows[str(row[0])] = row
    for key, (_pgh_id, label) in newest.items():
        found[key] = None if label == DELETE else rows[key]
    return found
