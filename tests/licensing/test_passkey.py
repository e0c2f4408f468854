import re

import pytest

from licensing import services
from licensing.exceptions import InvalidPasskey, PasskeyNotIssued

pytestmark = pytest.mark.django_db


def test_an_issued_passkey_is_accepted():
    passkey = services.issue_passkey()
    assert re.fullmatch(r"SERVER-[A-Z2-9]{6}-[A-Z2-9]{6}-[A-Z2-9]{6}", passkey)
    services.require_valid_passkey(passkey)
    assert services.passkey_is_valid(passkey)


def test_a_wrong_passkey_is_refused_with_the_seed_message():
    passkey = services.issue_passkey()
    with pytest.raises(InvalidPasskey) as refused:
        services.require_valid_passkey(passkey[:-1] + ("A" if passkey[-1] != "A" else "B"))
    assert str(refused.value) == "Invalid server license passkey"


@pytest.mark.parametrize("empty", ["", None])
def test_an_empty_passkey_is_refused(empty):
    services.issue_passkey()
    assert not services.passkey_is_valid(empty)
    with pytest.raises(InvalidPasskey):
        services.require_valid_passkey(empty)


def test_no_passkey_is_valid_before_one_is_issued():
    assert not services.passkey_is_valid("SERVER-ABC123-XYZ789-DEF456")
    with pytest.raises(PasskeyNotIssued):
        services.require_valid_passkey("SERVER-ABC123-XYZ789-DEF456")


def test_a_passkey_is_issued_once_unless_rotated():
    first = services.issue_passkey()
    assert services.issue_passkey() is None
    assert services.passkey_is_valid(first)

    second = services.issue_passkey(rotate=True)
    assert second not in (None, first)
    assert services.passkey_is_valid(second)
    assert not services.passkey_is_valid(first)
