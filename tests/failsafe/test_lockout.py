import datetime
from unittest import mock

import pytest
from django.core.exceptions import PermissionDenied

from failsafe import lockout
from failsafe.exceptions import LockedOut
from failsafe.models import SecretAttemptCounter
from failsafe.render import seed

RESTORE = "failsafe.restore"
TRIGGER = "failsafe.trigger"


class Clock:
    def __init__(self):
        self.now = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)

    def advance(self, **elapsed):
        self.now += datetime.timedelta(**elapsed)


@pytest.fixture
def clock():
    moving_clock = Clock()
    with mock.patch("django.utils.timezone.now", side_effect=lambda: moving_clock.now):
        yield moving_clock


def fail(times: int, *, username: str = "alice", action: str = RESTORE) -> None:
    for _ in range(times):
        with pytest.raises(PermissionDenied), lockout.attempt(username=username, action=action):
            raise PermissionDenied("wrong secret")


def failures(*, username: str = "alice", action: str = RESTORE) -> int:
    return SecretAttemptCounter.objects.get(username=username, action=action).failures


class NoGuess(Exception):
    """Leaves the guard as an error that is no guess, so the attempt is given back."""


def is_locked(*, username: str = "alice", action: str = RESTORE) -> bool:
    """Whether the next attempt is refused; the probe tests no secret and is given back."""
    try:
        with lockout.attempt(username=username, action=action):
            raise NoGuess
    except LockedOut:
        return True
    except NoGuess:
        return False


def attempt(secret_is_right, *, username: str = "alice", action: str = RESTORE) -> bool:
    """A caller as the services are written: the secret is checked inside the guard."""
    try:
        with lockout.attempt(username=username, action=action):
            if not secret_is_right():
                raise PermissionDenied("wrong secret")
    except LockedOut:
        raise
    except PermissionDenied:
        return False
    return True


@pytest.mark.django_db
def test_five_failures_lock_and_the_sixth_attempt_is_refused_unchecked(clock):
    wrong_secret = mock.Mock(return_value=False)
    for _ in range(4):
        assert attempt(wrong_secret) is False
        assert not is_locked()
    assert attempt(wrong_secret) is False

    with pytest.raises(LockedOut) as refusal:
        attempt(wrong_secret)

    assert wrong_secret.call_count == 5
    assert str(refusal.value) == (
        "Too many failed attempts: failsafe.restore is locked for alice until 12:15 UTC "
        "(about 15 minutes). Run manage.py failsafe_unlock to lift it"
    )


@pytest.mark.django_db
def test_even_the_right_secret_is_refused_while_locked(clock):
    fail(5)
    right_secret = mock.Mock(return_value=True)
    with pytest.raises(LockedOut):
        attempt(right_secret)
    right_secret.assert_not_called()


@pytest.mark.django_db
def test_failures_spread_beyond_the_window_never_lock(clock):
    fail(4)
    clock.advance(seconds=15 * 60 + 1)
    fail(1)

    assert failures() == 1
    assert not is_locked()
    fail(3)
    assert not is_locked()
    fail(1)
    assert is_locked()


@pytest.mark.django_db
def test_the_cool_off_ends_by_itself(clock):
    fail(5)
    clock.advance(minutes=14)
    right_secret = mock.Mock(return_value=True)
    with pytest.raises(LockedOut, match=r"about 1 minute\)"):
        attempt(right_secret)
    right_secret.assert_not_called()

    clock.advance(minutes=1, seconds=1)

    assert lockout.lockout_status(username="alice") == []
    # The next wrong secret is checked again, and starts a new count instead of re-locking.
    wrong_secret = mock.Mock(return_value=False)
    assert attempt(wrong_secret) is False
    wrong_secret.assert_called_once()
    assert failures() == 1
    assert not is_locked()


@pytest.mark.django_db
def test_failures_while_locked_do_not_extend_the_cool_off(clock):
    fail(5)
    locked_until = SecretAttemptCounter.objects.get(username="alice").locked_until
    clock.advance(minutes=10)
    fail(3)  # refused unchecked, and never pushing the end further away
    assert SecretAttemptCounter.objects.get(username="alice").locked_until == locked_until


