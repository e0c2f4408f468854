"""Password guessing at the web logins: five failures lock a username, or an address, out.

The lockout (django-axes) holds at /admin/login/ and /accounts/login/ alike, counts the
address by the rule every door shares (failsafe.web.client_ip), is audited without the
password, and ends with the cool-off or with `manage.py failsafe_unlock --logins`.
"""

import datetime
import json

import pytest
from axes.models import AccessAttempt
from django.core.management import CommandError
from django.db.models import F
from django.test import RequestFactory
from django.urls import reverse

from failsafe.models import AuditEvent
from failsafe.web import client_ip
from tests.factories import DEFAULT_PASSWORD, FAILSAFE_PASSWORD, AdminFactory
from tests.helpers import run

pytestmark = pytest.mark.django_db

LOGINS = ["admin:login", "accounts:login"]
LOCKED_OUT = "Too many failed logins for this username or from this address"
GUESSES = [f"guess number {n} of mallory" for n in range(1, 6)]


def log_in(client, login, username, password, **extra):
    return client.post(reverse(login), {"username": username, "password": password}, **extra)


def logged_in_as(client):
    return client.session.get("_auth_user_id")


def guess_five_times(client, login, username="root", **extra):
    return [log_in(client, login, username, guess, **extra) for guess in GUESSES]


@pytest.mark.parametrize("login", LOGINS)
def test_four_wrong_passwords_then_the_right_one_logs_in(client, superadmin, login):
    answers = [log_in(client, login, "root", guess) for guess in GUESSES[:4]]

    assert [answer.status_code for answer in answers] == [200] * 4
    assert log_in(client, login, "root", DEFAULT_PASSWORD).status_code == 302
    assert logged_in_as(client) == str(superadmin.pk)


@pytest.mark.parametrize("login", LOGINS)
def test_five_wrong_passwords_lock_the_right_one_out(client, superadmin, login):
    answers = guess_five_times(client, login)

    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 429]
    right = log_in(client, login, "root", DEFAULT_PASSWORD)
    assert right.status_code == 429
    assert not logged_in_as(client)
    # A page saying why and what to do, not an error page.
    assert right["Content-Type"].startswith("text/html")
    page = right.content.decode()
    assert LOCKED_OUT in page
    assert "failsafe_unlock --logins" in page
    assert int(right["Retry-After"]) == 15 * 60


@pytest.mark.parametrize("login", LOGINS)
def test_the_lockout_is_per_username_whatever_the_address(client, superadmin, login):
    for n, guess in enumerate(GUESSES):
        log_in(client, login, "root", guess, REMOTE_ADDR=f"198.51.100.{n + 1}")

    refused = log_in(client, login, "root", DEFAULT_PASSWORD, REMOTE_ADDR="198.51.100.77")

    assert refused.status_code == 429
    assert not logged_in_as(client)


@pytest.mark.parametrize("login", LOGINS)
def test_the_lockout_is_per_address_whatever_the_username(client, superadmin, login):
    for n, guess in enumerate(GUESSES):
        log_in(client, login, f"someone{n}", guess, REMOTE_ADDR="198.51.100.9")

    refused = log_in(client, login, "root", DEFAULT_PASSWORD, REMOTE_ADDR="198.51.100.9")
    assert refused.status_code == 429
    assert not logged_in_as(client)

    # root has no failure of its own: from another address it logs in.
    elsewhere = log_in(client, login, "root", DEFAULT_PASSWORD, REMOTE_ADDR="198.51.100.10")
    assert elsewhere.status_code == 302
    assert logged_in_as(client) == str(superadmin.pk)


def test_a_rotating_x_forwarded_for_does_not_reset_the_count(client, superadmin):
    for n, guess in enumerate(GUESSES):
        log_in(client, "accounts:login", f"someone{n}", guess, HTTP_X_FORWARDED_FOR=f"10.9.0.{n}")

    right = log_in(
        client, "accounts:login", "root", DEFAULT_PASSWORD, HTTP_X_FORWARDED_FOR="10.9.0.99"
    )

    assert right.status_code == 429
    assert not logged_in_as(client)


def test_failures_and_the_lockout_are_audited_without_the_passwords(client, superadmin):
    guess_five_times(client, "admin:login")
    guess_five_times(client, "accounts:login", username="nobody", REMOTE_ADDR="198.51.100.3")

    failed = AuditEvent.objects.filter(action="login.failed")
    lockouts = AuditEvent.objects.filter(action="login.lockout")
    # The fifth failure of each is the one recorded as the lockout.
    assert failed.filter(target="root").count() == 4
    assert failed.filter(target="nobody").count() == 4
    root_lockout = lockouts.get(target="root")
    assert root_lockout.outcome == AuditEvent.Outcome.DENIED
    assert root_lockout.source == AuditEvent.Source.ADMIN
    assert root_lockout.ip_address == "127.0.0.1"
    assert root_lockout.details["failures"] == 5
    assert root_lockout.details["door"] == reverse("admin:login")
    nobody_lockout = lockouts.get(target="nobody")
    assert nobody_lockout.source == AuditEvent.Source.TERMINAL
    assert nobody_lockout.ip_address == "198.51.100.3"

    trail = json.dumps(list(AuditEvent.objects.values()), default=str)
    counted = json.dumps(list(AccessAttempt.objects.values()), default=str)
    for guess in GUESSES:
        assert guess not in trail
        assert guess not in counted


