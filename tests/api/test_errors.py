"""Whatever a caller sends, the answer is a 4xx with a reason, never a server error."""

import uuid

import pytest
from django.urls import reverse

from failsafe.models import AuditEvent, Backup
from licensing.models import ServerLicense
from tests.factories import FAILSAFE_PASSWORD

from .conftest import CLIENT_IP

MALFORMED_IDS = ["not-a-uuid", "12345", "0" * 33, "x" * 300, "live%00", "%E2%98%83", "..%2F.."]
BACKUP_URLS = ["api:backup", "api:backup-mark-safe", "api:backup-compare", "api:backup-restore"]
METHODS = {"api:backup": "get", "api:backup-compare": "get"}


def call_backup_url(client, name, backup_id, data=None):
    url = reverse(name, kwargs={"backup_id": "ID"}).replace("ID", backup_id)
    method = METHODS.get(name, "post")
    if method == "get":
        return client.get(url)
    return client.post(url, data or {"dry_run": True}, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize("name", BACKUP_URLS)
@pytest.mark.parametrize("backup_id", MALFORMED_IDS)
def test_a_malformed_backup_id_is_404(api, name, backup_id):
    response = call_backup_url(api, name, backup_id)
    assert response.status_code == 404
    assert response.json()["detail"]


@pytest.mark.django_db
def test_a_malformed_backup_id_gets_the_services_message(api):
    response = api.get(reverse("api:backup", kwargs={"backup_id": "not-a-uuid"}))
    assert response.json() == {"detail": "Invalid backup id: 'not-a-uuid'"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/api/nothing/", "/api/failsafe/status", "/api/failsafe/backups/x/y/z/"]
)
def test_an_unknown_api_address_is_a_json_404(api, path):
    for method in ("get", "post"):
        response = getattr(api, method)(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


@pytest.mark.django_db
@pytest.mark.parametrize("name", BACKUP_URLS)
def test_an_unknown_backup_id_is_404(api, name):
    unknown = str(uuid.uuid4())
    response = call_backup_url(api, name, unknown)
    assert response.status_code == 404
    assert response.json() == {"detail": f"Backup not found: {unknown}"}


@pytest.mark.django_db
@pytest.mark.parametrize("against", ["not-a-uuid", str(uuid.UUID(int=1))])
def test_comparing_against_a_bad_backup_id_is_404(api, backup, against):
    url = reverse("api:backup-compare", kwargs={"backup_id": backup.id})
    assert api.get(url, {"against": against}).status_code == 404


@pytest.mark.django_db
def test_comparing_live_against_itself_is_400(api):
    url = reverse("api:backup-compare", kwargs={"backup_id": "live"})
    response = api.get(url, {"against": "live"})
    assert response.status_code == 400
    assert "against itself" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["api:backup-mark-safe", "api:backup-restore"])
def test_a_failed_backup_cannot_be_marked_safe_or_restored(api, armed, name):
    failed = Backup.objects.create(type="MANUAL", status=Backup.Status.FAILED, error="disk full")
    response = call_backup_url(api, name, str(failed.id))
    assert response.status_code == 409
    assert "failed" in response.json()["detail"]
    assert not Backup.objects.get(pk=failed.pk).is_safe


BAD_BODIES = {
    "api:backups": [
        {"type": "EMERGENCY"},
        {"type": "manual!"},
        {"type": ["MANUAL"]},
        {"reason": "r" * 1001},
        {"reason": {"nested": True}},
        {"reason": "nul\x00byte"},
        ["MANUAL"],
        "MANUAL",
    ],
    "api:trigger": [
        {},
        {"passkey": ""},
        {"passkey": None},
        {"passkey": {"a": 1}},
        {"passkey": "k" * 1025},
        {"passkey": "key", "reason": "r" * 1001},
        [],
    ],
    "api:password": [
        {},
        {"password": ""},
        {"password": True},
        {"password": "p" * 1025},
        {"password": "long-enough-phrase", "current_password": ["x"]},
        {"password": "long\x00enough-phrase"},
    ],
    "api:terminal": [
        {"command": ["failsafe", "status"]},
        {"command": None},
        {"command": "failsafe status", "failsafe_password": "p" * 1025},
        {"command": "failsafe\x00status"},
        [],
    ],
}
BODY_METHODS = {"api:password": "put"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "body"),
    [(name, body) for name, bodies in BAD_BODIES.items() for body in bodies],
)
def test_a_malformed_body_is_400(api, name, body):
    method = BODY_METHODS.get(name, "post")
    response = getattr(api, method)(reverse(name), body, format="json")
    assert response.status_code == 400, response.content
    assert not Backup.objects.exists()
    # A malformed body never reaches the service, so nothing counts against the account.
    assert not AuditEvent.objects.filter(outcome="DENIED").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {"dry_run": "maybe"},
        {"dry_run": [True]},
        {"allow_cascade": {}},
        {"failsafe_password": ["a", "list"]},
        {"failsafe_password": True},
    ],
)
def test_a_malformed_restore_body_is_400(api, backup, body):
    url = reverse("api:backup-restore", kwargs={"backup_id": backup.id})
    response = api.post(url, body, format="json")
    assert response.status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["api:backups", "api:trigger", "api:terminal"])
