import pytest
from django.core.cache import cache
from knox.models import AuthToken
from rest_framework.test import APIClient

from failsafe import services
from tests.factories import AdminFactory, UserFactory

CLIENT_IP = "203.0.113.7"


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here may take backups."""


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """The login throttle counts in the cache, which outlives a test."""
    cache.clear()


def token_client(user=None) -> APIClient:
    """An API client calling from CLIENT_IP, with a fresh knox token for `user` if given."""
    client = APIClient(REMOTE_ADDR=CLIENT_IP)
    if user is not None:
        _, token = AuthToken.objects.create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


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
def backup(actor):
    return services.create_backup(actor=actor, reason="baseline")
