"""The server license's secrets cost what Django's argon2 asks for on a real server.

The rest of the suite hashes them at argon2's smallest cost (tests/hashers.py); this test
runs with the project's own PASSWORD_HASHERS, so a weaker production hash cannot go unseen.
"""

import pytest

from licensing import services
from licensing.models import ServerLicense
from raos import settings as project_settings
from tests.factories import SuperAdminFactory

pytestmark = pytest.mark.django_db

DJANGO_ARGON2 = "argon2$argon2id$v=19$m=102400,t=2,p=8$"


def test_the_passkey_and_failsafe_password_are_hashed_at_djangos_argon2_cost(settings):
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    passkey = services.issue_passkey()
    services.set_failsafe_password(password="a failsafe phrase 2291", user=SuperAdminFactory())

    stored = ServerLicense.objects.get()
    assert stored.passkey_hash.startswith(DJANGO_ARGON2)
    assert stored.failsafe_password_hash.startswith(DJANGO_ARGON2)
    assert services.passkey_is_valid(passkey)
    assert services.failsafe_password_is_valid("a failsafe phrase 2291")
    assert not services.failsafe_password_is_valid("a failsafe phrase 2292")
