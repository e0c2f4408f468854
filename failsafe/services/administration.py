"""The failsafe itself: its status, its password, its audit trail and its lockouts."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext

from django.utils import timezone

from licensing import services as licensing

from .. import audit, lockout, replicas
from .. import logins as login_lockouts
from ..models import AuditEvent, Backup
from ..snapshot import iso
from .backups import last_safe_backup
from .drills import verified_restore
from .guards import (
    ACTION_SET_PASSWORD,
    ACTION_UNLOCK,
    Actor,
    audited,
    require_failsafe_password,
    require_superadmin,
    secret_attempt,
)
from .keys import keyset_problems
from .monitoring import health
from .results import PasswordResult, Status


def failsafe_password_is_set() -> bool:
    """Whether the failsafe password is set: what a door asks to choose the form it shows."""
    return licensing.failsafe_password_is_set()


def status(*, actor: Actor) -> Status:
    with audited(actor, "failsafe.status"):
        require_superadmin(actor)
        complete = Backup.objects.filter(status=Backup.Status.COMPLETE)
        safe = last_safe_backup()
        newest = complete.order_by("-created_at").first()
        replica_lag = replicas.lag()
        return Status(
            failsafe_password_set=licensing.failsafe_password_is_set(),
            total_backups=complete.count(),
            safe_backups=complete.filter(is_safe=True).count(),
            last_safe_backup_id=str(safe.id) if safe else None,
            last_backup_at=newest.created_at if newest else None,
            last_backup=newest,
            lockouts=lockout.lockout_status(username=actor.username),
            problems=_problems() + replicas.problems(replica_lag),
            replicas=replica_lag,
            health=health(),
            last_verified_restore=verified_restore(),
        )


def _problems() -> list[str]:
    """Why the failsafe cannot be trusted to recover, from what is cheap to know: the
    keyset, the last check of the audit chain (never a new walk of it), the last backup."""
    problems = keyset_problems()
    check = last_audit_verification()
    if check is not None and check.details.get("ok") is False:
        problems.append(
            f"The audit chain is broken at event #{check.details.get('first_broken_seq')}: "
            f"{check.details.get('reason')} (found by the check of "
            f"{iso(check.created_at, timespec='seconds')}; failsafe_audit --verify checks again)"
        )
    last = Backup.objects.exclude(status=Backup.Status.RUNNING).order_by("-created_at").first()
    if last is not None and last.status == Backup.Status.FAILED:
        error = " ".join((last.error or "no reason recorded").split())[:300]
        problems.append(
            f"The last backup ({last.id}, {iso(last.created_at, timespec='seconds')}) "
            f"failed: {error}"
        )
    return problems


def set_failsafe_password(
    *, actor: Actor, password: str, current_password: str | None = None
) -> PasswordResult:
    with audited(actor, ACTION_SET_PASSWORD) as details:
        require_superadmin(actor)
        changing = licensing.failsafe_password_is_set()
        details["change"] = changing
        # Changing it checks the current password: that is a guess, and guesses are limited.
        guard = secret_attempt(actor, ACTION_SET_PASSWORD) if changing else nullcontext()
        with guard:
            replaced = licensing.set_failsafe_password(
                password=password, user=actor.user, current_password=current_password
            )
        return PasswordResult(replaced=replaced, timestamp=timezone.now())


ACTION_VERIFY_AUDIT = "failsafe.audit.verify"


def verify_audit_chain(*, actor: Actor) -> audit.ChainVerification:
    with audited(actor, ACTION_VERIFY_AUDIT) as details:
        require_superadmin(actor)
        result = audit.verify_chain()
        # What the check found, field for field: the audit list shows the latest one.
        details.update(dataclasses.asdict(result))
        return result


def last_audit_verification() -> AuditEvent | None:
    """The newest completed check of the audit chain: its event's details say what it found."""
    return (
        AuditEvent.objects.filter(
            action=ACTION_VERIFY_AUDIT, outcome=AuditEvent.Outcome.SUCCESS
        )
        .order_by("-seq")
        .first()
    )


def audit_events(*, actor: Actor):
    with audited(actor, "failsafe.audit"):
        require_superadmin(actor)
        return AuditEvent.objects.order_by("-seq")


def unlock(
    *,
    actor: Actor,
    account: str | None = None,
    password: str | None = None,
    logins: str | None = None,
) -> int:
    """Lift lockouts and return how many: those after wrong secrets, of `account` or of
    every account; or, given `logins`, the login lockouts of that username and of the
    addresses its failed logins came from (see failsafe.logins.unlock)."""
    target = logins if logins is not None else account or "all"
    with audited(actor, ACTION_UNLOCK, target=target) as details:
        require_superadmin(actor)
        require_failsafe_password(actor, ACTION_UNLOCK, password)
        if logins is not None:
            details["lockouts"] = "logins"
            lifted = login_lockouts.unlock(username=logins)
        else:
            lifted = lockout.unlock(username=account)
        details["lifted"] = lifted
        return lifted
