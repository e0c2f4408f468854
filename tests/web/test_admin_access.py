"""Nothing of the failsafe admin is visible or reachable to anyone but a SuperAdmin."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from failsafe import services
from tests.factories import AdminFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def backup(actor):
    return services.create_backup(actor=actor, reason="for the access tests")


def _failsafe_pages(backup):
    return [
        reverse("admin:failsafe_backup_changelist"),
        reverse("admin:failsafe_backup_change", args=[backup.pk]),
        reverse("admin:failsafe_backup_compare", args=[backup.pk]),
        reverse("admin:failsafe_backup_restore", args=[backup.pk]),
        reverse("admin:failsafe"),
        reverse("admin:failsafe_auditevent_changelist"),
    ]


def test_admin_staff_gets_403_everywhere_even_with_django_permissions(client, backup):
    staff = AdminFactory()
    # Django's own permissions on the failsafe models open nothing to an ADMIN.
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="failsafe"))
    client.force_login(staff)
    for page in _failsafe_pages(backup):
        refused = client.get(page)
        assert refused.status_code == 403, page
        # A page that says why and what to do, not a bare "403 Forbidden".
        content = refused.content.decode()
        assert "Not allowed" in content and "for SuperAdmins only" in content, page
        assert staff.username in content
    restore = reverse("admin:failsafe_backup_restore", args=[backup.pk])
    assert client.post(restore, {"failsafe_password": "x"}).status_code == 403
    assert client.post(reverse("admin:failsafe"), {"trigger": "1", "passkey": "x"}).status_code == (
        403
    )


def test_admin_staff_does_not_see_the_failsafe_in_the_admin_index(client, backup):
    staff = AdminFactory()
    staff.user_permissions.set(Permission.objects.all())
    client.force_login(staff)
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:accounts_user_changelist") in index
    assert reverse("admin:failsafe_backup_changelist") not in index
    assert reverse("admin:failsafe_auditevent_changelist") not in index
    assert reverse("admin:failsafe") not in index
    assert client.get(reverse("admin:app_list", args=["failsafe"])).status_code == 404


def test_anonymous_visitors_are_sent_to_the_admin_login(client, backup):
    for page in _failsafe_pages(backup):
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(reverse("admin:login"))


def test_a_superadmin_sees_the_failsafe_links_in_the_admin_index(root_client, backup):
    index = root_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:failsafe_backup_changelist") in index
    assert reverse("admin:failsafe_auditevent_changelist") in index
    assert reverse("admin:failsafe") in index
    assert reverse("failsafe:terminal") in index
    # One Failsafe box, not the app's own list beside it.
    assert index.count(f'href="{reverse("admin:failsafe_backup_changelist")}"') == 1
    assert 'id="failsafe-module"' in index
    for page in _failsafe_pages(backup):
        assert root_client.get(page).status_code == 200, page


def test_nothing_can_be_added_changed_or_deleted(root_client, backup):
    assert root_client.get(reverse("admin:failsafe_backup_add")).status_code == 403
    delete_url = reverse("admin:failsafe_backup_delete", args=[backup.pk])
    assert root_client.get(delete_url).status_code == 403
    detail = root_client.get(reverse("admin:failsafe_backup_change", args=[backup.pk]))
    assert b'name="_save"' not in detail.content
    changelist = root_client.get(reverse("admin:failsafe_backup_changelist")).content.decode()
    assert "delete_selected" not in changelist
