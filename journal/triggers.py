"""django-pghistory's row triggers, writing two more columns of every journal row: the
database role that made the change and, for an update, which columns it changed.

Both are taken inside PostgreSQL, so they hold for raw SQL and bulk updates as much as for a
model's save(): nothing in Python sees those changes.
"""

import pghistory
import pghistory.trigger
import pgtrigger
from django.core.exceptions import ImproperlyConfigured

# The columns whose values differ between the row before and after an update, by name.
CHANGED_COLUMNS = (
    "ARRAY(SELECT _pgh_old.key FROM jsonb_each(to_jsonb(OLD)) AS _pgh_old"
    " WHERE _pgh_old.value IS DISTINCT FROM (to_jsonb(NEW) -> _pgh_old.key)"
    " ORDER BY _pgh_old.key)"
)


class JournalTrigger(pghistory.trigger.Event):
    def get_func(self, model):
        func = super().get_func(model)
        insert = f'INSERT INTO "{self.event_model._meta.db_table}" ('
        values = ") VALUES ("
        sql = func.func
        # pghistory (pinned) writes one INSERT ... VALUES per row; anything else is a version
        # this code was not written for, and a journal without its roles would mislead.
        if self.level != pgtrigger.Row or sql.count(insert) != 1 or sql.count(values) != 1:
            raise ImproperlyConfigured(
                "journal: django-pghistory's trigger is not the one this app extends; "
                "pin the version in requirements.txt"
            )
        changed = CHANGED_COLUMNS if self.operation == pgtrigger.Update else "NULL"
        sql = sql.replace(insert, f'{insert}"pgh_db_role", "pgh_changed", ')
        sql = sql.replace(values, f"{values}CURRENT_USER, {changed}, ")
        return pgtrigger.Func(sql)


class _Journaled:
    """A pghistory row tracker whose trigger is a JournalTrigger."""

    def add_event_trigger(self, event_model):
        pgtrigger.register(
            JournalTrigger(
                event_model=event_model,
                label=self.label,
                name=self.trigger_name,
                row=self.row,
                operation=self.operation,
                condition=self.condition,
                level=self.level,
            )
        )(event_model.pgh_tracked_model)


class Insert(_Journaled, pghistory.InsertEvent):
    pass


class Update(_Journaled, pghistory.UpdateEvent):
    pass


class Delete(_Journaled, pghistory.DeleteEvent):
    pass


def trackers() -> tuple:
    """Inserts, updates and deletes; new instances for each model, as pghistory needs."""
    return (
        Insert(trigger_name="journal_insert"),
        Update(trigger_name="journal_update"),
        Delete(trigger_name="journal_delete"),
    )
