"""The seed's attack after a safe backup, then legitimate work: for the selective restore
tests at every door."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from knox.models import AuthToken

from accounts.models import Role
from failsafe import services
from failsafe.models import Backup
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD, UserFactory

User = get_user_model()
SIGN_UPS = 20


@dataclass
class Attacked:
    safe: Backup
    emergency: Backup | None
    deleted: list[str]
    promoted: str
    sign_ups: list[str]


def sign_in(user) -> tuple[str, str]:
    """A database session and a knox token for `user`: (session key, token digest)."""
    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session.create()
    token, _plain = AuthToken.objects.create(user=user)
    return session.session_key, token.digest


def attack(actor, passkey=None, *, sign_ups: int = SIGN_UPS) -> Attacked:
    """The population (conftest's) backed up and marked safe; then dave and erin deleted,
    carol promoted to SuperAdmin, every owned license revoked; an emergency trigger when a
    passkey is given; then `sign_ups` new accounts."""
    safe = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)
    User.objects.filter(username__in=["dave", "erin"]).delete()
    carol = User.objects.get(username="carol")
    carol.role = Role.SUPERADMIN
    carol.save()
    License.objects.exclude(owner=None).update(status=License.Status.REVOKED)
    emergency = None
    if passkey is not None:
        emergency = services.trigger(actor=actor, passkey=passkey, reason="the attack").backup
    names = [f"signup{number:02d}" for number in range(sign_ups)]
    for name in names:
        UserFactory(username=name)
    return Attacked(safe, emergency, ["dave", "erin"], "carol", names)
