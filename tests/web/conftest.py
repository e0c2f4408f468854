import pytest

from failsafe import services


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here may take backups."""


@pytest.fixture
def root_client(client, superadmin):
    client.force_login(superadmin)
    return client


@pytest.fixture
def safe_backup(actor, population):
    backup = services.create_backup(actor=actor, reason="known good")
    return services.mark_safe(actor=actor, backup_id=backup.pk)
