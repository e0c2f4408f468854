"""The change journal: one row per insert, update and delete of each captured model (the
failsafe's FAILSAFE["CAPTURE"]: groups, users, licenses), written by a PostgreSQL trigger.

Because a trigger writes it, the journal records what no Python code sees: a change from
`manage.py shell`, a bulk `.update()`, raw SQL. Each row holds the record as it was after the
change (before it, for a delete), when (`pgh_created_at`, the transaction's time), the
database role that made the change (`pgh_db_role`), which columns an update changed
(`pgh_changed`) and, when the change came through a web request, the Django user
(`pgh_context`, from journal.middleware). A user's row holds the password hash exactly as
the users table does; whoever reads the journal names changed columns, never their values.

The rows are append-only (a trigger refuses updates and deletes of them). Installed only when
the default database is PostgreSQL (raos/settings.py).
"""

import pghistory
from django.contrib.auth.models import Group
from django.contrib.postgres.fields import ArrayField
from django.db import models
from pghistory.models import Event

from accounts.models import User
from licensing.models import License

from .triggers import trackers


class JournalEvent(Event):
    pgh_db_role = models.TextField(help_text="The database role that made the change.")
    pgh_changed = ArrayField(
        models.TextField(),
        null=True,
        help_text="The columns an update changed; null for inserts and deletes.",
    )

    class Meta:
        abstract = True


def _journal_of(model, name: str):
    return pghistory.create_event_model(
        model,
        *trackers(),
        model_name=name,
        app_label="journal",
        base_model=JournalEvent,
        # The tracked rows keep no reverse accessor to their journal.
        obj_field=pghistory.ObjForeignKey(related_name="+"),
        # The Django user and the URL, kept on the row itself.
        context_field=pghistory.ContextJSONField(),
        append_only=True,
    )


class GroupEvent(_journal_of(Group, "GroupEventBase")):
    pass


class UserEvent(_journal_of(User, "UserEventBase")):
    pass


class LicenseEvent(_journal_of(License, "LicenseEventBase")):
    pass
