from django.apps import AppConfig
from django.db import connections
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


class JournalConfig(AppConfig):
    name = "journal"
    verbose_name = "Change journal"
    default_auto_field = "django.db.models.AutoField"

    def ready(self):
        post_migrate.connect(install_triggers, sender=self, dispatch_uid="journal.triggers")
