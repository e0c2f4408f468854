"""Tokens: obtained with a username and password, stored hashed, expiring, revocable."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.middleware import PASSWORD_CHANGE_REQUIRED
from tests.factories import DEFAULT_PASSWORD, SuperAdminFactory, UserFactory

from .conftest import token_client


def obtain_token(username, password=DEFAULT_PASSWORD):
    return APIClient().post(
        reverse("api:token"), {"username": username, "password": password}, format="json"
    )


def with_token(token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.mark.django_db
def test_a_superadmin_exchanges_the_password_for_a_working_token(superadmin):
    response = obtain_token("root")

    assert response.status_code == 200
    token = response.json()["token"]
    assert with_token(token).get(reverse("api:status")).status_code == 200


@pytest.mark.django_db
def test_tokens_are_stored_hashed(superadmin):
    token = obtain_token("root").json()["token"]

    stored = AuthToken.objects.get(user=superadmin)
    assert token not in (stored.digest, stored.token_key)
    assert len(stored.digest) == 128  # a SHA-512 hex digest


@pytest.mark.django_db
def test_the_token_expires_after_the_configured_ttl(superadmin, settings, monkeypatch):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": datetime.timedelta(minutes=5)}
    before = timezone.now()
    response = obtain_token("root")
    token = response.json()["token"]

    expiry = parse_datetime(response.json()["expiry"])
    assert before + datetime.timedelta(minutes=5) <= expiry
    assert expiry <= timezone.now() + datetime.timedelta(minutes=5)
    assert with_token(token).get(reverse("api:status")).status_code == 200

    # Six minutes later.
    later = timezone.now() + datetime.timedelta(minutes=6)
    monkeypatch.setattr(timezone, "now", lambda: later)
    response = with_token(token).get(reverse("api:status"))
    assert response.status_code == 401
    assert not AuthToken.objects.filter(user=superadmin).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["wrong password", ""])
def test_wrong_credentials_get_no_token(superadmin, password):
    response = obtain_token("root", password)

    assert response.status_code == 400
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(superadmin):
    unknown = obtain_token("nobody")
    wrong = obtain_token("root", "wrong password")
    assert unknown.status_code == wrong.status_code == 400
    assert (
        unknown.json()
        == wrong.json()
        == {"detail": "Unable to log in with the username and password given."}
    )


@pytest.mark.django_db
def test_an_inactive_user_gets_no_token():
    UserFactory(username="gone", is_active=False)
    assert obtain_token("gone").status_code == 400
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_a_user_who_must_change_the_password_gets_no_token():
    SuperAdminFactory(username="fresh", must_change_password=True)

    response = obtain_token("fresh")

    assert response.status_code == 403
    assert response.json() == {"detail": PASSWORD_CHANGE_REQUIRED}
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_a_token_of_a_user_flagged_later_is_refused(superadmin):
    client = token_client(superadmin)
    superadmin.must_change_password = True
    superadmin.save(update_fields=["must_change_password"])

    response = client.get(reverse("api:status"))

    assert response.status_code == 403
    assert response.json() == {"detail": PASSWORD_CHANGE_REQUIRED}


@pytest.mark.django_db
def test_a_flagged_browser_session_is_refused_too(client):
    client.force_login(SuperAdminFactory(username="fresh", must_change_password=True))
    response = client.get(reverse("api:status"))
    assert response.status_code == 403
    assert response.json() == {"detail": PASSWORD_CHANGE_REQUIRED}


@pytest.mark.django_db
def test_logout_revokes_only_the_token_it_carries(superadmin):
    first = obtain_token("root").json()["token"]
    second = obtain_token("root").json()["token"]

    assert with_token(first).post(reverse("api:logout")).status_code == 204

    assert with_token(first).get(reverse("api:status")).status_code == 401
    assert with_token(second).get(reverse("api:status")).status_code == 200


@pytest.mark.django_db
def test_logoutall_revokes_every_token_of_the_user(superadmin):
    tokens = [obtain_token("root").json()["token"] for _ in range(3)]
    other = token_client(SuperAdminFactory(username="other"))

    assert with_token(tokens[0]).post(reverse("api:logoutall")).status_code == 204

    for token in tokens:
        assert with_token(token).get(reverse("api:status")).status_code == 401
    assert other.get(reverse("api:status")).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["api:logout", "api:logoutall"])
def test_logging_out_needs_a_token(name):
    assert APIClient().post(reverse(name)).status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        "Token",
        "Token not-a-token",
        "Token a b",
        "Token " + "0" * 64,
        "Token caf\xe9",  # not ASCII once on the wire
        "Token " + "f" * 5000,
    ],
)
def test_a_bad_token_is_401_never_500(superadmin, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(reverse("api:status"))
    assert response.status_code == 401
    assert response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "root"},
        {"username": ["root"], "password": DEFAULT_PASSWORD},
        {"username": "r" * 151, "password": DEFAULT_PASSWORD},
        {"username": "root", "password": "p" * 5000},
        {"username": "ro\x00ot", "password": DEFAULT_PASSWORD},
    ],
)
def test_a_malformed_login_body_is_400(superadmin, body):
    response = APIClient().post(reverse("api:token"), body, format="json")
    assert response.status_code == 400
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_login_does_not_take_a_token_or_session_in_place_of_the_password(superadmin, client):
    client.force_login(superadmin)
    response = client.post(reverse("api:token"), {}, content_type="application/json")
    assert response.status_code == 400
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_token_logins_are_throttled_per_address(superadmin):
    client = token_client()
    body = {"username": "root", "password": "wrong password"}
    answers = [client.post("/api/auth/token/", body, format="json").status_code for _ in range(11)]
    assert answers[:10] == [400] * 10
    assert answers[10] == 429
    right = {"username": "root", "password": DEFAULT_PASSWORD}
    assert client.post("/api/auth/token/", right, format="json").status_code == 429
