"""Every failsafe endpoint is for SuperAdmins: anonymous callers get 401, other roles 403."""

import pytest
from django.urls import reverse

from failsafe.models import Backup
from licensing.services import get_server_license
from tests.factories import FAILSAFE_PASSWORD


def _backup_url(name):
    return lambda backup: reverse(name, kwargs={"backup_id": backup.id})


# (method, url from the backup, body from the passkey, SuperAdmin's status)
ENDPOINTS = {
    "status": ("get", lambda b: reverse("api:status"), None, 200),
    "backups-list": ("get", lambda b: reverse("api:backups"), None, 200),
    "backups-create": (
        "post",
        lambda b: reverse("api:backups"),
        lambda key: {"type": "MANUAL", "reason": "by hand"},
        201,
    ),
    "backup-detail": ("get", _backup_url("api:backup"), None, 200),
    "mark-safe": (
        "post",
        _backup_url("api:backup-mark-safe"),
        lambda key: {"failsafe_password": FAILSAFE_PASSWORD},
        200,
    ),
    "compare": ("get", _backup_url("api:backup-compare"), None, 200),
    "restore": (
        "post",
        _backup_url("api:backup-restore"),
        lambda key: {"failsafe_password": FAILSAFE_PASSWORD},
        200,
    ),
    "trigger": ("post", lambda b: reverse("api:trigger"), lambda key: {"passkey": key}, 201),
    "password": (
        "put",
        lambda b: reverse("api:password"),
        lambda key: {
            "password": "Another-Failsafe-Phrase-7",
            "current_password": FAILSAFE_PASSWORD,
        },
        200,
    ),
    "audit": ("get", lambda b: reverse("api:audit"), None, 200),
    "terminal": (
        "post",
        lambda b: reverse("api:terminal"),
        lambda key: {"command": "failsafe status"},
        200,
    ),
}
REFUSED = {"anonymous": 401, "user": 403, "admin": 403}


def _call(client, endpoint, backup, passkey):
    method, url, body, _ = ENDPOINTS[endpoint]
    kwargs = {"format": "json", "data": body(passkey)} if body else {}
    return getattr(client, method)(url(backup), **kwargs)


@pytest.mark.django_db
@pytest.mark.parametrize("role", list(REFUSED))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_only_a_superadmin_gets_in(role_clients, backup, endpoint, role):
    backups_before = Backup.objects.count()
    # No failsafe password is set: a request that got through would set one.
    password_hash = get_server_license().failsafe_password_hash

    response = _call(role_clients[role], endpoint, backup, "SERVER-NOT-CHECKED")

    assert response.status_code == REFUSED[role], response.content
    assert response.json()["detail"]
    if role == "anonymous":
        assert response["WWW-Authenticate"] == "Token"
    # Refused means nothing happened.
    assert Backup.objects.count() == backups_before
    assert not Backup.objects.get(pk=backup.pk).is_safe
    assert get_server_license().failsafe_password_hash == password_hash


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_a_superadmin_is_served(role_clients, armed, backup, endpoint):
    response = _call(role_clients["superadmin"], endpoint, backup, armed)
    assert response.status_code == ENDPOINTS[endpoint][3], response.content


@pytest.mark.django_db
def test_a_deactivated_superadmins_token_stops_working(role_clients, superadmin):
    superadmin.is_active = False
    superadmin.save(update_fields=["is_active"])
    response = role_clients["superadmin"].get(reverse("api:status"))
    assert response.status_code == 401


@pytest.mark.django_db
def test_a_superadmin_browser_session_works_too(client, superadmin):
    client.force_login(superadmin)
    response = client.get(reverse("api:status"))
    assert response.status_code == 200
    assert response.json()["failsafe_password_set"] is False


@pytest.mark.django_db
def test_session_writes_need_the_csrf_token(superadmin):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(superadmin)
    response = browser.post(
        reverse("api:backups"), {"reason": "forged"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Backup.objects.exists()
