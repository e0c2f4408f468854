"""The raw passkey and failsafe password exist only in the caller's hands, never in a table."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from licensing import services
from licensing.models import ServerLicense
from tests.factories import SuperAdminFactory

pytestmark = pytest.mark.django_db

FAILSAFE_PASSWORD = "raw failsafe phrase 4471"


def _every_stored_value():
    """Every value in every column of every table, as text."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, memoryview):
                        value = value.tobytes()
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    yield str(value)


def test_raw_secrets_appear_nowhere_in_the_database(monkeypatch):
    monkeypatch.delenv("RAOS_SUPERADMIN_PASSWORD", raising=False)
    out = StringIO()
    call_command("raos_bootstrap", "--superadmin", "root", "--json", stdout=out)
    printed = json.loads(out.getvalue())
    passkey = printed["ServerLicensePasskey"]
    one_time_password = printed["SuperAdmin"]["OneTimePassword"]
    services.set_failsafe_password(password=FAILSAFE_PASSWORD, user=SuperAdminFactory())

    server_license = ServerLicense.objects.get()
    assert server_license.passkey_hash.startswith("argon2")
    assert server_license.failsafe_password_hash.startswith("argon2")

    stored = list(_every_stored_value())
    # The scan does see the server license row, so an empty result would not pass it.
    assert server_license.passkey_hash in stored
    for raw in (passkey, FAILSAFE_PASSWORD, one_time_password):
        assert not any(raw in value for value in stored)
