"""Who may act, and the audit event every operation leaves whatever its outcome."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from accounts.models import Role
from accounts.permissions import is_superadmin
from licensing import services as licensing
from licensing.exceptions import LicensingError

from .. import audit, lockout
from ..exceptions import NotSuperAdmin, as_refusal
from ..models import AuditEvent
from . import alerts

ACTION_TRIGGER = "failsafe.trigger"
# A backup that failed, whatever operation took it (what /metrics counts).
ACTION_BACKUP_FAILED = "failsafe.backup.failed"
ACTION_RESTORE = audit.ACTION_RESTORE
# An admin log entry a restore's cascade deleted, kept in the audit trail as evidence.
ACTION_EVIDENCE = audit.ACTION_EVIDENCE
ACTION_SET_PASSWORD = "failsafe.setpassword"
ACTION_MARK_SAFE = "failsafe.marksafe"
ACTION_DELETE = "failsafe.delete"
ACTION_GC = "failsafe.gc"
ACTION_UNLOCK = "failsafe.unlock"

# What an action is, in the one line a failure of it shows.
_DOING = {
    "failsafe.backup": "The backup",
    ACTION_TRIGGER: "The emergency backup",
    ACTION_RESTORE: "The restore",
    ACTION_MARK_SAFE: "Marking the backup safe",
    ACTION_DELETE: "Deleting the backup",
    ACTION_GC: "Collecting unused chunks",
    "failsafe.prune": "Pruning backups (retention)",
    "failsafe.verify": "Verifying backups",
    "failsafe.compare": "The comparison",
}


# How the audit trail and every result name the failsafe acting by itself.
SYSTEM_USERNAME = audit.SYSTEM_USERNAME


@dataclass(frozen=True)
class Actor:
    """Who is acting, and through which door."""

    user: object
    source: str = AuditEvent.Source.CLI
    ip: str | None = None

    @property
    def username(self) -> str:
        if self.is_system:
            return SYSTEM_USERNAME
        return getattr(self.user, "username", "") or ""

    @property
    def is_system(self) -> bool:
        """The failsafe acting by itself (a schedule, the drift watch): nobody logged in."""
        return self.user is None and self.source == AuditEvent.Source.SYSTEM

    @classmethod
    def system(cls) -> Actor:
        return cls(user=None, source=AuditEvent.Source.SYSTEM)


def several_superadmins() -> bool:
    """Whether more than one active SuperAdmin exists (a command then names who acts)."""
    User = get_user_model()
    return User.objects.filter(role=Role.SUPERADMIN, is_active=True).count() > 1


def resolve_superadmin(username: str | None = None):
    """The acting SuperAdmin for a command: the one named, or the only one there is."""
    User = get_user_model()
    if username:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise NotSuperAdmin(f"No such user: {username}")
        return user
    superadmins = list(User.objects.filter(role=Role.SUPERADMIN, is_active=True)[:2])
    if not superadmins:
        raise NotSuperAdmin("No SuperAdmin exists: run manage.py raos_bootstrap --superadmin NAME")
    if len(superadmins) == 1:
        return superadmins[0]
    # In an incident the second SuperAdmin may be the attacker's: the server license's owner
    # acts unless another is named.
    owner = licensing.license_owner()
    if owner is not None and owner.is_active and owner.role == Role.SUPERADMIN:
        return owner
    raise NotSuperAdmin(
        "Several SuperAdmins exist and the server license names no owner among them: name "
        "the acting one with --user USERNAME"
    )


@contextmanager
def audited(actor: Actor, action: str, target: str = "") -> Iterator[dict]:
    """Yield a dict of details to fill in; record the outcome when the block ends.

    The event is written outside the operation's own transaction, so a refused or failed
    operation is on record even when its writes roll back.
    """
    details: dict = {}
    try:
        yield details
    except (PermissionDenied, LicensingError) as exc:
        # Denials (wrong secret, lockout, wrong role, missing password) and licensing refusals.
        _record(actor, action, target, AuditEvent.Outcome.DENIED, {**details, "reason": str(exc)})
        raise
    except Exception as exc:
        _record(actor, action, target, AuditEvent.Outcome.FAILED, {**details, "error": str(exc)})
        # A full disk or a storage error reaches every door as its one line, never a
        # traceback; the original stays chained for the logs.
        refusal = as_refusal(exc, doing=_DOING.get(action, action))
        if refusal is exc:
            raise
        raise refusal from exc
    _record(actor, action, target, AuditEvent.Outcome.SUCCESS, details)


def _record(actor: Actor, action: str, target: str, outcome: str, details: dict) -> None:
    audit.record(
        action=action,
        outcome=outcome,
        source=actor.source,
        actor=actor.user,
        target=target,
        details=details,
        ip=actor.ip,
    )


def require_superadmin_or_system(actor: Actor) -> None:
    """For what the failsafe also does by itself on a schedule (never a restore or a mark)."""
    if actor.is_system:
        return
    require_superadmin(actor)


def require_superadmin(actor: Actor) -> None:
    if not is_superadmin(actor.user):
        raise NotSuperAdmin("SuperAdmin only")
    if getattr(actor.user, "must_change_password", False):
        # The web doors send such a user to the password page; no door may act for them.
        raise NotSuperAdmin(
            f"{actor.username} must replace the one-time password first: log in to the site, "
            "which asks for a new one"
        )


@contextmanager
def secret_attempt(actor: Actor, action: str) -> Iterator[None]:
    """Guard one check of a secret with the lockout (see failsafe.lockout.attempt).

    The refused attempt that leaves the action locked tells someone (alerts.secret_lockout),
    once: attempts refused during the lockout do not.
    """
    locked_before = alerts.is_locked(username=actor.username, action=action)
    try:
        with lockout.attempt(username=actor.username, action=action):
            yield
    except PermissionDenied:
        if not locked_before:
            alerts.secret_lockout(actor=actor, action=action)
        raise


def require_failsafe_password(actor: Actor, action: str, password: str | None) -> None:
    """Operations that change what is trusted need the failsafe password, like a restore.

    Each check counts against the lockout of (actor, action) before the password is tested.
    """
    licensing.require_failsafe_password_set()
    with secret_attempt(actor, action):
        licensing.require_valid_failsafe_password(password)
