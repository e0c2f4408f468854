"""The admin's Failsafe page (the failsafe password, the emergency trigger) and audit trail."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from failsafe.models import AuditEvent, Backup
from licensing import services as licensing
from tests.factories import FAILSAFE_PASSWORD, SuperAdminFactory

pytestmark = pytest.mark.django_db

FAILSAFE_PAGE = reverse("admin:failsafe")
AUDIT_CHANGELIST = reverse("admin:failsafe_auditevent_changelist")
AUDIT_VERIFY = reverse("admin:failsafe_auditevent_verify")
NEW_PASSWORD = "Another-Unusual-Phrase-77"


def _set(client, password, confirmation=None, current=None):
    form = {"set_password": "1", "password": password, "confirmation": confirmation or password}
    if current is not None:
        form["current_password"] = current
    return client.post(FAILSAFE_PAGE, form, follow=True)


def test_the_failsafe_page_sets_the_password_confirmed_twice(root_client, passkey):
    page = root_client.get(FAILSAFE_PAGE).content.decode()
    assert '<strong id="password-status">not set</strong>' in page
    assert "current_password" not in page

    mismatch = _set(root_client, FAILSAFE_PASSWORD, confirmation=FAILSAFE_PASSWORD + "!")
    assert "The two passwords do not match; nothing was changed." in mismatch.content.decode()
    assert not licensing.failsafe_password_is_set()

    weak = _set(root_client, "short")
    assert "Failsafe password must be at least 8 characters long" in weak.content.decode()
    assert not licensing.failsafe_password_is_set()

    done = _set(root_client, FAILSAFE_PASSWORD)
    content = done.content.decode()
    assert "Failsafe password set successfully." in content
    assert '<strong id="password-status">set</strong>' in content
    assert licensing.failsafe_password_is_valid(FAILSAFE_PASSWORD)
    event = AuditEvent.objects.filter(action="failsafe.setpassword").last()
    assert (event.outcome, event.source, event.ip_address) == ("SUCCESS", "admin", "127.0.0.1")
    assert FAILSAFE_PASSWORD not in str(event.details)


def test_changing_the_password_needs_the_current_one(root_client, armed):
    page = root_client.get(FAILSAFE_PAGE).content.decode()
    assert 'name="current_password"' in page

    wrong = _set(root_client, NEW_PASSWORD, current="not the current one")
    content = wrong.content.decode()
    assert (
        "Current failsafe password is required to change it, and the one given is wrong" in content
    )
    assert NEW_PASSWORD not in content and "not the current one" not in content
    assert licensing.failsafe_password_is_valid(FAILSAFE_PASSWORD)

    done = _set(root_client, NEW_PASSWORD, current=FAILSAFE_PASSWORD)
    assert "Failsafe password changed successfully." in done.content.decode()
    assert licensing.failsafe_password_is_valid(NEW_PASSWORD)


def test_the_trigger_needs_the_passkey_and_shows_the_investigation(root_client, armed, safe_backup):
    get_user_model().objects.filter(username__in=["dave", "erin"]).delete()

    wrong = root_client.post(FAILSAFE_PAGE, {"trigger": "1", "passkey": "SERVER-WRONG"})
    content = wrong.content.decode()
    assert "Invalid server license passkey" in content
    assert "SERVER-WRONG" not in content
    assert not Backup.objects.filter(type=Backup.Type.EMERGENCY).exists()
    denied = AuditEvent.objects.filter(action="failsafe.trigger").last()
    assert (denied.outcome, denied.source, denied.ip_address) == ("DENIED", "admin", "127.0.0.1")

    response = root_client.post(
        FAILSAFE_PAGE, {"trigger": "1", "passkey": armed, "reason": "users vanished"}
    )
    content = response.content.decode()
    assert response.status_code == 200
    assert "<h2>Emergency failsafe backup created</h2>" in content
    assert '<ul class="failsafe-issues"><li>User count decreased: 6 -&gt; 4</li>' in content
    assert "Removed (2)</th><td>dave, erin</td>" in content
    assert f"RECOMMENDED: Restore from last safe backup (ID: {safe_backup.pk})" in content
    assert armed not in content
    emergency = Backup.objects.get(type=Backup.Type.EMERGENCY)
    assert emergency.reason == "users vanished"
    assert reverse("admin:failsafe_backup_change", args=[emergency.pk]) in content


def test_the_audit_trail_verifies_on_request_intact_then_broken_after_tampering(
    root_client, actor, armed
):
    root_client.post(FAILSAFE_PAGE, {"trigger": "1", "passkey": "SERVER-WRONG"})
    events_before = AuditEvent.objects.count()
    page = root_client.get(AUDIT_CHANGELIST)
    content = page.content.decode()
    assert page.status_code == 200
    # Opening the list verifies nothing and writes nothing.
    assert "The audit chain has not been verified yet." in content
    assert AuditEvent.objects.count() == events_before
    assert '<td class="field-outcome">Denied</td>' in content
    assert "failsafe.trigger" in content

    response = root_client.post(AUDIT_VERIFY, follow=True)
    content = response.content.decode()
    assert "Audit chain intact:" in content
    assert "by root" in content

    first = AuditEvent.objects.order_by("seq").first()
    AuditEvent.objects.filter(pk=first.pk).update(outcome=AuditEvent.Outcome.SUCCESS)
    assert "Audit chain intact:" in root_client.get(AUDIT_CHANGELIST).content.decode()
    content = root_client.post(AUDIT_VERIFY, follow=True).content.decode()
    assert f"Audit chain broken at event #{first.seq}" in content
    assert "Audit chain intact" not in content


def test_verifying_the_audit_chain_is_a_post(root_client):
    assert root_client.get(AUDIT_VERIFY).status_code == 405


def test_the_audit_trail_filters_by_action_actor_and_outcome(root_client, actor, armed):
    root_client.post(FAILSAFE_PAGE, {"trigger": "1", "passkey": "SERVER-WRONG"})
    denied = root_client.get(AUDIT_CHANGELIST, {"outcome__exact": "DENIED"}).content.decode()
    assert "failsafe.trigger" in denied
    assert '<td class="field-outcome">Success</td>' not in denied
    for title in ("By outcome", "By action", "By actor username"):
        assert title in denied
    by_action = root_client.get(AUDIT_CHANGELIST, {"action": "failsafe.trigger"}).content.decode()
    assert '<td class="field-action">failsafe.trigger</td>' in by_action
    assert '<td class="field-action">failsafe.audit.verify</td>' not in by_action

    other = Client()
    other.force_login(SuperAdminFactory(username="second"))
    other.post(FAILSAFE_PAGE, {"trigger": "1", "passkey": "SERVER-ALSO-WRONG"})
    seconds = root_client.get(AUDIT_CHANGELIST, {"actor_username": "second"}).content.decode()
    assert '<td class="field-actor_username">second</td>' in seconds
    assert '<td class="field-actor_username">root</td>' not in seconds


def test_an_audit_event_opens_read_only(root_client, actor, armed):
    root_client.post(FAILSAFE_PAGE, {"trigger": "1", "passkey": "SERVER-WRONG"})
    event = AuditEvent.objects.filter(action="failsafe.trigger").last()
    page = root_client.get(reverse("admin:failsafe_auditevent_change", args=[event.pk]))
    content = page.content.decode()
    assert page.status_code == 200
    assert "Invalid server license passkey" in content
    assert 'name="_save"' not in content
