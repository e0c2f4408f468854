"""The schedules in the admin (django-celery-beat's pages, SuperAdmins only) and the
"Back up now" button on the backups list."""

import os

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from failsafe import schedules
from failsafe.models import AuditEvent, Backup
from tests.factories import AdminFactory

pytestmark = pytest.mark.django_db

SCHEDULES = reverse("admin:django_celery_beat_periodictask_changelist")
BACKUP_NOW = reverse("admin:failsafe_backup_now")
BEAT_PAGES = [
    SCHEDULES,
    reverse("admin:django_celery_beat_intervalschedule_changelist"),
    reverse("admin:django_celery_beat_crontabschedule_changelist"),
    reverse("admin:django_celery_beat_solarschedule_changelist"),
    reverse("admin:django_celery_beat_clockedschedule_changelist"),
]


@pytest.fixture
def defaults():
    schedules.ensure_defaults()
    return PeriodicTask.objects.get(name="failsafe: scheduled backup")


@pytest.fixture
def staff_client(client):
    """An ADMIN-role staff account holding every Django permission there is."""
    staff = AdminFactory(username="staffer")
    staff.user_permissions.set(Permission.objects.all())
    client.force_login(staff)
    return client


def test_a_superadmin_sees_and_edits_the_schedules(root_client, defaults):
    index = root_client.get(reverse("admin:index")).content.decode()
    assert f'<a href="{SCHEDULES}">Schedules</a>' in index  # in the Failsafe box
    listed = root_client.get(SCHEDULES).content.decode()
    for default in schedules.DEFAULTS:
        assert default.name in listed
    for page in BEAT_PAGES:
        assert root_client.get(page).status_code == 200, page
    change = reverse("admin:django_celery_beat_periodictask_change", args=[defaults.pk])
    assert b'name="_save"' in root_client.get(change).content

    turned_off = root_client.post(
        SCHEDULES, {"action": "disable_tasks", "_selected_action": [defaults.pk]}, follow=True
    )
    assert turned_off.status_code == 200
    defaults.refresh_from_db()
    assert defaults.enabled is False


def test_an_admin_staff_account_can_neither_see_nor_change_the_schedules(
    staff_client, defaults
):
    index = staff_client.get(reverse("admin:index")).content.decode()
    assert "django_celery_beat" not in index and SCHEDULES not in index
    for page in BEAT_PAGES:
        assert staff_client.get(page).status_code == 403, page
    change = reverse("admin:django_celery_beat_periodictask_change", args=[defaults.pk])
    assert staff_client.get(change).status_code == 403
    refused = staff_client.post(
        SCHEDULES, {"action": "disable_tasks", "_selected_action": [defaults.pk]}
    )
    assert refused.status_code == 403
    defaults.refresh_from_db()
    assert defaults.enabled is True
    app_list = reverse("admin:app_list", args=["django_celery_beat"])
    assert staff_client.get(app_list).status_code == 404


def test_back_up_now_names_the_backup_it_took(root_client, population):
    done = root_client.post(BACKUP_NOW, {"reason": ""}, follow=True)
    backup = Backup.objects.get()
    assert (backup.type, backup.reason, backup.created_by_username) == (
        "MANUAL",
        "Taken from the admin",
        "root",
    )
    assert str(backup.id) in done.content.decode()
    event = AuditEvent.objects.get(action="failsafe.backup")
    assert (event.actor_username, event.source, event.outcome) == ("root", "admin", "SUCCESS")


def test_back_up_now_shows_a_refusal_as_its_one_line(root_client, population, settings):
    os.unlink(settings.FAILSAFE_KEYSET_FILE)
    refused = root_client.post(BACKUP_NOW, {"reason": "before the upgrade"}, follow=True)
    content = refused.content.decode()
    assert refused.status_code == 200
    assert "No failsafe keyset: if backups exist, import the key material" in content
    assert "Traceback" not in content
    assert not Backup.objects.filter(status=Backup.Status.COMPLETE).exists()


def test_back_up_now_is_for_superadmins_only(staff_client, population):
    assert staff_client.post(BACKUP_NOW, {"reason": "mine"}).status_code == 403
    assert not Backup.objects.exists()


def test_back_up_now_needs_the_csrf_token(superadmin, population):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(superadmin)
    assert browser.post(BACKUP_NOW, {"reason": "forged"}).status_code == 403
    assert not Backup.objects.exists()
