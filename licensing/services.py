"""The server license's secrets: the passkey and the failsafe password, as argon2 hashes.

Raw secrets only pass through these functions; they are never stored, logged or returned
except `issue_passkey`, whose caller shows the new passkey once.
"""

import secrets

from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .exceptions import (
    FailsafePasswordNotSet,
    InvalidFailsafePassword,
    InvalidPasskey,
    PasskeyNotIssued,
    WeakFailsafePassword,
)
from .models import KEY_ALPHABET, ServerLicense

FAILSAFE_PASSWORD_MIN_LENGTH = 8
# The server's secrets are always argon2, whatever PASSWORD_HASHERS puts first.
SECRET_HASHER = "argon2"


def get_server_license() -> ServerLicense:
    server_license, _ = ServerLicense.objects.get_or_create(pk=ServerLicense.SINGLETON_ID)
    return server_license


def _locked_server_license() -> ServerLicense:
    get_server_license()
    return ServerLicense.objects.select_for_update().get(pk=ServerLicense.SINGLETON_ID)


def generate_passkey() -> str:
    groups = ("".join(secrets.choice(KEY_ALPHABET) for _ in range(6)) for _ in range(3))
    return "SERVER-" + "-".join(groups)


@transaction.atomic
def issue_passkey(*, rotate: bool = False) -> str | None:
    """Issue the server license passkey and return it raw, once.

    Returns None when one is already issued and `rotate` is false.
    """
    server_license = _locked_server_license()
    if server_license.passkey_is_set and not rotate:
        return None
    raw = generate_passkey()
    server_license.passkey_hash = make_password(raw, hasher=SECRET_HASHER)
    server_license.passkey_set_at = timezone.now()
    server_license.save(update_fields=["passkey_hash", "passkey_set_at"])
    return raw


def passkey_is_valid(raw: str | None) -> bool:
    """Constant-time check; an empty passkey or no issued passkey is never valid."""
    encoded = get_server_license().passkey_hash
    if not raw or not encoded:
        # Hash anyway so that timing tells nothing about what is configured.
        make_password(raw or "", hasher=SECRET_HASHER)
        return False
    return check_password(raw, encoded)


def require_valid_passkey(raw: str | None) -> None:
    if not get_server_license().passkey_is_set:
        raise PasskeyNotIssued()
    if not passkey_is_valid(raw):
        raise InvalidPasskey()


def failsafe_password_is_set() -> bool:
    return get_server_license().failsafe_password_is_set


def require_failsafe_password_set() -> None:
    if not failsafe_password_is_set():
        raise FailsafePasswordNotSet()


def failsafe_password_is_valid(raw: str | None) -> bool:
    encoded = get_server_license().failsafe_password_hash
    if not raw or not encoded:
        make_password(raw or "", hasher=SECRET_HASHER)
        return False
    return check_password(raw, encoded)


def require_valid_failsafe_password(raw: str | None) -> None:
    require_failsafe_password_set()
    if not failsafe_password_is_valid(raw):
        raise InvalidFailsafePassword()


def validate_failsafe_password(password: str | None, *, user=None) -> None:
    if not password or len(password) < FAILSAFE_PASSWORD_MIN_LENGTH:
        raise WeakFailsafePassword(
            f"Failsafe password must be at least {FAILSAFE_PASSWORD_MIN_LENGTH} characters long"
        )
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise WeakFailsafePassword(exc.messages) from None


@transaction.atomic
def set_failsafe_password(*, password: str, user, current_password: str | None = None) -> bool:
    """Set (or change) the failsafe password. Returns True when it replaced an older one.

    Changing an existing password requires the current one.
    """
    validate_failsafe_password(password, user=user)
    server_license = _locked_server_license()
    replaced = server_license.failsafe_password_is_set
    if replaced and not (
        current_password and check_password(current_password, server_license.failsafe_password_hash)
    ):
        raise InvalidFailsafePassword(
            "Current failsafe password is required to change it, and the one given is wrong"
        )
    server_license.failsafe_password_hash = make_password(password, hasher=SECRET_HASHER)
    server_license.failsafe_password_set_at = timezone.now()
    server_license.failsafe_password_set_by = user
    server_license.save(
        update_fields=[
            "failsafe_password_hash",
            "failsafe_password_set_at",
            "failsafe_password_set_by",
        ]
    )
    return replaced


def license_owner():
    """The SuperAdmin the server license names as its owner, or None."""
    return get_server_license().owner


@transaction.atomic
def set_owner(user, *, replace: bool = False) -> bool:
    """Name `user` the server license's owner; only when there is none unless `replace`.
    Returns whether the owner changed."""
    server_license = _locked_server_license()
    if server_license.owner_id is not None and not replace:
        return False
    if server_license.owner_id == user.pk:
        return False
    server_license.owner = user
    server_license.save(update_fields=["owner"])
    return True
