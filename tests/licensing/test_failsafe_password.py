import pytest

from licensing import services
from licensing.exceptions import (
    FailsafePasswordNotSet,
    InvalidFailsafePassword,
    WeakFailsafePassword,
)
from tests.factories import SuperAdminFactory

pytestmark = pytest.mark.django_db

FIRST = "first unusual failsafe phrase"
SECOND = "second unusual failsafe phrase"


@pytest.fixture
def superadmin():
    return SuperAdminFactory()


def test_setting_the_failsafe_password_records_who_and_when(superadmin):
    assert services.set_failsafe_password(password=FIRST, user=superadmin) is False
    server_license = services.get_server_license()
    assert server_license.failsafe_password_set_by == superadmin
    assert server_license.failsafe_password_set_at is not None
    services.require_valid_failsafe_password(FIRST)


def test_a_too_short_password_is_refused_and_nothing_is_stored(superadmin):
    with pytest.raises(WeakFailsafePassword) as refused:
        services.set_failsafe_password(password="Sh0rt!x", user=superadmin)
    assert str(refused.value) == "Failsafe password must be at least 8 characters long"
    assert not services.failsafe_password_is_set()


def test_a_common_password_is_refused_by_djangos_validators(superadmin):
    with pytest.raises(WeakFailsafePassword) as refused:
        services.set_failsafe_password(password="password123", user=superadmin)
    assert "This password is too common." in refused.value.messages
    assert not services.failsafe_password_is_set()


def test_checking_before_any_password_is_set_says_so():
    with pytest.raises(FailsafePasswordNotSet) as refused:
        services.require_valid_failsafe_password(FIRST)
    assert str(refused.value) == "Failsafe password not set"


@pytest.mark.parametrize("current", [None, "", "not the current one"])
def test_changing_it_needs_the_current_password(superadmin, current):
    services.set_failsafe_password(password=FIRST, user=superadmin)
    with pytest.raises(InvalidFailsafePassword):
        services.set_failsafe_password(password=SECOND, user=superadmin, current_password=current)
    assert services.failsafe_password_is_valid(FIRST)
    assert not services.failsafe_password_is_valid(SECOND)


def test_changing_it_with_the_current_password_replaces_it(superadmin):
    services.set_failsafe_password(password=FIRST, user=superadmin)
    replaced = services.set_failsafe_password(
        password=SECOND, user=superadmin, current_password=FIRST
    )
    assert replaced is True
    assert services.failsafe_password_is_valid(SECOND)
    with pytest.raises(InvalidFailsafePassword):
        services.require_valid_failsafe_password(FIRST)
