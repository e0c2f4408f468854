"""The API's retention endpoints: the plan (a dry run), pin/unpin, acknowledge."""

import pytest
from django.urls import reverse

from failsafe.models import AuditEvent, Backup
from tests.factories import FAILSAFE_PASSWORD
from tests.failsafe.test_retention import HOUR, LAST, extra, hourly_history, only

from .test_schema import CONFORMANCE, openapi, token_header  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

RETENTION = reverse("api:retention")


def pin_url(backup) -> str:
    return reverse("api:backup-pin", kwargs={"backup_id": str(backup.pk)})


def acknowledge_url(backup) -> str:
    return reverse("api:backup-acknowledge", kwargs={"backup_id": str(backup.pk)})


@pytest.fixture
def history(settings):
    hourly_history(first=LAST - 5 * HOUR)
    settings.FAILSAFE = {"RETENTION": only(keep_last=2)}
    return Backup.objects.order_by("-created_at")


def test_the_plan_is_a_dry_run_in_snake_case(api, history):
    before = Backup.objects.count()

    response = api.get(RETENTION)

    assert response.status_code == 200
    body = response.json()
    assert (body["dry_run"], body["keep"], body["forget"]) == (True, 2, 4)
    assert body["message"] == "Dry run, nothing was changed: 2 backups would be kept, 4 forgotten"
    assert body["policy"]["keep_last"] == 2
    assert body["policy"]["time_zone"] == "UTC"
    assert body["policy"]["description"].startswith("keep 2 last backups")
    assert body["backups"][0] == {
        "backup_id": str(history[0].pk),
        "created_at": "2026-12-31T23:00:00Z",
        "type": "SCHEDULED",
        "status": "COMPLETE",
        "is_safe": False,
        "pinned": False,
        "reviewed_at": None,
        "decision": "keep",
        "reasons": ["last 2"],
    }
    assert [entry["decision"] for entry in body["backups"]] == ["keep"] * 2 + ["forget"] * 4
    assert Backup.objects.count() == before
    event = AuditEvent.objects.filter(action="failsafe.prune").last()
    assert (event.source, event.details["dry_run"]) == ("api", True)


def test_the_plan_is_for_superadmins_only(role_clients, history):
    for role in ("anonymous", "user", "admin"):
        response = role_clients[role].get(RETENTION)
        assert response.status_code in (401, 403)
        assert set(response.json()) == {"detail"}


def test_a_bad_policy_is_one_line_of_json(api, history, settings):
    settings.FAILSAFE = {"RETENTION": {"keep_daily": "seven"}}
    response = api.get(RETENTION)
    assert response.status_code == 500
    assert response.json() == {
        "detail": "Retention setting keep_daily must be a whole number, 0 (off) or more, or -1 "
        "(every one); it is 'seven'"
    }


def test_pin_and_unpin(api, armed, history):
    target = history[4]

    pinned = api.post(pin_url(target), {}, format="json")
    assert pinned.status_code == 200
    assert pinned.json()["pinned"] is True
    assert [d for d in api.get(RETENTION).json()["backups"] if d["backup_id"] == str(target.pk)][0][
        "reasons"
    ] == ["pinned"]

    refused = api.post(pin_url(target), {"pinned": False}, format="json")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Invalid failsafe password"}
    wrong = api.post(pin_url(target), {"pinned": False, "failsafe_password": "x"}, format="json")
    assert wrong.status_code == 403
    target.refresh_from_db()
    assert target.pinned

    unpinned = api.post(
        pin_url(target), {"pinned": False, "failsafe_password": FAILSAFE_PASSWORD}, format="json"
    )
    assert unpinned.status_code == 200
    assert unpinned.json()["pinned"] is False
    assert AuditEvent.objects.filter(action="failsafe.unpin", source="api").count() == 3


def test_acknowledge(api, armed, history):
    emergency = extra(LAST - HOUR / 2, Backup.Type.EMERGENCY)

    assert api.post(acknowledge_url(emergency), {}, format="json").status_code == 403
    emergency.refresh_from_db()
    assert emergency.reviewed_at is None

    response = api.post(
        acknowledge_url(emergency), {"failsafe_password": FAILSAFE_PASSWORD}, format="json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["reviewed_by"] == "root"
    assert body["reviewed_at"].endswith("Z")

    scheduled = api.post(
        acknowledge_url(history[0]), {"failsafe_password": FAILSAFE_PASSWORD}, format="json"
    )
    assert scheduled.status_code == 400
    assert scheduled.json()["detail"].endswith(
        "is a scheduled backup: only emergency backups are acknowledged (retention treats the "
        "others by its rules)"
    )


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (["pinned"], 400, "Malformed request: the body must be a JSON object"),
        ({"pinned": "perhaps"}, 400, None),
    ],
)
def test_malformed_bodies_are_refused(api, history, body, status, detail):
    response = api.post(pin_url(history[0]), body, format="json")
    assert response.status_code == status
    if detail:
        assert response.json() == {"detail": detail}
    history[0].refresh_from_db()
    assert not history[0].pinned


def test_an_unknown_backup_is_a_json_404(api, armed):
    missing = reverse("api:backup-pin", kwargs={"backup_id": "nope"})
    response = api.post(missing, {}, format="json")
    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid backup id: 'nope'"}


def test_the_responses_match_the_schema(openapi, superadmin, armed, history):  # noqa: F811
    auth = token_header(superadmin)
    emergency = extra(LAST - HOUR / 2, Backup.Type.EMERGENCY)

    def call(method, path, status, **case_kwargs):
        case = openapi[path][method].Case(**case_kwargs)
        response = case.call(headers=auth)
        assert response.status_code == status, response.text
        case.validate_response(response, checks=CONFORMANCE)

    by_id = {"backup_id": str(emergency.pk)}
    call("GET", "/api/failsafe/retention/", 200)
    call("POST", "/api/failsafe/backups/{backup_id}/pin/", 200, path_parameters=by_id, body={})
    call(
        "POST",
        "/api/failsafe/backups/{backup_id}/pin/",
        403,
        path_parameters=by_id,
        body={"pinned": False, "failsafe_password": "guess"},
    )
    call(
        "POST",
        "/api/failsafe/backups/{backup_id}/acknowledge/",
        200,
        path_parameters=by_id,
        body={"failsafe_password": FAILSAFE_PASSWORD},
    )
