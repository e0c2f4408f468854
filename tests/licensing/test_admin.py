import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from licensing import services
from tests.factories import AdminFactory, SuperAdminFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:licensing_serverlicense_changelist")
CHANGE_PAGE = reverse("admin:licensing_serverlicense_change", args=[1])


@pytest.fixture
def server_license():
    services.issue_passkey()
    return services.get_server_license()


def test_a_superadmin_sees_set_or_not_set_but_never_the_hash(client, server_license):
    client.force_login(SuperAdminFactory())
    for page in (CHANGELIST, CHANGE_PAGE):
        response = client.get(page)
        assert response.status_code == 200
        content = response.content.decode()
        assert "set (" in content  # the passkey, with when
        assert "not set" in content  # the failsafe password
        assert server_license.passkey_hash not in content
        assert server_license.passkey_hash.split("$")[-1] not in content


def test_admin_staff_cannot_see_the_server_license(client, server_license):
    staff = AdminFactory()
    # Even Django's view permission on the model does not open it to an ADMIN.
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="licensing"))
    client.force_login(staff)

    assert client.get(CHANGELIST).status_code == 403
    assert client.get(CHANGE_PAGE).status_code == 403
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:licensing_license_changelist") in index
    assert CHANGELIST not in index
