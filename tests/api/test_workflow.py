"""The seed's workflow over HTTP, with a token, as an integration would run it."""

import json

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.urls import reverse
from rest_framework.pagination import PageNumberPagination
from rest_framework.test import APIClient

from failsafe import services
from failsafe.models import Backup
from licensing.models import License
from tests.factories import DEFAULT_PASSWORD, FAILSAFE_PASSWORD

from .conftest import CLIENT_IP

User = get_user_model()


def backup_url(name, backup_id):
    return reverse(name, kwargs={"backup_id": backup_id})


@pytest.mark.django_db
def test_seed_workflow_over_http(superadmin, passkey, population):
    # Log in like an integration: username and password for a token.
    client = APIClient(REMOTE_ADDR=CLIENT_IP)
    login = client.post(
        reverse("api:token"), {"username": "root", "password": DEFAULT_PASSWORD}, format="json"
    )
    assert login.status_code == 200
    client.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")

    status = client.get(reverse("api:status")).json()
    assert status["failsafe_password_set"] is False
    assert status["system_status"] == "Failsafe password not set"

    response = client.put(reverse("api:password"), {"password": FAILSAFE_PASSWORD}, format="json")
    assert response.status_code == 200
    assert response.json()["replaced"] is False
    assert response.json()["message"] == "Failsafe password set successfully"

    status = client.get(reverse("api:status")).json()
    assert status["failsafe_password_set"] is True
    assert status["system_status"] == "Operational"
    assert (status["total_backups"], status["safe_backups"]) == (0, 0)

    first = client.post(
        reverse("api:trigger"), {"passkey": passkey, "reason": "first look"}, format="json"
    )
    assert first.status_code == 201
    first = first.json()
    assert first["message"] == "Emergency failsafe backup created"
    assert first["investigation"]["status"] == "Investigating"
    assert first["investigation"]["comparison"]["has_safe_backup"] is False
    assert first["investigation"]["comparison"]["message"] == "No safe backup found for comparison"
    safe_id = first["backup_id"]

    listed = client.get(reverse("api:backups")).json()
    assert listed["count"] == 1
    assert listed["results"][0]["id"] == safe_id
    assert listed["results"][0]["type"] == "EMERGENCY"
    assert listed["results"][0]["reason"] == "first look"
    assert listed["results"][0]["total_users"] == 6
    assert listed["results"][0]["total_licenses"] == 4
    assert listed["results"][0]["is_safe"] is False

    marked = client.post(
        backup_url("api:backup-mark-safe", safe_id),
        {"failsafe_password": FAILSAFE_PASSWORD},
        format="json",
    )
    assert marked.status_code == 200
    assert marked.json()["is_safe"] is True
    assert marked.json()["marked_safe_by"] == "root"
    assert client.get(reverse("api:status")).json()["last_safe_backup_id"] == safe_id

    # Something goes wrong: two users and two licenses disappear.
    User.objects.filter(username__in=["dave", "erin"]).delete()
    License.objects.filter(owner__username__in=["alice", "bob"]).delete()

    live = client.get(backup_url("api:backup-compare", "live")).json()
    assert "User count decreased: 6 -> 4" in live["issues"]
    removed = live["details"]["accounts.user"]["removed"]
    assert removed["count"] == 2
    assert sorted(removed["records"]) == ["dave", "erin"]

    second = client.post(reverse("api:trigger"), {"passkey": passkey}, format="json").json()
    investigation = second["investigation"]
    assert investigation["last_safe_backup"] == safe_id
    assert investigation["comparison"]["message"] == "Issues detected"
    assert "User count decreased: 6 -> 4" in investigation["comparison"]["issues"]
    assert "License count decreased: 4 -> 2" in investigation["comparison"]["issues"]
    assert investigation["recommendations"][0] == (
        f"RECOMMENDED: Restore from last safe backup (ID: {safe_id})"
    )

    dry = client.post(backup_url("api:backup-restore", safe_id), {"dry_run": True}, format="json")
    assert dry.status_code == 200
    users_plan = next(m for m in dry.json()["plan"]["models"] if m["model"] == "accounts.user")
    assert users_plan["insert"] == 2
    assert sorted(users_plan["sample_insert"]) == ["dave", "erin"]
    assert dry.json()["verification"] is None
    assert not User.objects.filter(username="dave").exists()

    wrong = client.post(
        backup_url("api:backup-restore", safe_id),
        {"failsafe_password": "not the password"},
        format="json",
    )
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "Invalid failsafe password"}
    assert not User.objects.filter(username="dave").exists()

    restored = client.post(
        backup_url("api:backup-restore", safe_id),
        {"failsafe_password": FAILSAFE_PASSWORD},
        format="json",
    )
    assert restored.status_code == 200, restored.content
    restored = restored.json()
    assert restored["message"] == "Backup restoration completed"
    assert restored["verification"] == {"identical": True, "differences": []}
    assert restored["pre_restore_backup_id"]
    assert set(User.objects.values_list("username", flat=True)) == {
        "root",
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
    }
    assert License.objects.count() == 4
    assert authenticate(username="dave", password=DEFAULT_PASSWORD) is not None

    # The restore revoked every token, this one too: log in again.
    assert restored["tokens_revoked"] == 1
    assert client.get(reverse("api:status")).status_code == 401
    login = client.post(
        reverse("api:token"), {"username": "root", "password": DEFAULT_PASSWORD}, format="json"
    )
    client.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")
    after = client.get(backup_url("api:backup-compare", "live")).json()
    assert after["issues"] == []

    events = client.get(reverse("api:audit"), {"actor": "root", "source": "api"}).json()
    actions = [(e["action"], e["outcome"]) for e in events["results"]]
    assert ("failsafe.restore", "SUCCESS") in actions
    assert ("failsafe.restore", "DENIED") in actions
    assert ("failsafe.trigger", "SUCCESS") in actions
    assert {e["ip_address"] for e in events["results"]} == {CLIENT_IP}
    # Newest first.
    seqs = [e["seq"] for e in events["results"]]
    assert seqs == sorted(seqs, reverse=True)
    assert FAILSAFE_PASSWORD not in json.dumps(events)
    assert passkey not in json.dumps(events)


