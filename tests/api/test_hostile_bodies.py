"""Hostile or broken request bodies get a JSON 4xx, never a traceback or an HTML page."""

import json

import pytest
from django.urls import reverse

from failsafe import services
from failsafe.models import Backup

DEEP = "[" * 100_000 + "]" * 100_000


def post_raw(client, name, body, content_type="application/json"):
    return client.generic("POST", reverse(name), body, content_type=content_type)


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["api:token", "api:backups", "api:trigger", "api:terminal"])
def test_json_nested_100000_deep_is_a_400_in_json(api, name):
    response = post_raw(api, name, DEEP)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["api:token", "api:backups"])
def test_a_body_over_the_limit_is_a_413_in_json(api, name, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = post_raw(api, name, json.dumps({"reason": "x" * 20_000}))
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert "too large" in response.json()["detail"]
    assert not Backup.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [b"null", b'"MANUAL"', b"[]", b"42", json.dumps({"reason": "r"}).encode("utf-16")],
    ids=["null", "string", "list", "number", "utf-16"],
)
def test_a_body_that_is_not_a_utf8_json_object_creates_nothing(api, body):
    response = post_raw(api, "api:backups", body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]
    assert not Backup.objects.exists()


@pytest.mark.django_db
def test_an_unexpected_failure_is_a_503_in_json(api, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "status", broken)
    response = api.get(reverse("api:status"))
    assert response.status_code == 503
    assert response.json() == {
        "detail": "The request failed: RuntimeError: database went away"
    }
