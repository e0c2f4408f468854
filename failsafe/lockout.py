"""Locks one account out of one secret-checked action after too many wrong secrets.

Counted per (username, action): a wrong passkey on a restore does not lock the same
account's failsafe password change. LOCKOUT_THRESHOLD failures within LOCKOUT_WINDOW seconds
lock the action for LOCKOUT_COOLOFF seconds. A lockout is never permanent: it ends by itself
when the cool-off is over, and `unlock` (manage.py failsafe_unlock, from the server's shell)
lifts it at once. Callers check secrets inside `attempt`, so a locked account's attempts
are refused without a guess being tested.
"""

import datetime
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from .conf import setting
from .exceptions import LockedOut
from .models import SecretAttemptCounter

_RESET = {"failures": 0, "window_started_at": None, "locked_until": None}


def _normalized(username: str, action: str) -> tuple[str, str]:
    # Usernames may come straight from a request; an over-long one must not make the
    # database refuse the counter (PostgreSQL enforces the column length).
    field = SecretAttemptCounter._meta.get_field
    return (
        str(username)[: field("username").max_length],
        str(action)[: field("action").max_length],
    )


def _minutes_left(locked_until: datetime.datetime, now: datetime.datetime) -> int:
    return max(1, math.ceil((locked_until - now).total_seconds() / 60))


def _refusal(counter: SecretAttemptCounter, now: datetime.datetime) -> LockedOut:
    minutes = _minutes_left(counter.locked_until, now)
    until = counter.locked_until.astimezone(datetime.UTC)
    return LockedOut(
        f"Too many failed attempts: {counter.action} is locked for {counter.username} until "
        f"{until:%H:%M} UTC (about {minutes} minute{'' if minutes == 1 else 's'}). "
        "Run manage.py failsafe_unlock to lift it"
    )


def _locked_counter(username: str, action: str) -> SecretAttemptCounter:
    """The counter row, created if needed, locked until the current transaction ends."""
    if connection.vendor == "sqlite":
        # SQLite has no row locks and ignores select_for_update. A write as the first
        # statement takes its database write lock now, before we read the count, so two
        # processes cannot both read 4 and both write 5.
        SecretAttemptCounter.objects.filter(username=username, action=action).update(
            failures=F("failures")
        )
    # get_or_create survives the race of two first failures: the loser's insert hits the
    # unique constraint inside a savepoint and it reads the winner's row instead.
    counter, _ = SecretAttemptCounter.objects.get_or_create(username=username, action=action)
    return SecretAttemptCounter.objects.select_for_update().get(pk=counter.pk)


def _restart_window_if_over(counter: SecretAttemptCounter, now: datetime.datetime) -> None:
    """An expired window, or an ended cool-off, starts counting afresh."""
    window = datetime.timedelta(seconds=setting("LOCKOUT_WINDOW"))
    window_expired = counter.window_started_at is None or now - counter.window_started_at > window
    if counter.locked_until is not None or window_expired:
        counter.failures = 0
        counter.window_started_at = now
        counter.locked_until = None


def register_success(*, username: str, action: str) -> None:
    """Forget the failures after a right secret.

    A lockout in force is left alone: the right secret arriving in the middle of someone
    else's guessing does not hand the guesser a fresh set of attempts.
    """
    username, action = _normalized(username, action)
    SecretAttemptCounter.objects.filter(username=username, action=action).filter(
        Q(locked_until__isnull=True) | Q(locked_until__lte=timezone.now())
    ).update(**_RESET)


@contextmanager
def attempt(*, username: str, action: str) -> Iterator[None]:
    """Guard one check of a secret: `with attempt(...): check_the_secret()`.

    The attempt is counted as a failure *before* the secret is checked, under the counter's
    row lock, so requests sent in parallel cannot test more than THRESHOLD guesses between
    them: the one over the threshold locks the action and is refused unchecked. A
    PermissionDenied from the block confirms the failure; a clean exit is a success and
    forgets the failures; any other error was no guess and gives the attempt back.
    """
    username, action = _normalized(username, action)
    _reserve(username, action)
    try:
        yield
    except PermissionDenied:
        _confirm_failure(username, action)
        raise
    except BaseException:
        SecretAttemptCounter.objects.filter(
            username=username, action=action, failures__gt=0
        ).update(failures=F("failures") - 1)
        raise
    register_success(username=username, action=action)


def _reserve(username: str, action: str) -> None:
    with transaction.atomic():
        counter = _locked_counter(username, action)
        now = timezone.now()
        if counter.locked_until is not None and counter.locked_until > now:
            raise _refusal(counter, now)
        _restart_window_if_over(counter, now)
        counter.failures += 1
        over_threshold = counter.failures > setting("LOCKOUT_THRESHOLD")
        if over_threshold:
            counter.locked_until = now + datetime.timedelta(seconds=setting("LOCKOUT_COOLOFF"))
        counter.save(update_fields=["failures", "window_started_at", "locked_until"])
    # Raised after the commit, so the lock it engaged stays.
    if over_threshold:
        raise _refusal(counter, now)


def _confirm_failure(username: str, action: str) -> None:
    with transaction.atomic():
        counter = _locked_counter(username, action)
        now = timezone.now()
        already_locked = counter.locked_until is not None and counter.locked_until > now
        if not already_locked and counter.failures >= setting("LOCKOUT_THRESHOLD"):
            counter.locked_until = now + datetime.timedelta(seconds=setting("LOCKOUT_COOLOFF"))
            counter.save(update_fields=["locked_until"])


def unlock(*, username: str | None = None) -> int:
    """Lift the lockouts of one account (every action), or of all accounts; return how many.

    The failures counted towards a lockout are forgotten too, so the account starts clean.
    """
    counters = SecretAttemptCounter.objects.all()
    if username is not None:
        counters = counters.filter(username=_normalized(username, "")[0])
    with transaction.atomic():
        lifted = counters.filter(locked_until__gt=timezone.now()).update(**_RESET)
        counters.exclude(failures=0, window_started_at=None, locked_until=None).update(**_RESET)
    return lifted


@dataclass(frozen=True)
class Lockout:
    """A lockout in force."""

    username: str
    action: str
    failures: int
    locked_until: datetime.datetime
    minutes_left: int


def lockout_status(*, username: str | None = None) -> list[Lockout]:
    """The lockouts in force, for one account or all, soonest end first."""
    now = timezone.now()
    counters = SecretAttemptCounter.objects.filter(locked_until__gt=now)
    if username is not None:
        counters = counters.filter(username=_normalized(username, "")[0])
    return [
        Lockout(
            username=counter.username,
            action=counter.action,
            failures=counter.failures,
            locked_until=counter.locked_until,
            minutes_left=_minutes_left(counter.locked_until, now),
        )
        for counter in counters.order_by("locked_until", "username", "action")
    ]
