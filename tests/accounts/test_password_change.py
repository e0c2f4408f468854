"""A user flagged `must_change_password` changes it before seeing anything else."""

import pytest
from django.urls import reverse

from tests.factories import DEFAULT_PASSWORD, SuperAdminFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a fresh and unusual passphrase"


@pytest.fixture
def flagged_superadmin(client):
    user = SuperAdminFactory(must_change_password=True)
    client.force_login(user)
    return user


def _change_form(old_password=DEFAULT_PASSWORD):
    return {
        "old_password": old_password,
        "new_password1": NEW_PASSWORD,
        "new_password2": NEW_PASSWORD,
    }


@pytest.mark.parametrize("path", ["/", "/admin/", "/admin/licensing/license/", "/no-such-page/"])
def test_flagged_user_is_sent_to_the_password_change_page(client, flagged_superadmin, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts:password_change")


def test_flagged_user_sees_the_password_change_page(client, flagged_superadmin):
    response = client.get(reverse("accounts:password_change"))
    assert response.status_code == 200
    assert b"You must choose a new password" in response.content


def test_flagged_user_gets_403_json_from_the_api(client, flagged_superadmin):
    response = client.get("/api/backups/")
    assert response.status_code == 403
    assert response.json() == {"detail": "Password change required before anything else."}


def test_changing_the_password_clears_the_flag_and_lands_a_superadmin_on_the_terminal(
    client, flagged_superadmin
):
    response = client.post(reverse("accounts:password_change"), _change_form())
    assert response.status_code == 302
    assert response["Location"] == reverse("failsafe:terminal")
    flagged_superadmin.refresh_from_db()
    assert not flagged_superadmin.must_change_password
    assert flagged_superadmin.check_password(NEW_PASSWORD)
    assert client.get(reverse("admin:index")).status_code == 200


def test_a_wrong_current_password_changes_nothing(client, flagged_superadmin):
    response = client.post(reverse("accounts:password_change"), _change_form("not my password"))
    assert response.status_code == 200
    flagged_superadmin.refresh_from_db()
    assert flagged_superadmin.must_change_password
    assert flagged_superadmin.check_password(DEFAULT_PASSWORD)


def test_the_admins_own_password_change_page_clears_the_flag_too(client, flagged_superadmin):
    response = client.post("/admin/password_change/", _change_form())
    assert response.status_code == 302
    flagged_superadmin.refresh_from_db()
    assert not flagged_superadmin.must_change_password
    assert client.get(reverse("admin:index")).status_code == 200
