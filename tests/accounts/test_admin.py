import pytest
from django.urls import reverse

from accounts.models import Role
from tests.factories import AdminFactory, SuperAdminFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_user_list_shows_each_role(client):
    client.force_login(SuperAdminFactory())
    AdminFactory()
    UserFactory()
    response = client.get(reverse("admin:accounts_user_changelist"))
    assert response.status_code == 200
    for label in ("User", "Admin", "SuperAdmin"):
        assert f'<td class="field-role">{label}</td>'.encode() in response.content


def test_changing_the_role_in_the_admin_changes_the_flags(client):
    client.force_login(SuperAdminFactory())
    user = UserFactory()
    change_url = reverse("admin:accounts_user_change", args=[user.pk])
    form = {
        "username": user.username,
        "email": user.email,
        "role": Role.ADMIN,
        "is_active": "on",
    }
    response = client.post(change_url, form)
    assert response.status_code == 302
    user.refresh_from_db()
    assert (user.role, user.is_staff, user.is_superuser) == (Role.ADMIN, True, False)
