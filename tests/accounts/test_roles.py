"""The role decides Django's staff flags, whatever else is set on the user."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from accounts.models import Role
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

FLAGS_BY_ROLE = [
    (Role.USER, False, False),
    (Role.ADMIN, True, False),
    (Role.SUPERADMIN, True, True),
]


@pytest.mark.parametrize(("role", "is_staff", "is_superuser"), FLAGS_BY_ROLE)
def test_saving_a_role_sets_the_django_flags(role, is_staff, is_superuser):
    user = UserFactory(role=role)
    user.refresh_from_db()
    assert (user.is_staff, user.is_superuser) == (is_staff, is_superuser)


@pytest.mark.parametrize(("role", "is_staff", "is_superuser"), FLAGS_BY_ROLE)
def test_a_role_change_saved_with_update_fields_reaches_the_flags(role, is_staff, is_superuser):
    # Start from the opposite end so every role is a real change.
    user = UserFactory(role=Role.USER if role == Role.SUPERADMIN else Role.SUPERADMIN)
    user.role = role
    user.save(update_fields=["role"])
    user.refresh_from_db()
    assert (user.is_staff, user.is_superuser) == (is_staff, is_superuser)


@pytest.mark.parametrize("update_fields", [None, ["is_staff", "is_superuser"]])
def test_superuser_flag_set_apart_from_the_role_is_undone(update_fields):
    user = UserFactory(role=Role.USER)
    user.is_staff = user.is_superuser = True
    user.save(update_fields=update_fields)
    user.refresh_from_db()
    assert (user.is_staff, user.is_superuser) == (False, False)


def test_createsuperuser_makes_a_superadmin(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long and unusual passphrase")
    call_command(
        "createsuperuser",
        "--noinput",
        "--username",
        "boss",
        "--email",
        "boss@example.com",
        stdout=StringIO(),
    )
    boss = get_user_model().objects.get(username="boss")
    assert (boss.role, boss.is_staff, boss.is_superuser) == (Role.SUPERADMIN, True, True)
    assert boss.check_password("a long and unusual passphrase")
