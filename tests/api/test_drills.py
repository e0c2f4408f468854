"""Restore drills through the API (POST/GET failsafe/drills/, the status) and the terminal."""

import pytest
from django.urls import reverse

from failsafe import services
from failsafe.models import AuditEvent, Drill
from failsafe.services.drills import NO_SAFE_BACKUP
from tests.factories import FAILSAFE_PASSWORD

DRILLS = reverse("api:drills")


@pytest.fixture
def safe_backup(actor, armed, population):
    backup = services.create_backup(actor=actor, reason="known good")
    return services.mark_safe(actor=actor, backup_id=backup.pk, password=FAILSAFE_PASSWORD)


def terminal(client, command):
    return client.post(reverse("api:terminal"), {"command": command}, format="json")


@pytest.mark.django_db
def test_post_runs_a_drill_of_the_newest_safe_backup_and_returns_it(api, safe_backup):
    response = api.post(DRILLS, {}, format="json")

    assert response.status_code == 201
    body = response.json()
    drill = Drill.objects.get()
    assert body["id"] == drill.pk and body["backup_id"] == str(safe_backup.id)
    assert body["outcome"] == "PASSED" and body["error"] is None
    assert body["rows_checked"] == 6 + 4  # root and five users, four licenses
    assert body["models_checked"]["accounts.user"] == {
        "expected": 6,
        "found": 6,
        "differences": 0,
        "examples": [],
    }
    assert body["started_by"] == "root" and body["started_at"].endswith("Z")
    assert AuditEvent.objects.get(action="failsafe.drill").source == AuditEvent.Source.API


@pytest.mark.django_db
def test_a_named_backup_is_drilled_and_the_list_shows_it(api, safe_backup):
    created = api.post(DRILLS, {"backup_id": str(safe_backup.id)[:8]}, format="json")
    assert created.status_code == 201

    listed = api.get(DRILLS)

    assert listed.status_code == 200
    [entry] = listed.json()["results"]
    assert entry == created.json()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        ({"backup_id": "nonsense"}, 404, "Invalid backup id: 'nonsense'"),
        (
            {"backup_id": "00000000-0000-0000-0000-000000000000"},
            404,
            "Backup not found: 00000000-0000-0000-0000-000000000000",
        ),
        ({}, 404, NO_SAFE_BACKUP),
        (["a list"], 400, "Malformed request: the body must be a JSON object"),
    ],
)
def test_bad_input_is_one_line_and_runs_nothing(api, population, body, code, detail):
    response = api.post(DRILLS, body, format="json")

    assert response.status_code == code
    assert response.json() == {"detail": detail}
    assert not Drill.objects.exists()


@pytest.mark.django_db
def test_only_superadmins_see_or_run_drills(role_clients, safe_backup):
    for role in ("anonymous", "user", "admin"):
        assert role_clients[role].get(DRILLS).status_code in (401, 403)
        assert role_clients[role].post(DRILLS, {}, format="json").status_code in (401, 403)
    assert not Drill.objects.exists()


@pytest.mark.django_db
def test_status_carries_the_last_proven_restorable_backup(api, actor, safe_backup):
    assert api.get(reverse("api:status")).json()["last_verified_restore"] is None

    drill = services.run_drill(actor=actor)
    proof = api.get(reverse("api:status")).json()["last_verified_restore"]

    assert proof["backup_id"] == str(safe_backup.id)
    assert proof["drill_id"] == drill.pk
    assert proof["rows_checked"] == 10
    assert 0 <= proof["age_seconds"] < 60 and proof["drilled_at"].endswith("Z")


@pytest.mark.django_db
def test_the_terminal_drills_with_or_without_an_id(api, safe_backup):
    answer = terminal(api, "failsafe drill")
    assert answer.status_code == 200
    body = answer.json()
    assert body["Success"] is True and body["Outcome"] == "PASSED"
    assert body["BackupId"] == str(safe_backup.id)
    assert [m["Model"] for m in body["Models"]] == [
        "auth.group",
        "accounts.user",
        "licensing.license",
    ]

    named = terminal(api, f"failsafe drill {str(safe_backup.id)[:8]}").json()
    assert named["Success"] is True and named["DrillId"] != body["DrillId"]
    assert Drill.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("line", "code", "error"),
    [
        (
            "failsafe drill nonsense",
            404,
            "Invalid backup ID format: give it as failsafe backups lists it",
        ),
        ("failsafe drill deadbeef extra", 400, "Usage: failsafe drill [<backup-id>]"),
        ("failsafe drill deadbeef", 404, "Backup not found: deadbeef"),
    ],
)
def test_the_terminal_refuses_a_bad_drill_line(api, safe_backup, line, code, error):
    answer = terminal(api, line)

    assert answer.status_code == code
    assert answer.json()["Success"] is False and answer.json()["Error"] == error
    assert not Drill.objects.exists()


@pytest.mark.django_db
def test_the_api_index_lists_drills(anonymous):
    entry = anonymous.get(reverse("api:root")).json()["entry_points"]["drills"]
    assert entry["url"] == DRILLS
