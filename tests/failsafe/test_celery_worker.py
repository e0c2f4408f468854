"""Beat fires a scheduled backup through a real Celery worker, as `make run` starts it.

The worker is `celery -A raos worker --beat` in its own process, on the embedded broker
(kombu's filesystem transport in a folder of the test's) and on the real Redis at
127.0.0.1:6379. It shares the database with the test: a SQLite file on SQLite, the test
database itself on PostgreSQL. Set-up and checks go through manage.py in new processes too,
so nothing of the test's own process is in the worker's way.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from failsafe.schedules import DEFAULTS, SCHEDULED_BACKUP_TASK
from tests.servers import _die_with_the_tests

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/11"
# How long the worker may take to start and beat to fire; the test ends as soon as it has.
DEADLINE_SECONDS = 90
EVERY_SECONDS = 2

WORKER = [
    sys.executable,
    "-m",
    "celery",
    "-A",
    "raos",
    "worker",
    "--beat",
    "--scheduler",
    "django_celery_beat.schedulers:DatabaseScheduler",
    "-l",
    "info",
    "--concurrency",
    "1",
]

# Runs in a new process: the scheduled backup every EVERY_SECONDS seconds on the test's
# own queue, every other schedule off (so nothing but the backup can fire meanwhile).
SET_UP_SCHEDULES = """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
every, _ = IntervalSchedule.objects.get_or_create(every={every}, period="seconds")
PeriodicTask.objects.exclude(task={task!r}).update(enabled=False)
backup = PeriodicTask.objects.get(task={task!r})
backup.interval = every
backup.queue = {queue!r}
backup.save()
"""

REPORT = f"""
import json
from django_celery_beat.models import PeriodicTask
from failsafe.models import AuditEvent, Backup
print(json.dumps({{
    "backups": list(Backup.objects.values("type", "status", "created_by_username")),
    "events": list(
        AuditEvent.objects.filter(action="failsafe.backup").values(
            "actor_username", "source", "outcome", "details"
        )
    ),
    "runs": PeriodicTask.objects.get(task={SCHEDULED_BACKUP_TASK!r}).total_run_count,
}}))
"""


class Site:
    """The database, store and keyset the worker and the manage.py commands share."""

    def __init__(self, tmp_path: Path, broker_url: str, audit_key: str):
        if connection.vendor == "postgresql":
            # The test database: the test runs with transaction=True, so what the other
            # processes write is flushed when it ends.
            database = connection.settings_dict
            database_url = (
                f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:"
                f"{database['PORT'] or 5432}/{database['NAME']}"
            )
        else:
            database_url = f"sqlite:///{tmp_path / 'site.sqlite3'}"
        self.queue = f"failsafe-test-{uuid.uuid4().hex[:12]}"
        self.queue_dir = tmp_path / "celery"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "FAILSAFE_BACKUP_DIR": str(tmp_path / "backups"),
            "FAILSAFE_KEYSET_FILE": str(tmp_path / "failsafe.keyset"),
            "FAILSAFE_KEYSET": "",
            "FAILSAFE_CHUNK_KEY": "",
            # The test's own, so the audit trail is one chain whoever wrote to it.
            "FAILSAFE_AUDIT_KEY": audit_key,
            "CELERY_BROKER_URL": broker_url,
            "CELERY_QUEUE_DIR": str(self.queue_dir),
            "RAOS_SUPERADMIN_PASSWORD": "Operator-Chosen-Password-7",
        }
        self.env.pop("FAILSAFE_REPLICAS", None)
        self.log_path = tmp_path / "worker.log"
        self.worker: subprocess.Popen | None = None

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "--no-imports", "-c", code)

    def report(self) -> dict:
        return json.loads(self.shell(REPORT).strip().splitlines()[-1])

    def start_worker(self) -> None:
        with open(self.log_path, "wb") as log:
            self.worker = subprocess.Popen(
                [*WORKER, "-Q", self.queue, "--hostname", f"{self.queue}@%h"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group, so the test sees whether any of it is left; and it
                # stops if the test run itself is killed.
                start_new_session=True,
                preexec_fn=_die_with_the_tests,
            )

    def stop_worker(self) -> None:
        """A warm shutdown, as a service manager asks for one: SIGTERM to the worker alone,
        which lets its pool finish the task at hand, then stops the pool. What is left after
        30 s is killed."""
        if self.worker is None:
            return
        group = self.worker.pid
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _group_alive(group) and time.monotonic() < deadline:
            self.worker.poll()  # reaps the worker itself once it exits
            time.sleep(0.2)
        if _group_alive(group):
            _signal_group(group, signal.SIGKILL)
        self.worker.wait(timeout=30)
        # Nothing of the worker's group is left: its pool's children went with it.
        deadline = time.monotonic() + 10
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(group), "the worker left processes behind"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _signal_group(group: int, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal_number)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _migrated_site(tmp_path: Path, broker_url: str) -> Site:
    site = Site(tmp_path, broker_url, settings.FAILSAFE_AUDIT_KEY)
    if connection.vendor != "postgresql":
        site.manage("migrate", "--noinput")
    boot = json.loads(site.manage("raos_bootstrap", "--superadmin", "root", "--json", "--no-input"))
    assert boot["SchedulesCreated"] == [default.name for default in DEFAULTS]
    set_up = SET_UP_SCHEDULES.format(
        every=EVERY_SECONDS, task=SCHEDULED_BACKUP_TASK, queue=site.queue
    )
    before = json.loads(site.shell(set_up + REPORT).strip().splitlines()[-1])
    assert before["backups"] == [] and before["runs"] == 0
    return site


def _beat_fires_a_scheduled_backup(site: Site) -> None:
    site.start_worker()
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        report = site.report()
        while not report["backups"] and time.monotonic() < deadline:
            assert site.worker.poll() is None, site.log()
            time.sleep(1)
            report = site.report()
    finally:
        site.stop_worker()
    assert report["backups"], f"no backup within {DEADLINE_SECONDS} s:\n{site.log()}"
    # As it stands once the worker is gone (beat records its runs when it syncs).
    report = site.report()
    assert {
        (backup["type"], backup["status"], backup["created_by_username"])
        for backup in report["backups"]
    } == {("SCHEDULED", "COMPLETE", "system")}
    assert report["events"], "the scheduled backup left no audit event"
    for event in report["events"]:
        assert (event["actor_username"], event["source"], event["outcome"]) == (
            "system",
            "system",
            "SUCCESS",
        )
        assert event["details"]["type"] == "SCHEDULED"
    # Beat recorded its runs on the row, as the admin shows them.
    assert report["runs"] >= 1
    assert f"Sending due task failsafe: scheduled backup ({SCHEDULED_BACKUP_TASK})" in site.log()


@pytest.mark.django_db(transaction=True)
def test_beat_fires_a_scheduled_backup_on_the_embedded_broker(tmp_path):
    site = _migrated_site(tmp_path, "filesystem://")
    _beat_fires_a_scheduled_backup(site)
    # The worker made its broker folders itself; the message was taken off the queue.
    assert (site.queue_dir / "queue").is_dir() and (site.queue_dir / "control").is_dir()


@pytest.mark.django_db(transaction=True)
def test_beat_fires_a_scheduled_backup_on_redis(tmp_path):
    site = _migrated_site(tmp_path, REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # Redis must run here, as in CI: a missing server fails the test
    try:
        _beat_fires_a_scheduled_backup(site)
        assert not site.queue_dir.exists()  # nothing of the embedded broker was used
    finally:
        # The test's queue only: other workers may share this Redis database.
        for key in client.scan_iter(match=f"*{site.queue}*"):
            client.delete(key)
        for binding in client.scan_iter(match="_kombu.binding.*"):
            for member in client.smembers(binding):
                if site.queue.encode() in member:
                    client.srem(binding, member)
