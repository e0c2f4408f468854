import pytest

from failsafe import services
from failsafe.keys import ensure_keyset_file
from failsafe.models import AuditEvent
from licensing import services as licensing
from tests.factories import LicenseFactory, SuperAdminFactory, UserFactory

FAILSAFE_PASSWORD = "Unusual-Failsafe-Phrase-42"


@pytest.fixture(autouse=True)
def _keyset():
    """As raos_bootstrap does on a real server: an archive keyset exists before any backup."""
    ensure_keyset_file()


@pytest.fixture
def superadmin(db):
    return SuperAdminFactory(username="root")


@pytest.fixture
def root_client(client, superadmin):
    client.force_login(superadmin)
    return client


@pytest.fixture
def actor(superadmin):
    return services.Actor(user=superadmin, source=AuditEvent.Source.CLI)


@pytest.fixture
def passkey(db):
    return licensing.issue_passkey()


@pytest.fixture
def armed(superadmin, passkey):
    """A failsafe ready for use: passkey issued, failsafe password set."""
    licensing.set_failsafe_password(password=FAILSAFE_PASSWORD, user=superadmin)
    return passkey


@pytest.fixture
def population(db):
    """Five users besides the SuperAdmin, four of them with a license."""
    users = [UserFactory(username=name) for name in ("alice", "bob", "carol", "dave", "erin")]
    licenses = [LicenseFactory(owner=users[i]) for i in range(4)]
    return users, licenses


@pytest.fixture
def safe_backup(actor, population):
    backup = services.create_backup(actor=actor, reason="known good")
    return services.mark_safe(actor=actor, backup_id=backup.pk)