@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        ('{"reason": ', "application/json"),
        ("\xff\xfe", "application/json"),
        ("[1, 2", "application/json"),
        ("reason=x", "text/plain"),
    ],
)
def test_a_body_that_does_not_parse_is_4xx(api, name, payload, content_type):
    response = api.generic("POST", reverse(name), payload.encode("latin-1"), content_type)
    assert response.status_code in (400, 415)
    assert response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "query"),
    [
        ("api:backups", {"type": "BOGUS"}),
        ("api:backups", {"safe": "maybe"}),
        ("api:backups", {"type": "nul\x00"}),
        ("api:audit", {"outcome": "MAYBE"}),
        ("api:audit", {"actor": "a" * 151}),
        ("api:audit", {"action": "nul\x00"}),
        ("api:audit", {"source": "carrier pigeon"}),
    ],
)
def test_a_bad_query_parameter_is_400(api, name, query):
    assert api.get(reverse(name), query).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["0", "abc", "999", "-1"])
def test_a_page_that_does_not_exist_is_404(api, page):
    response = api.get(reverse("api:backups"), {"page": page})
    assert response.status_code == 404
    assert response.json()["detail"]


# --- secrets -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_wrong_passkey_is_403_and_audited_with_the_clients_ip(api, armed):
    response = api.post(
        reverse("api:trigger"),
        {"passkey": "guessed-passkey"},
        format="json",
        HTTP_X_FORWARDED_FOR="198.51.100.99",
    )

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid server license passkey"}
    assert not Backup.objects.exists()
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.outcome, event.source) == ("failsafe.trigger", "DENIED", "api")
    assert event.actor_username == "root"
    # The peer's address, not the one the client wrote into X-Forwarded-For.
    assert event.ip_address == CLIENT_IP
    assert "guessed-passkey" not in str(event.details)


@pytest.mark.django_db
def test_trigger_before_the_failsafe_password_is_set_is_409(api, passkey):
    response = api.post(reverse("api:trigger"), {"passkey": passkey}, format="json")
    assert response.status_code == 409
    assert response.json() == {"detail": "Failsafe password not set"}


@pytest.mark.django_db
def test_wrong_passkeys_lock_the_trigger_with_429(api, armed, settings):
    settings.FAILSAFE = {"LOCKOUT_THRESHOLD": 3}
    for _ in range(3):
        response = api.post(reverse("api:trigger"), {"passkey": "guess"}, format="json")
        assert response.status_code == 403

    locked = api.post(reverse("api:trigger"), {"passkey": armed}, format="json")

    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.json()["detail"]
    assert not Backup.objects.exists()
    lockouts = api.get(reverse("api:status")).json()["lockouts"]
    assert [(lock["action"], lock["failures"]) for lock in lockouts] == [("failsafe.trigger", 3)]
    assert lockouts[0]["username"] == "root"


