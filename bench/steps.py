"""What each child process of the benchmark does, one step per process.

The parent starts `bench/run.py --child STEP`; the child sets Django up from the
environment the parent prepared, imports this module (so it may import Django at the top),
runs one step, and writes what it measured to a JSON file. Only the operation itself is
inside the timer: interpreter and Django start-up are the same for every step and are
reported separately by the parent as process time.

Our side goes only through `failsafe.services`, so the benchmark measures whichever archive
store is current.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import django
import zstandard
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from bench import dataset
from failsafe import services
from failsafe.conf import setting
from failsafe.keys import ensure_keyset_file
from failsafe.models import AuditEvent, BackupReplica, VerifiedChunk
from licensing import services as licensing

DUMP_FILE = "dumpdata.json"
# Directories of the work directory the parent creates: the file:// replica, django-dbbackup's.
REPLICA_DIR = "replica"
DBBACKUP_DIR = "dbbackup"
# Compression level of the "dumpdata JSON through zstd" reference size: zstd's default.
JSON_ZSTD_LEVEL = 3


def peak_rss_bytes() -> int | None:
    """This process's resident high-water mark since exec (Linux), else None.

    Read from /proc rather than getrusage: a child's ru_maxrss also counts the memory of
    the process it was forked from, VmHWM only its own.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _reset_peak_rss() -> bool:
    """Start VmHWM afresh from the current RSS (Linux 4.0+); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class SecretCheckMeter:
    """Separates the memory of the argon2 secret checks from the data path's.

    Django's argon2 hasher uses 100 MB per check (memory_cost=102400 KiB), so a trigger or a
    restore process peaks at the interpreter plus that, whatever the database holds. To show
    what the snapshot streaming itself costs, the two licensing checks the services call are
    wrapped: the peak is read around each, then reset. Only measuring is added; the checks
    run unchanged.
    """

    CHECKS = ("require_valid_passkey", "require_valid_failsafe_password")

    def __init__(self):
        self.before_check = 0
        self.during_check = 0
        self.reset_worked = False

    def _wrap(self, check):
        def measured(*args, **kwargs):
            self.before_check = max(self.before_check, peak_rss_bytes() or 0)
            try:
                return check(*args, **kwargs)
            finally:
                self.during_check = max(self.during_check, peak_rss_bytes() or 0)
                self.reset_worked = _reset_peak_rss()

        return measured

    @contextmanager
    def installed(self):
        originals = {name: getattr(licensing, name) for name in self.CHECKS}
        for name, check in originals.items():
            setattr(licensing, name, self._wrap(check))
        try:
            yield self
        finally:
            for name, check in originals.items():
                setattr(licensing, name, check)

    def peaks(self) -> dict:
        """The whole process's peak, the data path's (None if it could not be separated)
        and the secret check's."""
        now = peak_rss_bytes() or 0
        if not self.reset_worked:
            return {"vm_hwm_bytes": max(now, self.during_check)}
        return {
            "vm_hwm_bytes": max(now, self.during_check),
            "data_peak_rss_bytes": max(now, self.before_check),
            "secret_check_peak_bytes": self.during_check,
        }


