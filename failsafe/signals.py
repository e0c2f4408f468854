"""Signal receivers that are doors: events from outside the failsafe reaching its services.

django-axes sends `user_locked_out` when failed logins cross its limit; the failsafe
audits that (failsafe.logins) and tells someone, here. The attempted password never comes
this way: axes passes the request, the username and the address only.
"""

from __future__ import annotations

import logging

from . import logins, services

logger = logging.getLogger(__name__)


def notify_login_lockout(sender, request, username, ip_address, **kwargs) -> None:
    """Receives axes' user_locked_out; only the login that started the lockout notifies."""
    failures = logins.failures_starting_lockout(request)
    if failures is None:
        return
    try:
        services.report_login_lockout(
            username=username or "", address=ip_address, failures=failures
        )
    except Exception:
        # The login is refused either way; a notification must not turn that into an error.
        logger.exception("The login lockout notification could not be sent")