def test_a_login_refused_during_the_lockout_adds_no_event(client, superadmin):
    guess_five_times(client, "admin:login")
    events = AuditEvent.objects.count()

    for _ in range(3):
        assert log_in(client, "admin:login", "root", "another guess").status_code == 429

    assert AuditEvent.objects.count() == events


def test_failsafe_unlock_logins_lifts_the_lockout(client, superadmin, armed):
    guess_five_times(client, "accounts:login")
    assert log_in(client, "accounts:login", "root", DEFAULT_PASSWORD).status_code == 429

    printed = run(
        "failsafe_unlock", "--logins", "root", "--password-stdin", stdin=FAILSAFE_PASSWORD + "\n"
    )

    # The username's lockout and the one of the address its failures came from.
    assert "2 lockout(s) lifted" in printed
    answer = log_in(client, "accounts:login", "root", DEFAULT_PASSWORD)
    assert answer.status_code == 302
    assert logged_in_as(client) == str(superadmin.pk)
    unlock = AuditEvent.objects.filter(action="failsafe.unlock").latest("seq")
    assert unlock.outcome == AuditEvent.Outcome.SUCCESS
    assert unlock.target == "root"
    assert unlock.details["lockouts"] == "logins"
    assert unlock.details["lifted"] == 2


def test_failsafe_unlock_logins_needs_the_failsafe_password(client, superadmin, armed):
    guess_five_times(client, "accounts:login")

    with pytest.raises(CommandError, match="(?i)password"):
        run("failsafe_unlock", "--logins", "root", "--password-stdin", stdin="wrong\n")

    assert log_in(client, "accounts:login", "root", DEFAULT_PASSWORD).status_code == 429


def test_unlocking_one_username_leaves_the_others_locked(client, superadmin, armed):
    AdminFactory(username="staff")
    guess_five_times(client, "accounts:login", username="root", REMOTE_ADDR="198.51.100.1")
    guess_five_times(client, "accounts:login", username="staff", REMOTE_ADDR="198.51.100.2")

    run("failsafe_unlock", "--logins", "root", "--password-stdin", stdin=FAILSAFE_PASSWORD + "\n")

    assert log_in(client, "accounts:login", "root", DEFAULT_PASSWORD).status_code == 302
    client.logout()
    staff = log_in(client, "accounts:login", "staff", DEFAULT_PASSWORD, REMOTE_ADDR="198.51.100.3")
    assert staff.status_code == 429


def test_the_lockout_ends_with_the_cool_off(client, superadmin):
    guess_five_times(client, "admin:login")
    assert log_in(client, "admin:login", "root", DEFAULT_PASSWORD).status_code == 429

    # Sixteen minutes later (the cool-off is fifteen).
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - datetime.timedelta(minutes=16))

    assert log_in(client, "admin:login", "root", DEFAULT_PASSWORD).status_code == 302
    assert logged_in_as(client) == str(superadmin.pk)


# --- behind a reverse proxy ------------------------------------------------------------


PROXY = "10.0.0.2"


def test_behind_one_trusted_proxy_the_forwarded_address_counts(client, superadmin, settings):
    settings.TRUSTED_PROXY_COUNT = 1

    # The client forges the left part of the header; the proxy appends what it saw.
    for n, guess in enumerate(GUESSES):
        log_in(
            client,
            "accounts:login",
            f"someone{n}",
            guess,
            REMOTE_ADDR=PROXY,
            HTTP_X_FORWARDED_FOR=f"10.9.0.{n}, 198.51.100.1",
        )

    attacker = log_in(
        client,
        "accounts:login",
        "root",
        DEFAULT_PASSWORD,
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR="10.9.0.99, 198.51.100.1",
    )
    assert attacker.status_code == 429
    # Another client behind the same proxy is not the address that failed.
    colleague = log_in(
        client,
        "accounts:login",
        "root",
        DEFAULT_PASSWORD,
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR="198.51.100.2",
    )
    assert colleague.status_code == 302
    lockout = AuditEvent.objects.get(action="login.lockout")
    assert lockout.ip_address == "198.51.100.1"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "198.51.100.1", "10.0.0.2"),  # not trusted: the peer that connected
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the client's own part is ignored
        (1, " 2001:DB8::1 ", "2001:db8::1"),  # one spelling per address
        (2, "6.6.6.6, 198.51.100.1, 10.0.0.1", "198.51.100.1"),
        (2, "198.51.100.1", "10.0.0.2"),  # shorter than the proxies: not through them
        (1, None, "10.0.0.2"),
        (1, "", "10.0.0.2"),
        (1, "unknown", "10.0.0.2"),
        (1, "198.51.100.1:443", "10.0.0.2"),
        (1, "fe80::1%eth0", "10.0.0.2"),
    ],
)
def test_the_client_address_rule(settings, proxies, forwarded, expected):
    settings.TRUSTED_PROXY_COUNT = proxies
    headers = {"REMOTE_ADDR": PROXY}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    assert client_ip(RequestFactory().get("/", **headers)) == expected
