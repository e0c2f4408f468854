"""Tokens: obtained with a username and password, stored hashed, expiring, revocable."""

import datetime
import json

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.middleware import PASSWORD_CHANGE_REQUIRED
from failsafe.models import AuditEvent
from tests.factories import DEFAULT_PASSWORD, SuperAdminFactory, UserFactory

from .conftest import CLIENT_IP, token_client


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
def test_token_logins_are_throttled_per_address_even_with_the_right_password(superadmin):
    # The extra layer under the lockouts: API_LOGIN_RATE (10 a minute) per client address,
    # which a client cannot change by writing its own X-Forwarded-For.
    client = token_client()
    right = {"username": "root", "password": DEFAULT_PASSWORD}
    answers = [
        client.post(
            "/api/auth/token/", right, format="json", HTTP_X_FORWARDED_FOR=f"10.9.0.{n}"
        ).status_code
        for n in range(11)
    ]
    assert answers == [200] * 10 + [429]


# --- password guessing: the login lockout ---------------------------------------------

GUESSES = [f"guess number {n} of mallory" for n in range(1, 6)]
LOCKED_OUT = "Too many failed logins for this username or from this address"


def guess(client, username, password, **extra):
    return client.post(
        reverse("api:token"), {"username": username, "password": password}, format="json", **extra
    )


@pytest.mark.django_db
def test_five_wrong_passwords_lock_the_right_one_out(superadmin):
    client = token_client()
    answers = [guess(client, "root", password).status_code for password in GUESSES]

    assert answers == [400, 400, 400, 400, 429]
    refused = guess(client, "root", DEFAULT_PASSWORD)
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith(LOCKED_OUT)
    assert "failsafe_unlock --logins" in refused.json()["detail"]
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_four_wrong_passwords_then_the_right_one_gets_a_token(superadmin):
    client = token_client()
    assert [guess(client, "root", password).status_code for password in GUESSES[:4]] == [400] * 4
    assert guess(client, "root", DEFAULT_PASSWORD).status_code == 200


@pytest.mark.django_db
def test_a_rotating_x_forwarded_for_does_not_help_against_the_username_lockout(superadmin):
    client = token_client()
    for n, password in enumerate(GUESSES):
        guess(client, "root", password, HTTP_X_FORWARDED_FOR=f"10.9.0.{n}")

    refused = guess(client, "root", DEFAULT_PASSWORD, HTTP_X_FORWARDED_FOR="10.9.0.99")

    assert refused.status_code == 429
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_a_rotating_x_forwarded_for_does_not_help_against_the_address_lockout(superadmin):
    client = token_client()
    # Other usernames each time, so only the address can count them together.
    for n, password in enumerate(GUESSES):
        guess(client, f"someone{n}", password, HTTP_X_FORWARDED_FOR=f"10.9.0.{n}")

    refused = guess(client, "root", DEFAULT_PASSWORD, HTTP_X_FORWARDED_FOR="10.9.0.99")
    assert refused.status_code == 429

    # root itself failed nothing: another address still gets its token.
    elsewhere = guess(APIClient(REMOTE_ADDR="198.51.100.200"), "root", DEFAULT_PASSWORD)
    assert elsewhere.status_code == 200


@pytest.mark.django_db
def test_a_web_lockout_holds_at_the_api_too(superadmin, client):
    for password in GUESSES:
        client.post(reverse("admin:login"), {"username": "root", "password": password})

    refused = guess(APIClient(REMOTE_ADDR="198.51.100.200"), "root", DEFAULT_PASSWORD)

    assert refused.status_code == 429
    assert not AuthToken.objects.exists()


@pytest.mark.django_db
def test_api_failures_and_the_lockout_are_audited_without_the_passwords(superadmin):
    client = token_client()
    for password in GUESSES:
        guess(client, "root", password)

    events = AuditEvent.objects.filter(action__startswith="login.").order_by("seq")
    assert [event.action for event in events] == ["login.failed"] * 4 + ["login.lockout"]
    assert {event.source for event in events} == {AuditEvent.Source.API}
    assert {event.target for event in events} == {"root"}
    assert {event.ip_address for event in events} == {CLIENT_IP}
    trail = json.dumps(list(AuditEvent.objects.values()), default=str)
    for password in GUESSES:
        assert password not in trail


@pytest.mark.django_db
def test_behind_one_trusted_proxy_the_forwarded_address_counts(superadmin, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = APIClient(REMOTE_ADDR="10.0.0.2")
    for n, password in enumerate(GUESSES):
        guess(proxy, f"someone{n}", password, HTTP_X_FORWARDED_FOR=f"10.9.0.{n}, 198.51.100.1")

    attacker = guess(proxy, "root", DEFAULT_PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.1")
    colleague = guess(proxy, "root", DEFAULT_PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.2")

    assert attacker.status_code == 429
    assert colleague.status_code == 200