@pytest.mark.django_db
def test_backups_are_listed_newest_first_filtered_and_paginated(api, actor, armed, monkeypatch):
    manual = services.create_backup(actor=actor, reason="one")
    scheduled = services.create_backup(actor=actor, backup_type="SCHEDULED", reason="two")
    services.mark_safe(actor=actor, backup_id=manual.id, password=FAILSAFE_PASSWORD)
    emergency = services.trigger(actor=actor, passkey=armed).backup
    monkeypatch.setattr(PageNumberPagination, "page_size", 2)

    page_one = api.get(reverse("api:backups")).json()
    page_two = api.get(reverse("api:backups"), {"page": 2}).json()
    assert page_one["count"] == 3
    assert [b["id"] for b in page_one["results"] + page_two["results"]] == [
        str(emergency.id),
        str(scheduled.id),
        str(manual.id),
    ]
    assert page_one["next"] and page_two["previous"] and page_two["next"] is None

    def ids(**query):
        response = api.get(reverse("api:backups"), query)
        assert response.status_code == 200
        return [b["id"] for b in response.json()["results"]]

    assert ids(type="SCHEDULED") == [str(scheduled.id)]
    assert ids(safe="true") == [str(manual.id)]
    assert ids(safe="false") == [str(emergency.id), str(scheduled.id)]
    assert ids(type="MANUAL", safe="false") == []


@pytest.mark.django_db
def test_taking_a_backup_returns_it(api, population):
    response = api.post(
        reverse("api:backups"), {"type": "SCHEDULED", "reason": "nightly"}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    backup = Backup.objects.get()
    assert body["id"] == str(backup.id)
    assert (body["type"], body["reason"], body["status"]) == ("SCHEDULED", "nightly", "COMPLETE")
    assert body["created_by"] == "root"
    assert body["total_users"] == 6
    assert body["model_counts"]["licensing.license"] == 4
    assert body["archive_size"] > 0
    assert body["error"] is None


@pytest.mark.django_db
def test_a_backup_without_reason_or_type_is_manual(api):
    response = api.post(reverse("api:backups"), {}, format="json")
    assert response.status_code == 201
    assert (response.json()["type"], response.json()["reason"]) == ("MANUAL", "")


@pytest.mark.django_db
def test_backup_detail(api, backup):
    response = api.get(backup_url("api:backup", backup.id))
    assert response.status_code == 200
    assert response.json()["id"] == str(backup.id)
    assert response.json()["reason"] == "baseline"
    assert response.json()["archive_sha256"] == backup.archive_sha256


@pytest.mark.django_db
def test_compare_two_backups_and_a_backup_against_live(api, actor, population):
    before = services.create_backup(actor=actor)
    User.objects.filter(username="carol").delete()
    after = services.create_backup(actor=actor)

    between = api.get(backup_url("api:backup-compare", after.id), {"against": str(before.id)})
    assert between.status_code == 200
    assert between.json()["safe_backup_id"] == str(before.id)
    assert between.json()["details"]["accounts.user"]["removed"]["records"] == ["carol"]

    against_live = api.get(backup_url("api:backup-compare", after.id), {"against": "live"})
    assert against_live.status_code == 200
    assert against_live.json()["issues"] == []

    no_baseline = api.get(backup_url("api:backup-compare", after.id))
    assert no_baseline.json()["has_safe_backup"] is False


@pytest.mark.django_db
def test_changing_the_failsafe_password_needs_the_current_one(api, armed):
    url = reverse("api:password")
    new = "Brand-New-Failsafe-Phrase-9"

    missing = api.put(url, {"password": new}, format="json")
    wrong = api.put(url, {"password": new, "current_password": "nope"}, format="json")
    right = api.put(url, {"password": new, "current_password": FAILSAFE_PASSWORD}, format="json")

    assert missing.status_code == wrong.status_code == 403
    assert right.status_code == 200
    assert right.json()["replaced"] is True
    assert right.json()["message"] == "Failsafe password changed successfully"


@pytest.mark.django_db
def test_a_weak_failsafe_password_is_refused_with_the_reason(api):
    response = api.put(reverse("api:password"), {"password": "short"}, format="json")
    assert response.status_code == 400
    assert "at least" in response.json()["detail"]


@pytest.mark.django_db
def test_audit_trail_filters(api, actor, armed):
    services.create_backup(actor=actor)
    api.post(reverse("api:trigger"), {"passkey": "wrong"}, format="json")

    def events(**query):
        response = api.get(reverse("api:audit"), query)
        assert response.status_code == 200
        return response.json()["results"]

    denied = events(outcome="DENIED")
    assert [(e["action"], e["source"], e["actor"]) for e in denied] == [
        ("failsafe.trigger", "api", "root")
    ]
    assert [e["action"] for e in events(action="failsafe.backup")] == ["failsafe.backup"]
    assert {e["source"] for e in events(source="cli")} == {"cli"}
    assert events(actor="someone-else") == []
