"""Retention in the admin: the pinned and reviewed columns, Pin, Unpin and Acknowledge."""

import datetime

import pytest
from django.urls import reverse

from failsafe.models import AuditEvent, Backup
from tests.factories import FAILSAFE_PASSWORD

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:failsafe_backup_changelist")


def backup(backup_type=Backup.Type.MANUAL, **fields) -> Backup:
    return Backup.objects.create(type=backup_type, status=Backup.Status.COMPLETE, **fields)


def selected(action: str, *backups) -> dict:
    return {"action": action, "_selected_action": [str(b.pk) for b in backups]}


def test_the_list_shows_pinned_and_whether_emergency_backups_were_reviewed(root_client):
    backup(pinned=True)
    backup(Backup.Type.EMERGENCY)
    backup(
        Backup.Type.EMERGENCY,
        reviewed_at=datetime.datetime(2026, 12, 1, 9, tzinfo=datetime.UTC),
        reviewed_by_username="root",
    )

    content = root_client.get(CHANGELIST).content.decode()

    assert content.count('<td class="field-pinned"><img src="/static/admin/img/icon-yes.svg"') == 1
    assert content.count('<td class="field-pinned"><img src="/static/admin/img/icon-no.svg"') == 2
    assert '<td class="field-reviewed">NOT REVIEWED</td>' in content
    assert '<td class="field-reviewed"><span title="2026-12-01 09:00:00">✓ root</span></td>' in (
        content
    )
    assert '<td class="field-reviewed">-</td>' in content  # not an emergency backup
    assert "By pinned" in content


def test_pin_needs_no_password(root_client):
    target = backup()

    response = root_client.post(CHANGELIST, selected("pin_action", target), follow=True)

    assert "1 backup(s) pinned: retention never forgets them." in response.content.decode()
    target.refresh_from_db()
    assert target.pinned
    event = AuditEvent.objects.filter(action="failsafe.pin").last()
    assert (event.source, event.outcome) == ("admin", "SUCCESS")


def test_unpin_asks_for_the_failsafe_password(root_client, armed):
    target = backup(pinned=True)
    chosen = selected("unpin_action", target)

    page = root_client.post(CHANGELIST, chosen)
    content = page.content.decode()
    assert page.status_code == 200
    assert 'id="password-confirm-form"' in content and 'type="password"' in content
    assert 'name="action" value="unpin_action"' in content
    target.refresh_from_db()
    assert target.pinned

    wrong = root_client.post(
        CHANGELIST, {**chosen, "apply": "1", "failsafe_password": "wrong"}, follow=True
    )
    assert "Invalid failsafe password" in wrong.content.decode()
    target.refresh_from_db()
    assert target.pinned

    done = root_client.post(
        CHANGELIST, {**chosen, "apply": "1", "failsafe_password": FAILSAFE_PASSWORD}, follow=True
    )
    assert "1 backup(s) unpinned." in done.content.decode()
    target.refresh_from_db()
    assert not target.pinned


def test_acknowledge_asks_for_the_password_and_refuses_other_types(root_client, armed):
    emergency = backup(Backup.Type.EMERGENCY)
    manual = backup()
    chosen = selected("acknowledge_action", emergency, manual)

    page = root_client.post(CHANGELIST, chosen).content.decode()
    assert "Acknowledge these emergency backups?" in page

    response = root_client.post(
        CHANGELIST, {**chosen, "apply": "1", "failsafe_password": FAILSAFE_PASSWORD}, follow=True
    )
    content = response.content.decode()
    assert "1 emergency backup(s) acknowledged." in content
    assert f"Backup {manual.pk} is a manual backup: only emergency backups" in content
    emergency.refresh_from_db()
    manual.refresh_from_db()
    assert emergency.reviewed_by_username == "root"
    assert manual.reviewed_at is None


def test_the_password_is_hidden_from_error_reports(root_client, armed):
    target = backup(pinned=True)
    response = root_client.post(
        CHANGELIST,
        {**selected("unpin_action", target), "apply": "1", "failsafe_password": "s3cret"},
    )
    assert response.wsgi_request.sensitive_post_parameters == ("failsafe_password",)