@pytest.mark.django_db
def test_wrong_failsafe_passwords_lock_the_restore_with_429(api, armed, backup, settings):
    settings.FAILSAFE = {"LOCKOUT_THRESHOLD": 2}
    url = reverse("api:backup-restore", kwargs={"backup_id": backup.id})
    for _ in range(2):
        response = api.post(url, {"failsafe_password": "guess"}, format="json")
        assert response.status_code == 403

    locked = api.post(url, {"failsafe_password": FAILSAFE_PASSWORD}, format="json")

    assert locked.status_code == 429
    assert Backup.objects.count() == 1  # no pre-restore backup: nothing was attempted


@pytest.mark.django_db
def test_a_restore_without_the_password_is_403(api, armed, backup):
    url = reverse("api:backup-restore", kwargs={"backup_id": backup.id})
    response = api.post(url, {}, format="json")
    assert response.status_code == 403
    assert Backup.objects.count() == 1


@pytest.mark.django_db
def test_a_password_change_with_a_wrong_current_one_leaves_the_old_in_place(api, armed):
    stored = ServerLicense.objects.get().failsafe_password_hash
    response = api.put(
        reverse("api:password"),
        {"password": "Another-Failsafe-Phrase-7", "current_password": "guess"},
        format="json",
    )
    assert response.status_code == 403
    assert ServerLicense.objects.get().failsafe_password_hash == stored
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.outcome, event.ip_address) == (
        "failsafe.setpassword",
        "DENIED",
        CLIENT_IP,
    )


@pytest.mark.django_db
def test_only_the_listed_form_of_an_id_or_a_unique_prefix_names_a_backup(api, backup):
    listed = str(backup.id)
    for spelling in (
        listed.upper(),
        "{" + listed + "}",
        f"urn:uuid:{listed}",
        listed.replace("-", ""),
        listed[:7],
    ):
        response = api.get(
            reverse("api:backup", kwargs={"backup_id": "ID"}).replace("ID", spelling)
        )
        assert response.status_code == 404, spelling
        assert response.json()["detail"].startswith("Invalid backup id")
    for prefix in (listed[:8], listed[:13], listed[:9]):
        found = api.get(reverse("api:backup", kwargs={"backup_id": "ID"}).replace("ID", prefix))
        assert found.status_code == 200, prefix
        assert found.json()["id"] == listed


@pytest.mark.django_db
def test_a_prefix_naming_several_backups_is_refused(api, actor):
    from failsafe.models import Backup

    first = Backup.objects.create(id=uuid.UUID("abcdef01-0000-4000-8000-000000000001"))
    Backup.objects.create(id=uuid.UUID("abcdef01-0000-4000-8000-000000000002"))
    response = api.get(reverse("api:backup", kwargs={"backup_id": "abcdef01"}))
    assert response.status_code == 404
    assert "names several backups" in response.json()["detail"]
    unique = api.get(
        reverse("api:backup", kwargs={"backup_id": "abcdef01-0000-4000-8000-0000000000"})
    )
    assert unique.status_code == 404  # still two
    Backup.objects.exclude(pk=first.pk).delete()
    one = api.get(reverse("api:backup", kwargs={"backup_id": "abcdef01"}))
    assert one.json()["id"] == str(first.id)


def test_the_api_root_lists_its_entry_points(anonymous):
    response = anonymous.get("/api/")
    assert response.status_code == 200
    entries = response.json()["entry_points"]
    assert entries["status"]["url"] == "/api/failsafe/status/"
    assert entries["restore"]["url"] == "/api/failsafe/backups/{id}/restore/"
    assert entries["token"]["url"] == "/api/auth/token/"
    # Every entry point it lists answers (here: 401 without credentials, never 404).
    for name in ("status", "backups", "audit"):
        assert anonymous.get(entries[name]["url"]).status_code == 401
