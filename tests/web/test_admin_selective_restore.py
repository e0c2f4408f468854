"""The admin's "Restore selected records…": checkboxes on a comparison, the same
confirmation page as a full restore, and containment on the result page."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.urls import reverse

from accounts.models import Role
from failsafe.models import Backup
from tests.factories import FAILSAFE_PASSWORD
from tests.selective import attack, sign_in

User = get_user_model()

pytestmark = pytest.mark.django_db


def test_ticked_records_go_through_the_confirmation_and_only_they_come_back(
    root_client, actor, armed, population
):
    attacked = attack(actor, armed, sign_ups=2)
    page = root_client.get(
        reverse("admin:failsafe_backup_investigation", args=[attacked.emergency.pk])
    ).content.decode()
    restore_url = reverse("admin:failsafe_backup_restore", args=[attacked.safe.pk])
    assert f'action="{restore_url}"' in page
    assert "Restore selected records…" in page
    carol = User.objects.get(username="carol")
    assert f'value="accounts.user:#{carol.pk}"' in page
    carol_in = sign_in(carol)

    ticked = [f"accounts.user:#{carol.pk}", "accounts.user:dave"]
    confirm = root_client.get(restore_url, {"only": ticked}).content.decode()
    assert "Selected records" in confirm
    assert "Restoring the selected records makes each of them exactly what" in confirm
    for item in ticked:
        assert f'<input type="hidden" name="only" value="{item}">' in confirm
    assert "<td>carol</td><td>is_superuser, is_staff, role</td>" in confirm
    assert "<li>carol (role, is_staff, is_superuser)</li>" in confirm
    assert "Make the accounts listed above change their password" in confirm
    assert User.objects.get(username="carol").role == Role.SUPERADMIN  # a page changes nothing

    done = root_client.post(
        restore_url,
        {"only": ticked, "failsafe_password": FAILSAFE_PASSWORD, "force_password_reset": "on"},
    ).content.decode()
    assert "Selected records restored." in done
    assert "each selected record is identical to the backup" in done
    assert "<li>carol (role, is_staff, is_superuser)</li>" in done
    assert "<li>dave (restored)</li>" in done
    carol.refresh_from_db()
    assert carol.role == Role.USER and carol.must_change_password
    assert User.objects.filter(username="dave").exists()
    assert not User.objects.filter(username="erin").exists()  # not ticked
    assert User.objects.filter(username__startswith="signup").count() == 2
    assert not Session.objects.filter(session_key=carol_in[0]).exists()


def test_an_unknown_record_is_one_admin_message_and_nothing_changes(
    root_client, actor, armed, population
):
    attacked = attack(actor, armed, sign_ups=0)
    backups = Backup.objects.count()
    restore_url = reverse("admin:failsafe_backup_restore", args=[attacked.safe.pk])
    response = root_client.get(restore_url, {"only": ["accounts.user:#424242"]}, follow=True)
    assert "no record &#x27;#424242&#x27; in the backup or in the live data" in (
        response.content.decode()
    )
    refused = root_client.post(
        restore_url, {"only": ["nope:x"], "failsafe_password": FAILSAFE_PASSWORD}, follow=True
    )
    assert "Unknown model &#x27;nope&#x27;" in refused.content.decode()
    assert Backup.objects.count() == backups
    assert not User.objects.filter(username="dave").exists()
