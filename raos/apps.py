from django.apps import AppConfig
from django.db.backends.signals import connection_created


def _private_sqlite_file(sender, connection, **kwargs) -> None:
    """The embedded database holds every account's password hash: readable by this
    process's user only, like the archives and the keyset."""
    if connection.vendor != "sqlite":
        return
    from pathlib import Path

    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    if path.exists() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


class RaosConfig(AppConfig):
    name = "raos"
    verbose_name = "RaOS project"

    def ready(self) -> None:
        connection_created.connect(_private_sqlite_file, dispatch_uid="raos.private_sqlite")
