import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.models import Role
from failsafe import keys
from failsafe import services as failsafe
from failsafe.models import AuditEvent
from licensing import services
from licensing.models import License
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

User = get_user_model()


def bootstrap(*extra):
    out = StringIO()
    call_command("raos_bootstrap", "--superadmin", "root", "--json", *extra, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture(autouse=True)
def _no_password_in_env(monkeypatch):
    monkeypatch.delenv("RAOS_SUPERADMIN_PASSWORD", raising=False)


def test_first_run_creates_the_superadmin_and_prints_the_secrets_once():
    printed = bootstrap()
    root = User.objects.get(username="root")
    assert (root.role, root.must_change_password) == (Role.SUPERADMIN, True)
    assert printed["SuperAdmin"]["Created"] is True
    assert root.check_password(printed["SuperAdmin"]["OneTimePassword"])
    assert services.passkey_is_valid(printed["ServerLicensePasskey"])
    assert printed["FailsafeKeysetCreated"] == settings.FAILSAFE_KEYSET_FILE


def test_the_superadmin_password_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAOS_SUPERADMIN_PASSWORD", "chosen by the operator 81")
    printed = bootstrap()
    assert printed["SuperAdmin"]["OneTimePassword"] is None
    assert User.objects.get(username="root").check_password("chosen by the operator 81")


def test_a_second_run_prints_no_passkey_and_creates_nothing():
    first = bootstrap()
    counts = (User.objects.count(), License.objects.count())
    second = bootstrap()
    assert second["ServerLicensePasskey"] is None
    assert second["FailsafeKeysetCreated"] is None
    assert second["SuperAdmin"] == {"Username": "root", "Created": False, "OneTimePassword": None}
    assert (User.objects.count(), License.objects.count()) == counts
    assert services.passkey_is_valid(first["ServerLicensePasskey"])


def test_rotate_passkey_prints_a_new_one_and_retires_the_old():
    old = bootstrap()["ServerLicensePasskey"]
    new = bootstrap("--rotate-passkey")["ServerLicensePasskey"]
    assert new not in (None, old)
    assert services.passkey_is_valid(new)
    assert not services.passkey_is_valid(old)


def test_demo_data_is_added_once():
    printed = bootstrap("--demo", "9")
    assert (printed["DemoUsersCreated"], printed["DemoLicensesCreated"]) == (9, 3)
    assert User.objects.filter(role=Role.USER).count() == 9
    assert License.objects.count() == 3

    again = bootstrap("--demo", "9")
    assert (again["DemoUsersCreated"], again["DemoLicensesCreated"]) == (0, 0)
    assert (User.objects.count(), License.objects.count()) == (10, 3)


def test_an_existing_user_of_another_role_is_not_made_superadmin():
    UserFactory(username="root", role=Role.ADMIN)
    with pytest.raises(CommandError, match="'root' exists and is not a SuperAdmin"):
        bootstrap()
    assert User.objects.get(username="root").role == Role.ADMIN
    assert not services.get_server_license().passkey_is_set


def test_text_output_shows_the_passkey_only_on_the_first_run():
    first, second = StringIO(), StringIO()
    call_command("raos_bootstrap", "--superadmin", "root", stdout=first)
    call_command("raos_bootstrap", "--superadmin", "root", stdout=second)
    passkey_pattern = r"SERVER-[A-Z2-9]{6}-[A-Z2-9]{6}-[A-Z2-9]{6}"
    assert "SuperAdmin created: root" in first.getvalue()
    assert len(re.findall(passkey_pattern, first.getvalue())) == 1
    assert re.search(passkey_pattern, second.getvalue()) is None
    assert "already issued" in second.getvalue()


def test_a_password_the_operator_chose_is_validated_and_need_not_be_replaced(monkeypatch):
    monkeypatch.setenv("RAOS_SUPERADMIN_PASSWORD", "12345678")
    with pytest.raises(CommandError, match="SuperAdmin password refused"):
        bootstrap()
    assert not User.objects.filter(username="root").exists()

    monkeypatch.setenv("RAOS_SUPERADMIN_PASSWORD", "chosen by the operator 81")
    bootstrap()
    assert User.objects.get(username="root").must_change_password is False


def test_the_keyset_is_created_once_and_its_creation_audited_as_the_system():
    assert bootstrap()["FailsafeKeysetCreated"] == settings.FAILSAFE_KEYSET_FILE
    bootstrap()
    created = AuditEvent.objects.get(action="failsafe.keys.create")
    assert (created.source, created.actor_username, created.outcome) == (
        "system",
        "system",
        "SUCCESS",
    )
    assert created.details["primary"] == keys.primary_key_id()


def test_with_backups_a_lost_keyset_is_never_replaced_and_a_wrong_one_is_named():
    bootstrap()
    root = User.objects.get(username="root")
    root.must_change_password = False
    root.save()
    backup = failsafe.create_backup(actor=failsafe.Actor(user=root))
    keyset_file = Path(settings.FAILSAFE_KEYSET_FILE)
    keyset_file.unlink()

    with pytest.raises(CommandError, match=f"need key\\(s\\) {backup.key_id}; a new keyset"):
        bootstrap()
    assert not keyset_file.exists()

    keys.ensure_keyset_file()  # someone made another keyset by hand
    before = keyset_file.read_text()
    printed = bootstrap()
    assert printed["FailsafeKeysetCreated"] is None
    assert printed["Notes"] == [
        f"The keyset lacks key {backup.key_id}, which 1 backup(s) need: "
        "import the key material (manage.py failsafe_keys import)"
    ]
    assert keyset_file.read_text() == before
    text = StringIO()
    call_command("raos_bootstrap", "--superadmin", "root", stdout=text)
    assert f"The keyset lacks key {backup.key_id}" in text.getvalue()


def test_the_first_superadmin_owns_the_license_and_make_owner_hands_it_over():
    from licensing.services import license_owner

    bootstrap()
    assert license_owner().username == "root"
    call_command(
        "raos_bootstrap", "--superadmin", "second", "--no-input", "--json", stdout=StringIO()
    )
    assert license_owner().username == "root"
    out = StringIO()
    call_command(
        "raos_bootstrap", "--superadmin", "second", "--make-owner", "--no-input", stdout=out
    )
    assert "second owns the server license now." in out.getvalue()
    assert license_owner().username == "second"
