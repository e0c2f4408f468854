"""Login lockouts: django-axes guards every login door, and this module ties it to the failsafe.

django-axes counts failed logins per username and per client address and refuses a login
once either has failed AXES_FAILURE_LIMIT times within AXES_COOLOFF_TIME (raos/settings.py),
without testing the password. Around it the failsafe adds: an audit event for each failed
login and each lockout (the receivers below, connected in apps.py), the words a locked-out
login is answered with, and `unlock`, which `manage.py failsafe_unlock --logins` calls
through the services.
"""

from __future__ import annotations

import logging
import math

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.utils import reset
from django.db.models import Sum
from django.utils import timezone

from . import audit
from .models import AuditEvent

logger = logging.getLogger(__name__)

ACTION_LOGIN_FAILED = "login.failed"
ACTION_LOGIN_LOCKOUT = "login.lockout"

# The audit trail names the door a login came through by its URL namespace; the site's own
# login page is the way to the terminal page.
_SOURCES = {"admin": AuditEvent.Source.ADMIN, "api": AuditEvent.Source.API}


class LockoutBackend(AxesStandaloneBackend):
    """axes' check, first in AUTHENTICATION_BACKENDS: a locked-out login is refused before
    any backend tests its password.

    Every login door passes its request to authenticate(). A call without one (the shell,
    code checking a password it already holds) comes from no client and has nothing to be
    counted against, so it goes on to the next backend instead of failing outright.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def cool_off_minutes() -> int:
    return max(1, math.ceil(get_cool_off().total_seconds() / 60))


def lockout_message() -> str:
    """What a locked-out login is told, at every door."""
    minutes = cool_off_minutes()
    return (
        "Too many failed logins for this username or from this address: logins are refused "
        f"for up to {minutes} minute{'' if minutes == 1 else 's'}. An administrator can lift "
        "the lockout with manage.py failsafe_unlock --logins USERNAME"
    )


# --- the audit trail -----------------------------------------------------------------


def audit_failed_login(sender, credentials, request=None, **kwargs) -> None:
    """Receives django.contrib.auth's user_login_failed: one event per password found wrong.

    A login that axes locked out is left to `audit_lockout`: the one that crossed the limit
    is recorded there, and one refused during a lockout tested no password, so hammering a
    locked door adds nothing to the trail. `credentials` arrive with the password already
    masked by Django; only the username is kept.
    """
    if request is None or getattr(request, "axes_locked_out", False):
        return
    _record(request, ACTION_LOGIN_FAILED, get_client_username(request, credentials), {})


def failures_starting_lockout(request) -> int | None:
    """The failures counted when axes' user_locked_out started a lockout; None for a login
    refused while one lasts.

    axes sends the signal again for every login refused while the lockout lasts; only the
    one that counted a failure (axes_failures_since_start is set then) starts a lockout.
    """
    return getattr(request, "axes_failures_since_start", None)


def audit_lockout(sender, request, username, ip_address, **kwargs) -> None:
    """Receives axes' user_locked_out when a failure crosses the limit (once per lockout)."""
    failures = failures_starting_lockout(request)
    if failures is None:
        return
    _record(
        request,
        ACTION_LOGIN_LOCKOUT,
        username,
        {
            "failures": failures,
            "limit": get_failure_limit(request, None),
            "minutes": cool_off_minutes(),
        },
    )


def _record(request, action: str, username: str | None, details: dict) -> None:
    match = getattr(request, "resolver_match", None)
    namespace = match.namespace if match is not None else ""
    try:
        audit.record(
            action=action,
            outcome=AuditEvent.Outcome.DENIED,
            source=_SOURCES.get(namespace, AuditEvent.Source.TERMINAL),
            target=username or "",
            details={"door": getattr(request, "path", ""), **details},
            ip=getattr(request, "axes_ip_address", None),
        )
    except Exception:
        # The login is refused either way; an audit trail that cannot be written must not
        # turn that answer into a server error. The reason is logged.
        logger.exception("The audit event %s could not be recorded", action)


# --- lifting a lockout ---------------------------------------------------------------


def unlock(*, username: str) -> int:
    """Forget `username`'s failed logins; return how many lockouts that lifted.

    Those are the username's own lockout and the lockouts of the addresses its failures came
    from, unless other usernames' failures from such an address still reach the limit: that
    address stays locked, since it was guessing at other accounts too.
    """
    if not username:
        raise ValueError("unlock needs a username")  # axes' reset() would forget everyone
    addresses = set(
        AccessAttempt.objects.filter(username=username).values_list("ip_address", flat=True)
    )
    counted = [{"username": username}] + [{"ip_address": address} for address in addresses]
    locked = [key for key in counted if _locked(key)]
    reset(username=username)
    return sum(1 for key in locked if not _locked(key))


def _locked(key: dict) -> bool:
    """Whether the failures axes counts under `key` reach the limit: its own test, for a
    username or an address rather than a request."""
    recent = AccessAttempt.objects.filter(
        **key, attempt_time__gte=timezone.now() - get_cool_off()
    )
    failures = recent.aggregate(total=Sum("failures_since_start"))["total"] or 0
    return failures >= get_failure_limit(None, None)
