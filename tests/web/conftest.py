import pytest

from failsafe import services
from tests.factories import FAILSAFE_PASSWORD


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here may take backups."""


@pytest.fixture
def root_client(client, superadmin):
    client.force_login(superadmin)
    return client


@pytest.fixture
def safe_backup(actor, armed, population):
    backup = services.create_backup(actor=actor, reason="known good")
    return services.mark_safe(actor=actor, backup_id=backup.pk, password=FAILSAFE_PASSWORD)
