from django.apps import AppConfig
from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


def install_triggers(using, **kwargs):
    """After every migrate: each registered trigger whose tables all exist on `using`.

    Not pgtrigger's own install-on-migrate, which installs every trigger everywhere: a
    database migrated only in part (a restore drill's scratch database, which has the captured
    tables but no journal) would get triggers writing into tables it does not have.
    """
    import pgtrigger

    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    tables = set(connection.introspection.table_names())
    for model, trigger in pgtrigger.registered():
        event_model = getattr(trigger, "event_model", None)
        needed = {model._meta.db_table}
        if event_model is not None:
            needed.add(event_model._meta.db_table)
        if needed <= tables:
            trigger.install(model, database=using)


def define_trigger_ignore_setting(sender, connection, **kwargs):
    """Give every PostgreSQL session django-pgtrigger's `pgtrigger.ignore` setting, as an
    empty list: ignore no trigger.

    Each journal row trigger first reads that setting inside a PL/pgSQL exception block.
    Undefined, the read fails and the block's subtransaction rolls back, and every such
    rollback walks the transaction's whole queue of deferred trigger events: one per foreign
    key of every row written so far. A transaction writing many journaled rows (a restore
    of 100 000 users, an admin deleting thousands) then slows with the square of its size:
    a minute instead of seconds. Defined, the read succeeds; the journal records the same.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('pgtrigger.ignore', '{}', false)")


class JournalConfig(AppConfig):
    name = "journal"
    verbose_name = "Change journal"
    default_auto_field = "django.db.models.AutoField"

    def ready(self):
        post_migrate.connect(install_triggers, sender=self, dispatch_uid="journal.triggers")
        connection_created.connect(
            define_trigger_ignore_setting, dispatch_uid="journal.trigger_ignore_setting"
        )
