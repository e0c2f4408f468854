"""One backup or restore at a time, across every process that shares the database.

The lock is the `OperationLock` row named "failsafe", taken and released with
compare-and-set UPDATEs, which behave the same on SQLite and PostgreSQL and need no row
locks held for the length of the operation. A lock left behind by a crashed process does
not block forever: it is taken over once its process is gone (checked when it ran on this
host) or once it is older than OPERATION_LOCK_STALE_AFTER, wherever it ran.
"""

import contextlib
import datetime
import logging
import os
import socket
import threading
from collections.abc import Iterator

from django.db import DatabaseError
from django.utils import timezone

from .conf import setting
from .exceptions import OperationInProgress
from .models import Backup, OperationLock

LOCK_NAME = "failsafe"
# Other rows, for work that must not run twice at once but may run beside a backup
# (failsafe_run_due: two crons firing together run the due schedules once).
RUN_DUE_LOCK_NAME = "run_due"
# Free, held by someone alive, taken over: a few rounds settle any interleaving of those.
ACQUIRE_ROUNDS = 3

logger = logging.getLogger(__name__)
_this_thread = threading.local()


def holding_operation_lock(name: str = LOCK_NAME) -> bool:
    """Whether the current thread of this process is inside `operation_lock` (of `name`)."""
    return name in _held_names()


def _held_names() -> set[str]:
    if not hasattr(_this_thread, "names"):
        _this_thread.names = set()
    return _this_thread.names


@contextlib.contextmanager
def operation_lock(
    *, holder: str, reentrant: bool = False, name: str = LOCK_NAME
) -> Iterator[None]:
    """Hold the failsafe operation lock for the block; raise OperationInProgress if taken.

    Acquire it outside the transaction that does the work: the lock row must be committed
    to be seen by other processes, and a lock taken inside a transaction would only be
    visible, and released, when that transaction ends.

    Taking it twice in one thread is refused like any other holder, unless `reentrant` is
    true, which means "if this thread already holds it, just run the block": the restore
    service holds the lock while it takes its pre-restore backup.

    `name` picks another lock row: locks of different names never block each other.
    """
    if reentrant and holding_operation_lock(name):
        yield
        return
    mine = _acquire(holder, name)
    _held_names().add(name)
    try:
        yield
    finally:
        _held_names().discard(name)
        _release(mine, name)


def _claim(holder: str) -> dict:
    return {
        "holder": holder[: OperationLock._meta.get_field("holder").max_length] or "unnamed",
        "host": _hostname(),
        "pid": os.getpid(),
        "acquired_at": timezone.now(),
    }


def _hostname() -> str:
    return socket.gethostname()[: OperationLock._meta.get_field("host").max_length]


def _acquire(holder: str, name: str = LOCK_NAME) -> dict:
    # get_or_create tolerates two processes creating the row at once (unique primary key).
    OperationLock.objects.get_or_create(name=name)
    for _ in range(ACQUIRE_ROUNDS):
        mine = _claim(holder)
        if OperationLock.objects.filter(name=name, holder="").update(**mine) == 1:
            return mine
        current = OperationLock.objects.get(name=name)
        if not current.holder:
            continue  # released between our two statements
        if not _is_stale(current):
            raise OperationInProgress(_held_message(current))
        # Compare-and-set on the old values: of two processes taking over the same stale
        # lock, one updates the row and the other matches nothing and looks again.
        taken_over = OperationLock.objects.filter(
            name=name,
            holder=current.holder,
            host=current.host,
            pid=current.pid,
            acquired_at=current.acquired_at,
        ).update(**mine)
        if taken_over == 1:
            logger.warning(
                "Took over the failsafe operation lock left by %s (pid %s on %s)",
                current.holder,
                current.pid,
                current.host,
            )
            if name == LOCK_NAME:
                _fail_orphaned_backups(current)
            return mine
    raise OperationInProgress(_held_message(OperationLock.objects.get(name=name)))


def _fail_orphaned_backups(lock: OperationLock) -> None:
    """Backups are only written under this lock: once it is taken over from a process that
    is gone, a backup still RUNNING will never finish. Say so on its row."""
    Backup.objects.filter(status=Backup.Status.RUNNING).update(
        status=Backup.Status.FAILED,
        finished_at=timezone.now(),
        error=(
            f"The process writing it ({lock.holder}, pid {lock.pid} on {lock.host or '?'}) "
            "ended without finishing: its operation lock was taken over"
        )[:2000],
    )


def _is_stale(lock: OperationLock) -> bool:
    if lock.acquired_at is None:
        return True
    stale_after = datetime.timedelta(seconds=setting("OPERATION_LOCK_STALE_AFTER"))
    if timezone.now() - lock.acquired_at > stale_after:
        return True
    # A process on another host cannot be checked from here; only age frees its lock.
    return lock.host == _hostname() and not _process_alive(lock.pid)


def _process_alive(pid: int | None) -> bool:
    if pid is None or pid <= 0:
        # Signalling pid 0 or -1 would mean a whole process group: never probe those, and
        # leave such a lock to the age rule.
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but belongs to another user, or we cannot tell
    return True


def _held_message(lock: OperationLock) -> str:
    if not lock.holder:
        return "Another failsafe operation is starting or ending: try again"
    since = lock.acquired_at.astimezone(datetime.UTC) if lock.acquired_at else None
    return (
        f"Another failsafe operation is running: {lock.holder} (pid {lock.pid} on "
        f"{lock.host or 'unknown host'}) since {f'{since:%H:%M:%S}' if since else '?'} UTC"
    )


def _release(mine: dict, name: str = LOCK_NAME) -> None:
    try:
        released = OperationLock.objects.filter(name=name, **mine).update(
            holder="", host="", pid=None, acquired_at=None
        )
    except DatabaseError:
        # Raising here would hide the exception that ended the block, if any; the lock is
        # taken over once it is stale or this process is gone.
        logger.exception("Could not release the failsafe operation lock held by %s", mine)
        return
    if released != 1:
        logger.warning(
            "The failsafe operation lock held by %s was taken over before it was released",
            mine["holder"],
        )
