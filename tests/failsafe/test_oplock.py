import datetime
import os
import socket
import subprocess
import sys

import pytest
from django.utils import timezone

from failsafe.exceptions import OperationInProgress
from failsafe.models import OperationLock
from failsafe.oplock import holding_operation_lock, operation_lock


def lock_row() -> OperationLock:
    return OperationLock.objects.get(name="failsafe")


def left_behind(*, holder: str, host: str, pid: int, acquired_at: datetime.datetime) -> None:
    """A lock row as another process would have left it."""
    OperationLock.objects.update_or_create(
        name="failsafe",
        defaults={"holder": holder, "host": host, "pid": pid, "acquired_at": acquired_at},
    )


def finished_process_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: nothing answers to this pid any more
    return child.pid


@pytest.mark.django_db
def test_the_lock_is_held_for_the_block_and_released_after():
    assert not holding_operation_lock()
    with operation_lock(holder="manual backup by root"):
        held = lock_row()
        assert held.holder == "manual backup by root"
        assert held.pid == os.getpid()
        assert held.host == socket.gethostname()
        assert holding_operation_lock()

    assert not holding_operation_lock()
    assert lock_row().holder == ""
    assert lock_row().pid is None


@pytest.mark.django_db
def test_a_second_acquire_is_refused_while_held():
    with operation_lock(holder="restore of b1 by root"):
        with pytest.raises(OperationInProgress) as refusal, operation_lock(holder="backup"):
            pytest.fail("entered a lock that was already held")
        assert lock_row().holder == "restore of b1 by root"
        assert holding_operation_lock()

    assert lock_row().holder == ""
    message = str(refusal.value)
    assert message.startswith(
        f"Another failsafe operation is running: restore of b1 by root "
        f"(pid {os.getpid()} on {socket.gethostname()}) since "
    )
    assert message.endswith(" UTC")


@pytest.mark.django_db
def test_a_live_process_on_this_host_keeps_its_lock():
    # A few minutes ago, whatever the time of day: well inside the stale-after hour.
    since = (timezone.now() - datetime.timedelta(minutes=5)).replace(microsecond=0)
    left_behind(
        holder="scheduled backup", host=socket.gethostname(), pid=os.getppid(), acquired_at=since
    )

    with pytest.raises(OperationInProgress) as refusal, operation_lock(holder="backup"):
        pytest.fail("took the lock of a live process")

    assert str(refusal.value) == (
        f"Another failsafe operation is running: scheduled backup "
        f"(pid {os.getppid()} on {socket.gethostname()}) since {since:%H:%M:%S} UTC"
    )
    assert lock_row().holder == "scheduled backup"


@pytest.mark.django_db
def test_a_recent_lock_from_another_host_is_respected_even_with_a_dead_pid():
    left_behind(
        holder="restore",
        host="other-host.invalid",
        pid=finished_process_pid(),
        acquired_at=timezone.now(),
    )

    with pytest.raises(OperationInProgress), operation_lock(holder="backup"):
        pytest.fail("took a recent lock whose process cannot be checked from here")
    assert lock_row().host == "other-host.invalid"


@pytest.mark.django_db
def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over():
    left_behind(
        holder="crashed restore",
        host=socket.gethostname(),
        pid=finished_process_pid(),
        acquired_at=timezone.now(),
    )

    with operation_lock(holder="manual backup"):
        assert lock_row().holder == "manual backup"
        assert lock_row().pid == os.getpid()
    assert lock_row().holder == ""


@pytest.mark.django_db
def test_an_old_lock_is_taken_over_whatever_its_host(settings):
    settings.FAILSAFE = {"OPERATION_LOCK_STALE_AFTER": 600}
    left_behind(
        holder="hung backup",
        host="other-host.invalid",
        pid=1,
        acquired_at=timezone.now() - datetime.timedelta(seconds=601),
    )

    with operation_lock(holder="manual backup"):
        assert lock_row().holder == "manual backup"
        assert lock_row().host == socket.gethostname()


@pytest.mark.django_db
def test_the_lock_is_released_after_an_exception_in_the_block():
    with pytest.raises(RuntimeError, match="capture failed"), operation_lock(holder="backup"):
        raise RuntimeError("capture failed")

    assert lock_row().holder == ""
    assert not holding_operation_lock()
    with operation_lock(holder="next backup"):
        assert lock_row().holder == "next backup"


@pytest.mark.django_db
def test_reentrant_runs_inside_the_holder_and_leaves_the_lock_to_it():
    with operation_lock(holder="restore of b1 by root"):
        with operation_lock(holder="pre-restore backup", reentrant=True):
            assert lock_row().holder == "restore of b1 by root"
            assert holding_operation_lock()
        # Leaving the inner block must not release the restore's lock.
        assert lock_row().holder == "restore of b1 by root"
        assert holding_operation_lock()
    assert lock_row().holder == ""


@pytest.mark.django_db
def test_reentrant_takes_the_lock_when_not_already_held():
    with operation_lock(holder="scheduled backup", reentrant=True):
        assert lock_row().holder == "scheduled backup"
    assert lock_row().holder == ""


@pytest.mark.django_db
def test_releasing_never_frees_a_lock_someone_else_took_over():
    with operation_lock(holder="very long restore"):
        # Meanwhile another process judged the lock stale and took it over.
        left_behind(
            holder="newer backup", host="other-host.invalid", pid=4242, acquired_at=timezone.now()
        )
        assert lock_row().holder != "very long restore"

    assert lock_row().holder == "newer backup"
    assert not holding_operation_lock()


@pytest.mark.django_db
def test_a_backup_left_running_by_a_dead_process_is_marked_failed_on_takeover(actor, keyset):
    from failsafe import services
    from failsafe.models import Backup

    orphan = Backup.objects.create(type=Backup.Type.SCHEDULED)
    left_behind(
        holder="scheduled backup by system",
        host=socket.gethostname(),
        pid=finished_process_pid(),
        acquired_at=timezone.now(),
    )

    fresh = services.create_backup(actor=actor)

    orphan.refresh_from_db()
    assert orphan.status == Backup.Status.FAILED
    assert orphan.finished_at is not None
    assert "scheduled backup by system" in orphan.error
    assert "ended without finishing" in orphan.error
    assert fresh.status == Backup.Status.COMPLETE


@pytest.mark.django_db
def test_a_running_backup_is_left_alone_while_its_writer_holds_the_lock(actor, keyset):
    from failsafe.models import Backup

    running = Backup.objects.create(type=Backup.Type.MANUAL)
    with (
        operation_lock(holder="manual backup by root"),
        pytest.raises(OperationInProgress),
        operation_lock(holder="another backup"),
    ):
        pass
    running.refresh_from_db()
    assert running.status == Backup.Status.RUNNING