@pytest.mark.django_db
def test_unlock_lifts_one_account_or_all(clock):
    fail(5, username="alice")
    fail(5, username="alice", action=TRIGGER)
    fail(5, username="bob")
    fail(2, username="carol")

    assert lockout.unlock(username="alice") == 2
    assert not is_locked(username="alice")
    assert not is_locked(username="alice", action=TRIGGER)
    assert is_locked(username="bob")
    # The failures behind the lockout are forgotten: alice starts with a full set.
    fail(4, username="alice")
    assert not is_locked(username="alice")

    assert lockout.unlock() == 1
    assert not is_locked(username="bob")
    assert SecretAttemptCounter.objects.get(username="carol").failures == 0
    assert lockout.unlock() == 0


@pytest.mark.django_db
def test_lockouts_are_per_account_and_per_action(clock):
    fail(5, username="alice", action=RESTORE)

    assert is_locked(username="alice", action=RESTORE)
    assert not is_locked(username="alice", action=TRIGGER)
    assert not is_locked(username="bob", action=RESTORE)
    fail(4, username="alice", action=TRIGGER)
    assert not is_locked(username="alice", action=TRIGGER)


@pytest.mark.django_db
def test_a_right_secret_resets_the_count_but_not_a_lockout(clock):
    fail(4)
    lockout.register_success(username="alice", action=RESTORE)
    fail(4)
    assert not is_locked()

    fail(1)
    lockout.register_success(username="alice", action=RESTORE)
    assert is_locked()


@pytest.mark.django_db
def test_lockout_status_lists_the_lockouts_in_force(clock):
    fail(5, username="alice")
    clock.advance(minutes=5)
    fail(5, username="alice", action=TRIGGER)
    fail(5, username="bob")
    fail(2, username="carol")

    assert [seed.lockout(entry) for entry in lockout.lockout_status(username="alice")] == [
        {
            "Username": "alice",
            "Action": RESTORE,
            "Failures": 5,
            "LockedUntil": "2030-06-01T12:15:00Z",
            "MinutesLeft": 10,
        },
        {
            "Username": "alice",
            "Action": TRIGGER,
            "Failures": 5,
            "LockedUntil": "2030-06-01T12:20:00Z",
            "MinutesLeft": 15,
        },
    ]
    assert [entry.username for entry in lockout.lockout_status()] == [
        "alice",
        "alice",
        "bob",
    ]


@pytest.mark.django_db
def test_thresholds_come_from_settings(clock, settings):
    settings.FAILSAFE = {"LOCKOUT_THRESHOLD": 2, "LOCKOUT_COOLOFF": 60}
    fail(2)
    with pytest.raises(LockedOut, match="until 12:01 UTC"):
        attempt(lambda: True)
    clock.advance(seconds=61)
    assert not is_locked()


@pytest.mark.django_db
def test_an_overlong_username_is_counted_not_refused(clock):
    username = "x" * 500
    fail(5, username=username)
    assert is_locked(username=username)


@pytest.mark.django_db
def test_parallel_attempts_cannot_test_more_guesses_than_the_threshold(clock):
    # Five requests are checking their secret at once; a sixth arrives before any ends.
    in_flight = [lockout.attempt(username="alice", action=RESTORE) for _ in range(5)]
    for guard in in_flight:
        guard.__enter__()
    checked = mock.Mock(return_value=True)
    with pytest.raises(LockedOut):
        attempt(checked)
    checked.assert_not_called()
    for guard in in_flight:
        guard.__exit__(None, None, None)


@pytest.mark.django_db
def test_an_error_that_is_no_guess_gives_the_attempt_back(clock):
    fail(2)
    with pytest.raises(RuntimeError), lockout.attempt(username="alice", action=RESTORE):
        raise RuntimeError("database hiccup")
    assert failures() == 2