class Stopwatch:
    def __init__(self):
        self.seconds = 0.0

    @contextmanager
    def running(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started


class StoreWatch:
    """Bytes a step adds to the backup directory: new files and files that changed."""

    def __init__(self, directory: str):
        self.directory = directory
        self.before = self._listing()

    def _listing(self) -> dict[str, tuple[int, int]]:
        listing = {}
        for root, _dirs, files in os.walk(self.directory):
            for name in files:
                path = os.path.join(root, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                listing[path] = (stat.st_size, stat.st_mtime_ns)
        return listing

    def written(self) -> dict[str, int]:
        after = self._listing()
        added = [path for path, entry in after.items() if self.before.get(path) != entry]
        return {
            "bytes_written": sum(after[path][0] for path in added),
            "files_written": len(added),
            "store_bytes": sum(size for size, _ in after.values()),
        }


class Context:
    def __init__(self, workdir: Path, state: dict):
        self.workdir = workdir
        self.state = state

    @property
    def dump_path(self) -> Path:
        return self.workdir / DUMP_FILE

    def actor(self):
        user = services.resolve_superadmin(self.state["superadmin"])
        return services.Actor(user=user, source=AuditEvent.Source.CLI)


def _comparison_counts(result) -> dict:
    """Per model, how many records the comparison found added, removed and modified."""
    counts = {
        label: {
            "added": detail.added.count,
            "removed": detail.removed.count,
            "modified": detail.modified.count,
        }
        for label, detail in result.details.items()
    }
    # The first few issues' texts, so a comparison that found nothing says why.
    return {"found": counts, "issues": len(result.issues), "issue_texts": result.issues[:5]}


# --- steps --------------------------------------------------------------------------


def migrate(ctx: Context) -> dict:
    """The empty schema; on PostgreSQL the parent copies it for pg_restore to restore into."""
    timer = Stopwatch()
    with timer.running():
        call_command("migrate", verbosity=0, interactive=False)
    ensure_keyset_file()
    return {"seconds": timer.seconds, "counts": dataset.population()}


def prepare(ctx: Context) -> dict:
    build = Stopwatch()
    with build.running():
        built = dataset.build(
            rows=ctx.state["rows"],
            seed=ctx.state["seed"],
            superadmin=ctx.state["superadmin"],
            hashes=ctx.state.get("hashes", "unique"),
        )
        dataset.analyze()

    admin = get_user_model().objects.get(pk=built["superadmin_pk"])
    passkey = licensing.issue_passkey()
    licensing.set_failsafe_password(password=ctx.state["failsafe_password"], user=admin)
    return {
        "seconds": build.seconds,
        "counts": dataset.population(),
        "captured_tables": dataset.captured_tables(),
        "population_tables": dataset.population_tables(),
        "incompressible_floor": dataset.incompressible_floor(
            rows=ctx.state["rows"], hashes=ctx.state.get("hashes", "unique")
        ),
        "database": _database_info(),
        "state": {**built, "passkey": passkey},
    }


def _database_info() -> dict:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
        else:
            cursor.execute("SELECT sqlite_version()")
        version = cursor.fetchone()[0]
    return {
        "vendor": connection.vendor,
        "version": version,
        "name": str(settings.DATABASES["default"]["NAME"]),
        "django": django.get_version(),
    }


def backup_step(state_key: str, reason: str) -> Callable[[Context], dict]:
    def step(ctx: Context) -> dict:
        actor = ctx.actor()
        store = StoreWatch(settings.FAILSAFE_BACKUP_DIR)
        timer = Stopwatch()
        with timer.running():
            backup = services.create_backup(actor=actor, reason=reason)
        return {
            "seconds": timer.seconds,
            "archive_size": backup.archive_size,
            **store.written(),
            "state": {state_key: str(backup.id)},
        }

    return step


def unchanged_backup_step(
    state_key: str, reason: str, *, reverify_every_chunk: bool
) -> Callable[[Context], dict]:
    """A backup of data the last backup already holds: every chunk is reused. With a fresh
    chunk index it reads none of them; `reverify_every_chunk` (CHUNK_REVERIFY_SECONDS=0,
    what a backup pays once the entries are older than the age) reads every one again."""
    take_backup = backup_step(state_key, reason)

    def step(ctx: Context) -> dict:
        if reverify_every_chunk:
            # Settings are read when needed, and this child runs this one step.
            settings.FAILSAFE = {**settings.FAILSAFE, "CHUNK_REVERIFY_SECONDS": 0}
        started = timezone.now()
        measured = take_backup(ctx)
        # Chunks the backup read and found good, or wrote: the index entries it renewed.
        measured["chunks_reverified"] = VerifiedChunk.objects.filter(
            verified_at__gte=started
        ).count()
        measured["chunks_stored"] = VerifiedChunk.objects.count()
        return measured

    return step


def backup_with_replica(ctx: Context) -> dict:
    """A backup while one file:// replica is configured (the parent sets FAILSAFE_REPLICAS
    for this child only): what copying to it and reading it back adds."""
    replica_dir = ctx.workdir / REPLICA_DIR
    replica = StoreWatch(str(replica_dir))
    measured = unchanged_backup_step(
        "replica_backup_id", "bench: unchanged, one file:// replica", reverify_every_chunk=False
    )(ctx)
    copies = BackupReplica.objects.filter(backup_id=measured["state"]["replica_backup_id"])
    written = replica.written()
    return {
        **measured,
        "replica_bytes_written": written["bytes_written"],
        "replica_files_written": written["files_written"],
        "replicas": [
            {
                "status": copy.status,
                "error": copy.error,
                "chunks_copied": copy.chunks_copied,
                "bytes_copied": copy.bytes_copied,
            }
            for copy in copies
        ],
    }


def dbbackup(ctx: Context) -> dict:
    """django-dbbackup's `dbbackup` with its defaults (this child runs bench.settings)."""
    store = StoreWatch(str(ctx.workdir / DBBACKUP_DIR / "store"))
    timer = Stopwatch()
    with timer.running():
        call_command("dbbackup", "--noinput", "--quiet", verbosity=0)
    written = store.written()
    return {
        "seconds": timer.seconds,
        "bytes": written["bytes_written"],
        "files": written["files_written"],
        # What it chose for this database: the whole database, as a file copy on SQLite,
        # pg_dump --format=custom on PostgreSQL.
        "connector": _dbbackup_connector(),
    }


def _dbbackup_connector() -> str:
    from dbbackup.db.base import get_connector

    connector = get_connector()
    return f"{type(connector).__module__}.{type(connector).__qualname__}"


def dbrestore(ctx: Context) -> dict:
    """django-dbbackup's `dbrestore` of the newest backup `dbbackup` wrote."""
    timer = Stopwatch()
    with timer.running():
        call_command("dbrestore", "--noinput", "--quiet", verbosity=0)
    # On SQLite it copied a file over the database; count through a new connection.
    connection.close()
    return {"seconds": timer.seconds, "counts": dataset.population()}


def mark_safe(ctx: Context) -> dict:
    actor = ctx.actor()
    # Marking safe checks the failsafe password: measured apart, as for the trigger.
    timer, meter = Stopwatch(), SecretCheckMeter()
    with meter.installed(), timer.running():
        backup = services.mark_safe(
            actor=actor,
            backup_id=ctx.state["full_backup_id"],
            password=ctx.state["failsafe_password"],
        )
    return {"seconds": timer.seconds, **meter.peaks(), "is_safe": backup.is_safe}


def dumpdata(ctx: Context) -> dict:
    timer = Stopwatch()
    with timer.running():
        call_command("dumpdata", *setting("CAPTURE"), output=str(ctx.dump_path), verbosity=0)
    peak = peak_rss_bytes()
    return {
        "seconds": timer.seconds,
        "bytes": ctx.dump_path.stat().st_size,
        # A fairer size reference than raw JSON: the same dump through zstd. Measured after
        # the peak is read, so it does not count against dumpdata's memory.
        "zstd_bytes": _zstd_size(ctx.dump_path),
        "vm_hwm_bytes": peak,
    }


def _zstd_size(path: Path) -> int:
    compressor = zstandard.ZstdCompressor(level=JSON_ZSTD_LEVEL)
    with open(path, "rb") as source:
        compressed = compressor.stream_reader(source)
        size = 0
        while block := compressed.read(1024 * 1024):
            size += len(block)
    return size


def loaddata(ctx: Context) -> dict:
    timer = Stopwatch()
    with timer.running():
        call_command("loaddata", str(ctx.dump_path), verbosity=0)
    return {"seconds": timer.seconds, "counts": dataset.population()}


def change_step(kind: str) -> Callable[[Context], dict]:
    def step(ctx: Context) -> dict:
        timer = Stopwatch()
        with timer.running():
            if kind == "clustered":
                change = dataset.clustered_change(
                    rows=ctx.state["rows"],
                    seed=ctx.state["seed"],
                    first_user_pk=ctx.state["first_user_pk"],
                    hashes=ctx.state.get("hashes", "unique"),
                )
            elif kind == "scattered":
                change = dataset.scattered_change(
                    rows=ctx.state["rows"],
                    seed=ctx.state["seed"],
                    superadmin_pk=ctx.state["superadmin_pk"],
                )
            else:
                change = dataset.change_everywhere()
        return {"seconds": timer.seconds, "change": change, "counts": dataset.population()}

    return step


def compare_step(current_key: str | None, against_key: str | None) -> Callable[[Context], dict]:
    """Compare backup `current_key` (None: live) against `against_key` (None: last safe)."""

    def step(ctx: Context) -> dict:
        actor = ctx.actor()
        current = ctx.state[current_key] if current_key else None
        against = ctx.state[against_key] if against_key else None
        timer = Stopwatch()
        with timer.running():
            result = services.compare(actor=actor, backup_id=current, against=against)
        return {"seconds": timer.seconds, **_comparison_counts(result)}

    return step


def trigger(ctx: Context) -> dict:
    actor = ctx.actor()
    store = StoreWatch(settings.FAILSAFE_BACKUP_DIR)
    timer, meter = Stopwatch(), SecretCheckMeter()
    with meter.installed(), timer.running():
        result = services.trigger(
            actor=actor, passkey=ctx.state["passkey"], reason="bench: emergency trigger"
        )
    peaks = meter.peaks()
    return {
        "seconds": timer.seconds,
        **peaks,
        **store.written(),
        # What the investigation compared: the emergency backup against the safe one.
        **_comparison_counts(result.investigation.comparison),
        "recommendations": len(result.investigation.recommendations),
        "state": {"emergency_backup_id": str(result.backup.id)},
    }


def empty_scope(ctx: Context) -> dict:
    timer = Stopwatch()
    with timer.running():
        deleted = dataset.empty_scope(superadmin_pk=ctx.state["superadmin_pk"])
    return {"seconds": timer.seconds, "deleted": deleted, "counts": dataset.population()}


def restore(ctx: Context) -> dict:
    actor = ctx.actor()
    store = StoreWatch(settings.FAILSAFE_BACKUP_DIR)
    timer, meter = Stopwatch(), SecretCheckMeter()
    with meter.installed(), timer.running():
        result = services.restore(
            actor=actor,
            backup_id=ctx.state["full_backup_id"],
            password=ctx.state["failsafe_password"],
        )
    peaks = meter.peaks()
    return {
        "seconds": timer.seconds,
        **peaks,
        "verified": result.verification.identical,
        "plan": {
            m.label: {"insert": m.insert, "update": m.update, "delete": m.delete}
            for m in result.plan.models
        },
        # What the pre-restore backup added to the store.
        **store.written(),
        "counts": dataset.population(),
    }


STEPS: dict[str, Callable[[Context], dict]] = {
    "migrate": migrate,
    "prepare": prepare,
    "backup": backup_step("full_backup_id", "bench: full backup"),
    "mark_safe": mark_safe,
    "backup_unchanged": unchanged_backup_step(
        "unchanged_backup_id", "bench: unchanged, index fresh", reverify_every_chunk=False
    ),
    "backup_unchanged_reverify": unchanged_backup_step(
        "reverified_backup_id", "bench: unchanged, every chunk read", reverify_every_chunk=True
    ),
    "backup_with_replica": backup_with_replica,
    "dumpdata": dumpdata,
    "dbbackup": dbbackup,
    "dbrestore": dbrestore,
    "change_clustered": change_step("clustered"),
    "backup_after_clustered": backup_step("clustered_backup_id", "bench: after clustered 1%"),
    "compare_live": compare_step(None, None),
    "compare_1pct": compare_step("clustered_backup_id", "full_backup_id"),
    "trigger": trigger,
    "change_scattered": change_step("scattered"),
    "backup_after_scattered": backup_step("scattered_backup_id", "bench: after scattered 1%"),
    "change_everywhere": change_step("everywhere"),
    "backup_after_everywhere": backup_step("everywhere_backup_id", "bench: after 100%"),
    "compare_everywhere": compare_step("everywhere_backup_id", "scattered_backup_id"),
    "empty_scope": empty_scope,
    "restore": restore,
    "loaddata": loaddata,
}


def run_child(*, step: str, workdir: Path, result_path: Path) -> None:
    """Entry point of a child process: Django is set up from the environment here."""

    django.setup()
    state = json.loads((workdir / "state.json").read_text())
    measured = STEPS[step](Context(workdir, state))
    measured.setdefault("vm_hwm_bytes", peak_rss_bytes())
    # Written 0600 in the 0700 work directory: the state part may carry the run's passkey.
    fd = os.open(result_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as result_file:
        json.dump(measured, result_file)
