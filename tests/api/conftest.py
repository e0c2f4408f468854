import pytest
from knox.models import AuthToken
from rest_framework.test import APIClient

from failsafe import services
from failsafe.keys import ensure_keyset_file
from failsafe.models import AuditEvent
from licensing import services as licensing
from tests.factories import AdminFactory, LicenseFactory, SuperAdminFactory, UserFactory

FAILSAFE_PASSWORD = "Unusual-Failsafe-Phrase-42"
CLIENT_IP = "203.0.113.7"


@pytest.fixture(autouse=True)
def _keyset():
    """As raos_bootstrap does on a real server: an archive keyset exists before any backup."""
    ensure_keyset_file()


def token_client(user=None) -> APIClient:
    """An API client calling from CLIENT_IP, with a fresh knox token for `user` if given."""
    client = APIClient(REMOTE_ADDR=CLIENT_IP)
    if user is not None:
        _, token = AuthToken.objects.create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def superadmin(db):
    return SuperAdminFactory(username="root")


@pytest.fixture
def api(superadmin) -> APIClient:
    return token_client(superadmin)


@pytest.fixture
def anonymous(db) -> APIClient:
    return token_client()


@pytest.fixture
def role_clients(superadmin):
    return {
        "anonymous": token_client(),
        "user": token_client(UserFactory(username="plain")),
        "admin": token_client(AdminFactory(username="staff")),
        "superadmin": token_client(superadmin),
    }


@pytest.fixture
def cli_actor(superadmin):
    """The same SuperAdmin acting from the command line, to set things up."""
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
def backup(cli_actor):
    return services.create_backup(actor=cli_actor, reason="baseline")


@pytest.fixture
def population(db):
    """Five users besides the SuperAdmin, and four licenses."""
    users = [UserFactory(username=name) for name in ("alice", "bob", "carol", "dave", "erin")]
    licenses = [LicenseFactory(owner=users[i]) for i in range(4)]
    return users, licenses
