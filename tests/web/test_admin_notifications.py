"""The admin's notification list: where messages go, what was sent, a test button; and a
login lockout at a web door telling someone."""

import base64
import json

import pytest
from django.test import Client
from django.urls import reverse

from failsafe.models import AuditEvent, Notification
from tests.factories import AdminFactory
from tests.servers import free_port

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:failsafe_notification_changelist")
SEND_TEST = reverse("admin:failsafe_notification_test")
HOOK_SECRET_ENV = "RAOS_TEST_ADMIN_WEBHOOK_SECRET"
HOOK_SECRET = "admin-page-webhook-key"
UNSIGNED_HOOK = f"http://127.0.0.1:{free_port()}/unsigned"


@pytest.fixture
def channels(settings, mailbox, webhook_receiver, monkeypatch):
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    # Credentials in a webhook URL (user:password, ?token=) are sent, never shown.
    hook_url = webhook_receiver.url.replace("http://", "http://hookuser:hookpass@") + "?token=t0k"
    settings.FAILSAFE = {
        **settings.FAILSAFE,
        "NOTIFY_EMAILS": ["ops@example.com"],
        "NOTIFY_WEBHOOKS": [
            {"url": hook_url, "secret_env": HOOK_SECRET_ENV},
            # Nothing listens there.
            UNSIGNED_HOOK,
        ],
    }
    return mailbox, webhook_receiver


def test_the_page_shows_the_channels_without_secrets_and_sends_nothing(root_client, channels):
    mailbox, receiver = channels

    page = root_client.get(CHANGELIST).content.decode()

    assert "E-mail to root@example.com, ops@example.com" in page
    assert f"Webhook {receiver.url}:" in page and "signed (X-RaOS-Signature)" in page
    assert "unsigned: no secret_env names an HMAC key" in page
    for secret in (HOOK_SECRET, "hookpass", "hookuser", "t0k"):
        assert secret not in page
    assert 'id="send-test-notification-form"' in page
    # Opening the page sends nothing and audits nothing.
    assert mailbox == [] and receiver.requests == []
    assert not AuditEvent.objects.filter(action__startswith="failsafe.notify").exists()


def test_the_button_sends_a_test_and_lists_each_channel(root_client, channels):
    mailbox, receiver = channels

    answer = root_client.post(SEND_TEST, follow=True)
    page = answer.content.decode()

    assert len(mailbox) == 1 and len(receiver.requests) == 1
    assert sorted(mailbox[0].envelope_rcpt_tos) == ["ops@example.com", "root@example.com"]
    # The request went to the URL with its credentials; the page shows it without them.
    assert receiver.requests[0].path == "/hook?token=t0k"
    basic = base64.b64encode(b"hookuser:hookpass").decode()
    assert receiver.requests[0].headers["Authorization"] == f"Basic {basic}"
    # The unresolvable webhook failed, so the page says which, as an error.
    assert f"Test notification: webhook {UNSIGNED_HOOK}: URLError:" in page
    assert "Connection refused" in page
    notification = Notification.objects.get(event="test")
    assert notification.outcome == Notification.Outcome.PARTIAL
    assert "email root@example.com, ops@example.com: sent" in page
    assert f"webhook {receiver.url}: sent" in page
    event = AuditEvent.objects.get(action="failsafe.notify.test")
    assert (event.outcome, event.source, event.actor_username) == ("SUCCESS", "admin", "root")
    assert "hookpass" not in json.dumps(event.details) and "t0k" not in page


def test_the_button_when_everything_arrives(root_client, settings, mailbox):
    answer = root_client.post(SEND_TEST, follow=True)

    assert "Test notification sent to every channel." in answer.content.decode()
    assert len(mailbox) == 1


def test_the_button_without_any_channel_says_how_to_configure_one(root_client, superadmin):
    superadmin.email = ""
    superadmin.save()

    page = root_client.post(SEND_TEST, follow=True).content.decode()

    assert "Test notification: No notification channel is configured" in page
    assert "No notification channel is configured" in root_client.get(CHANGELIST).content.decode()


def test_the_button_is_a_post_with_csrf_for_superadmins_only(superadmin, channels):
    mailbox, receiver = channels
    root = Client(enforce_csrf_checks=True)
    root.force_login(superadmin)
    assert root.get(SEND_TEST).status_code == 405
    assert root.post(SEND_TEST).status_code == 403  # no CSRF token

    staff = Client()
    staff.force_login(AdminFactory(is_staff=True))
    assert staff.post(SEND_TEST).status_code == 403
    assert staff.get(CHANGELIST).status_code == 403
    assert mailbox == [] and receiver.requests == []


def test_notifications_are_read_only(root_client, channels):
    root_client.post(SEND_TEST)
    notification = Notification.objects.get()

    detail = root_client.get(reverse("admin:failsafe_notification_change", args=[notification.pk]))
    assert detail.status_code == 200 and "Test notification from root" in detail.content.decode()
    assert root_client.get(reverse("admin:failsafe_notification_add")).status_code == 403
    deleted = root_client.post(
        reverse("admin:failsafe_notification_delete", args=[notification.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 403 and Notification.objects.count() == 1


def test_a_login_lockout_tells_someone_once_without_the_password(client, superadmin, channels):
    mailbox, receiver = channels
    guesses = [f"mallory guess {n}" for n in range(1, 8)]

    answers = [
        client.post(reverse("admin:login"), {"username": "root", "password": guess})
        for guess in guesses
    ]

    assert [answer.status_code for answer in answers] == [200] * 4 + [429] * 3
    assert [m["Subject"] for m in mailbox] == [
        "[RaOS Failsafe] Logins locked out for root after 5 failed logins"
    ]
    body = mailbox[0].get_content()
    assert "from 127.0.0.1" in body and "failsafe_unlock --logins root" in body
    payload = json.loads(receiver.requests[0].body)
    assert payload["data"] == {
        "kind": "login",
        "username": "root",
        "address": "127.0.0.1",
        "failures": 5,
        "minutes": 15,
    }
    for guess in guesses:
        assert (
            guess not in mailbox[0].as_string() and guess not in receiver.requests[0].body.decode()
        )
    assert Notification.objects.filter(event="lockout").count() == 1


def test_the_admin_home_links_the_notifications_for_superadmins_only(root_client, client):
    assert f'href="{CHANGELIST}"' in root_client.get(reverse("admin:index")).content.decode()
    staff = Client()
    staff.force_login(AdminFactory(is_staff=True))
    assert CHANGELIST not in staff.get(reverse("admin:index")).content.decode()
