"""First-run set-up: the SuperAdmin, the server license passkey, the failsafe's archive
keyset, its default schedules, optional demo data.

Safe to run again: an existing SuperAdmin is left as it is, the passkey is only replaced on
request, and demo data is topped up to the number asked, never duplicated. A keyset is only
created where none is configured and no backup exists: backups need the keys they were
written under, so with backups and no keyset the set-up refuses (naming the key ids) and
changes nothing.
"""

import secrets
from dataclasses import dataclass, field
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone

from accounts.models import Role
from failsafe import services as failsafe
from licensing import services
from licensing.exceptions import SuperAdminNameTaken
from licensing.models import License

DEMO_USER_PREFIX = "demo_user_"
DEMO_LICENSE_INSTANCE = "demo"


@dataclass
class BootstrapResult:
    username: str
    superadmin_created: bool
    generated_password: str | None = None
    passkey: str | None = None
    demo_users_created: int = 0
    demo_licenses_created: int = 0
    owner_changed: bool = False
    # The archive keyset file created by this run, if any.
    keyset_created: str | None = None
    # The names of the default schedules this run created (none once they exist).
    schedules_created: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def bootstrap(
    *,
    username: str,
    email: str = "",
    # None: generate one, returned once in the result.
    password: str | None = None,
    demo: int = 0,
    rotate_passkey: bool = False,
    make_owner: bool = False,
) -> BootstrapResult:
    """`make_owner` names the SuperAdmin the server license's owner even if it has one.

    Raises LicensingError (the name is taken), ValidationError (a weak chosen password)
    or FailsafeError (backups need the keyset that is missing), each before anything is
    changed."""
    failsafe.check_keyset_creatable()
    result = _set_up_accounts(
        username=username,
        email=email,
        password=password,
        demo=demo,
        rotate_passkey=rotate_passkey,
        make_owner=make_owner,
    )
    # After the accounts' transaction, so a refused name leaves no keyset behind; the
    # keyset's creation is audited on its own.
    result.keyset_created = failsafe.prepare_keyset()
    result.notes.extend(failsafe.keyset_problems())
    # Each is created once; a schedule edited or turned off in the admin stays so.
    result.schedules_created = failsafe.ensure_default_schedules()
    return result


@transaction.atomic
def _set_up_accounts(
    *,
    username: str,
    email: str,
    password: str | None,
    demo: int,
    rotate_passkey: bool,
    make_owner: bool = False,
) -> BootstrapResult:
    User = get_user_model()
    user = User.objects.filter(username=username).first()
    result = BootstrapResult(username=username, superadmin_created=user is None)
    if user is None:
        if password is None:
            password = result.generated_password = generate_password()
        # A generated password (shown once) must be replaced at first use; one the operator
        # chose is held to the site's password validators instead.
        user = User(
            username=username,
            email=email,
            role=Role.SUPERADMIN,
            must_change_password=result.generated_password is not None,
        )
        if result.generated_password is None:
            validate_password(password, user)
        user.set_password(password)
        user.save()
    elif user.role != Role.SUPERADMIN:
        raise SuperAdminNameTaken(username)

    result.passkey = services.issue_passkey(rotate=rotate_passkey)
    # The first SuperAdmin bootstrapped owns the server license: the command line acts as
    # it when several SuperAdmins exist. A later run leaves the owner as it is.
    result.owner_changed = services.set_owner(user, replace=make_owner)
    if demo:
        result.demo_users_created, result.demo_licenses_created = _top_up_demo_data(demo)
    return result


def _top_up_demo_data(count: int) -> tuple[int, int]:
    User = get_user_model()
    wanted_users = [f"{DEMO_USER_PREFIX}{i:04d}" for i in range(1, count + 1)]
    existing = set(
        User.objects.filter(username__in=wanted_users).values_list("username", flat=True)
    )
    # Demo users cannot log in until someone gives them a password.
    new_users = [
        User(username=name, email=f"{name}@example.com", role=Role.USER, password="!")
        for name in wanted_users
        if name not in existing
    ]
    for user in new_users:
        user.sync_flags_from_role()
    User.objects.bulk_create(new_users)

    wanted_licenses = max(1, count // 3)
    have = License.objects.filter(instance_name=DEMO_LICENSE_INSTANCE).count()
    owners = list(
        User.objects.filter(username__in=wanted_users).order_by("username")[:wanted_licenses]
    )
    now = timezone.now()
    new_licenses = [
        License(
            owner=owners[i % len(owners)] if owners else None,
            license_type=License.Type.STANDARD,
            max_users=5,
            issued_at=now,
            expires_at=now + timedelta(days=365),
            instance_name=DEMO_LICENSE_INSTANCE,
        )
        for i in range(have, wanted_licenses)
    ]
    License.objects.bulk_create(new_licenses)
    return len(new_users), len(new_licenses)
