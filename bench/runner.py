"""The parent process: a fresh database, one child process per measured step, the report.

The parent never imports Django. It stays small because on Linux a child started with
vfork inherits its parent's memory high-water mark in getrusage; the Python children read
their own from /proc instead, and pg_dump and pg_restore (the non-Python children) are
sampled from /proc/<pid>/status while they run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from bench import machine, report

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_SCRIPT = BASE_DIR / "bench" / "run.py"
BENCH_VAR = BASE_DIR / "var" / "bench"
DATABASE_PREFIX = "raos_bench"
POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql", "postgis"}
LOG_TAIL = 40
POLL_INTERVAL = 0.02

# (name in the report, child step). Order matters: each step starts from the state the
# steps before it left, and the backups they took.
PLAN: list[tuple[str, str]] = [
    ("migrate", "migrate"),
    ("prepare", "prepare"),
    ("backup", "backup"),
    ("mark_safe", "mark_safe"),
    ("backup_unchanged", "backup_unchanged"),
    ("backup_unchanged_reverify", "backup_unchanged_reverify"),
    ("backup_with_replica", "backup_with_replica"),
    ("dumpdata", "dumpdata"),
    ("pg_dump", "pg_dump"),
    ("pg_restore", "pg_restore"),
    ("dbbackup", "dbbackup"),
    ("change_clustered", "change_clustered"),
    ("backup_after_clustered", "backup_after_clustered"),
    ("compare_live", "compare_live"),
    ("compare_1pct", "compare_1pct"),
    ("trigger", "trigger"),
    ("change_scattered", "change_scattered"),
    ("backup_after_scattered", "backup_after_scattered"),
    ("change_everywhere", "change_everywhere"),
    ("backup_after_everywhere", "backup_after_everywhere"),
    ("compare_everywhere", "compare_everywhere"),
    ("empty_for_restore", "empty_scope"),
    ("restore", "restore"),
    ("empty_for_loaddata", "empty_scope"),
    ("loaddata", "loaddata"),
    # Last: dbrestore puts back the whole database as it was when dbbackup ran.
    ("empty_for_dbrestore", "empty_scope"),
    ("dbrestore", "dbrestore"),
]
# What --skip NAME leaves out: the anchor, what depends on it, and the emptying only it needs.
SKIPPABLE = {
    "dumpdata": {"dumpdata", "empty_for_loaddata", "loaddata"},
    "loaddata": {"empty_for_loaddata", "loaddata"},
    "pg_dump": {"pg_dump", "pg_restore"},
    "pg_restore": {"pg_restore"},
    "dbbackup": {"dbbackup", "empty_for_dbrestore", "dbrestore"},
    "dbrestore": {"empty_for_dbrestore", "dbrestore"},
    "replica": {"backup_with_replica"},
}
# Steps whose child runs bench.settings (the project's settings plus django-dbbackup).
DBBACKUP_STEPS = {"dbbackup", "dbrestore"}
# Steps that are other programs, run by the parent; not profilable.
EXTERNAL_STEPS = {"pg_dump", "pg_restore"}


class BenchError(Exception):
    """A step failed: the run measured nothing trustworthy."""


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def is_postgres(url: str | None) -> bool:
    return bool(url) and urlsplit(url).scheme in POSTGRES_SCHEMES


class SqliteDatabase:
    vendor = "sqlite"

    def __init__(self, workdir: Path):
        self.path = workdir / "db.sqlite3"
        self.name = str(self.path)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def create(self) -> None:
        """Nothing to do: migrate creates the file."""

    def drop(self) -> None:
        """Nothing to do: the file goes with the work directory."""

    def describe(self) -> dict:
        return {"vendor": self.vendor, "version": sqlite3.sqlite_version, "name": self.name}

    def pg_dump_env(self, dbname: str | None = None) -> dict:
        raise BenchError("pg_dump needs PostgreSQL")


class PostgresDatabase:
    """A database of our own on the server DATABASE_URL names, created and dropped here."""

    vendor = "postgresql"

    def __init__(self, server_url: str):
        self.server = urlsplit(server_url)
        self.name = f"{DATABASE_PREFIX}_{secrets.token_hex(4)}"
        # pg_restore's target: an empty copy of the migrated schema (copy_schema).
        self.restore_target = f"{self.name}_restore"

    @property
    def url(self) -> str:
        return urlunsplit(self.server._replace(path=f"/{self.name}"))

    def _connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(
            host=self.server.hostname or None,
            port=self.server.port or None,
            user=unquote(self.server.username or "") or None,
            password=unquote(self.server.password or "") or None,
            dbname=dbname,
            autocommit=True,
        )

    def create(self) -> None:
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def copy_schema(self) -> None:
        """The migrated database, before a row is built, copied as a template: the same
        tables, indexes, constraints and sequences, and the rows migrate itself wrote
        (content types, permissions) under the same primary keys."""
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.restore_target}" TEMPLATE "{self.name}"')

    def drop_tables(self, dbname: str, tables: list[str]) -> None:
        """CASCADE also drops the other tables' foreign keys to them and their triggers."""
        quoted = ", ".join(f'"{table}"' for table in tables)
        with self._connect(dbname) as conn:
            conn.execute(f"DROP TABLE {quoted} CASCADE")

    def row_counts(self, dbname: str, tables: dict[str, str]) -> dict[str, int]:
        with self._connect(dbname) as conn:
            return {
                key: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                for key, table in tables.items()
            }

    def drop(self) -> None:
        with self._connect() as conn:
            for name in (self.restore_target, self.name):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def describe(self) -> dict:
        with self._connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        return {
            "vendor": self.vendor,
            "version": version,
            "name": self.name,
            "host": self.server.hostname,
            "port": self.server.port,
        }

    def pg_dump_env(self, dbname: str | None = None) -> dict:
        env = {"PGDATABASE": dbname or self.name}
        if self.server.hostname:
            env["PGHOST"] = self.server.hostname
        if self.server.port:
            env["PGPORT"] = str(self.server.port)
        if self.server.username:
            env["PGUSER"] = unquote(self.server.username)
        if self.server.password:
            env["PGPASSWORD"] = unquote(self.server.password)
        return env


@dataclass
class Measured:
    returncode: int
    process_seconds: float
    # The child's rusage; on Linux it also counts the parent's memory (see the docstring).
    ru_maxrss_bytes: int
    # VmHWM read from /proc while the child ran: its own, missing at most the last moments.
    polled_peak_bytes: int | None = None


def wait_measured(argv: list[str], *, env: dict, log_path: Path) -> Measured:
    """Run one child to its end; its wall time and its own rusage (os.wait4, not the
    RUSAGE_CHILDREN maximum over every child so far)."""
    polled_peak = 0
    with open(log_path, "ab") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, env=env, cwd=BASE_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        status_path = Path(f"/proc/{process.pid}/status")
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            polled_peak = max(polled_peak, _vm_hwm(status_path))
            time.sleep(POLL_INTERVAL)
        elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return Measured(process.returncode, elapsed, usage.ru_maxrss * scale, polled_peak or None)


def _vm_hwm(status_path: Path) -> int:
    try:
        for line in status_path.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Run:
    rows: int
    seed: int
    hashes: str
    database_url: str | None
    skip: set[str]
    keep: bool
    progress: bool
    # Steps to run under pyinstrument; their time and memory then include its overhead.
    profile: set[str] = field(default_factory=set)
    workdir: Path = field(init=False)
    measurements: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    changes: dict = field(default_factory=dict)
    prepared: dict = field(default_factory=dict)
    migrated: dict = field(default_factory=dict)

    def __post_init__(self):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.workdir = BENCH_VAR / f"run-{stamp}-{secrets.token_hex(3)}"
        if is_postgres(self.database_url):
            self.database = PostgresDatabase(self.database_url)
        else:
            self.database = SqliteDatabase(self.workdir)

    # --- the children's world ---------------------------------------------------------

    def child_env(self) -> dict:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="raos.settings",
            DATABASE_URL=self.database.url,
            FAILSAFE_BACKUP_DIR=str(self.workdir / "backups"),
            FAILSAFE_KEYSET_FILE=str(self.workdir / "failsafe.keyset"),
            # Empty overrides an inline keyset a .env might hold: this run has its own.
            FAILSAFE_KEYSET="",
            FAILSAFE_AUDIT_KEY=secrets.token_urlsafe(32),
            SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            # DEBUG keeps every query in memory, which would be measured as ours.
            DEBUG="false",
            PYTHONPATH=os.pathsep.join(filter(None, [str(BASE_DIR), os.environ.get("PYTHONPATH")])),
        )
        return env

    def _write_state(self, state: dict) -> None:
        path = self.workdir / "state.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as state_file:
            json.dump(state, state_file)

    def _read_state(self) -> dict:
        return json.loads((self.workdir / "state.json").read_text())

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr, flush=True)

    def _failed(self, name: str, log_path: Path) -> BenchError:
        tail = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        return BenchError(f"step {name} failed; the end of its log:\n" + "\n".join(tail))

    # --- steps ------------------------------------------------------------------------

    def _step_env(self, step: str, env: dict) -> dict:
        """The few steps that measure something the project is not configured for get it
        in their own child only."""
        if step in DBBACKUP_STEPS:
            return {
                **env,
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "BENCH_DBBACKUP_DIR": str(self.workdir / "dbbackup"),
            }
        if step == "backup_with_replica":
            # Named, so the replica's rows and objects are kept under a stable name.
            return {**env, "FAILSAFE_REPLICAS": f"bench={(self.workdir / 'replica').as_uri()}"}
        return env

    def _run_python_step(self, name: str, step: str, env: dict) -> dict:
        env = self._step_env(step, env)
        result_path = self.workdir / "results" / f"{name}.json"
        log_path = self.workdir / "logs" / f"{name}.log"
        child = [str(RUN_SCRIPT), "--child", step, "--workdir", str(self.workdir)]
        child += ["--result", str(result_path)]
        profile_path = None
        if name in self.profile:
            profile_path = self.profile_dir / f"{name}.txt"
            profiler = ["-m", "pyinstrument", "-r", "text", "--no-color", "--show", "*/django/db/*"]
            profiler += ["-o", str(profile_path)]
            argv = [sys.executable, *profiler, *child]
        else:
            argv = [sys.executable, *child]
        measured = wait_measured(argv, env=env, log_path=log_path)
        if measured.returncode != 0 or not result_path.exists():
            raise self._failed(name, log_path)
        result = json.loads(result_path.read_text())
        state_update = result.pop("state", None)
        if state_update:
            self._write_state({**self._read_state(), **state_update})
        vm_hwm = result.pop("vm_hwm_bytes", None)
        peak = vm_hwm or measured.ru_maxrss_bytes
        result.update(
            process_seconds=measured.process_seconds,
            ru_maxrss_bytes=measured.ru_maxrss_bytes,
            peak_rss_bytes=peak,
        )
        result.setdefault("data_peak_rss_bytes", peak)
        if profile_path:
            result["profile"] = str(profile_path)
        return result

    @property
    def pg_dump_path(self) -> Path:
        return self.workdir / "pg_dump.custom"

    def _run_tool(self, name: str, argv: list[str], env: dict) -> dict:
        """One run of a PostgreSQL client program; its time is its whole process."""
        log_path = self.workdir / "logs" / f"{name}.log"
        measured = wait_measured(argv, env=env, log_path=log_path)
        if measured.returncode != 0:
            first = (log_path.read_text(errors="replace").strip().splitlines() or ["?"])[0]
            raise _Skip(f"{name} failed: {first}")
        peak = measured.polled_peak_bytes or measured.ru_maxrss_bytes
        return {
            "seconds": measured.process_seconds,
            "process_seconds": measured.process_seconds,
            "ru_maxrss_bytes": measured.ru_maxrss_bytes,
            # The program's own; the server's work is not in it.
            "peak_rss_bytes": peak,
            "data_peak_rss_bytes": peak,
        }

    def _run_pg_dump(self, env: dict) -> dict:
        """`pg_dump -Fc` of the captured tables: what a user would keep instead of ours
        (custom format, compressed, schema and data of those tables)."""
        argv = [shutil.which("pg_dump"), "--format=custom", "--no-owner", "--no-privileges"]
        argv += ["-f", str(self.pg_dump_path)]
        for table in self.prepared["captured_tables"]:
            argv += ["-t", table]
        result = self._run_tool("pg_dump", argv, {**env, **self.database.pg_dump_env()})
        return {**result, "bytes": self.pg_dump_path.stat().st_size, "format": "custom"}

    def _run_pg_restore(self, env: dict) -> dict:
        """`pg_restore` of that dump into an empty copy of the schema: a second database
        made from the migrated one (copy_schema), whose six captured tables are dropped
        first (not timed) so that pg_restore does its whole job, timed: create the tables,
        load the rows, build the indexes, add and validate the foreign keys (to
        auth_permission, ...) and the tables' triggers, in one transaction.

        Not --data-only into the migrated tables: the journal app's pghistory triggers on
        them name their table without a schema, and pg_restore empties search_path, so every
        row fails; --disable-triggers would get past that only by skipping the FK checks."""
        if not self.pg_dump_path.exists():
            raise _Skip("pg_dump wrote no dump to restore")
        target = self.database.restore_target
        self.database.drop_tables(target, self.prepared["captured_tables"])
        argv = [shutil.which("pg_restore"), "--single-transaction", "--exit-on-error"]
        argv += ["--no-owner", "--no-privileges", "--dbname", target]
        argv.append(str(self.pg_dump_path))
        result = self._run_tool("pg_restore", argv, {**env, **self.database.pg_dump_env(target)})
        counts = self.database.row_counts(target, self.prepared["population_tables"])
        return {**result, "counts": counts}

    @property
    def profile_dir(self) -> Path:
        # Outside the work directory, so profiles outlive a run without --keep.
        return BENCH_VAR / "profiles" / self.workdir.name

    def _unavailable(self) -> dict[str, str]:
        """The anchors this machine or database cannot run, and why."""
        reasons = {}
        if self.database.vendor != "postgresql":
            reasons["pg_dump"] = "pg_dump and pg_restore are anchors on PostgreSQL only"
        else:
            for tool in ("pg_dump", "pg_restore"):
                if shutil.which(tool) is None:
                    reasons[tool] = f"{tool} is not installed"
        if importlib.util.find_spec("dbbackup") is None:
            reasons["dbbackup"] = (
                "django-dbbackup is not installed (pip install -r requirements-dev.txt)"
            )
        elif self.database.vendor == "postgresql":
            # Its PostgreSQL connector runs pg_dump --format=custom and pg_restore.
            for tool in ("pg_dump", "pg_restore"):
                if shutil.which(tool) is None:
                    reasons["dbbackup"] = f"django-dbbackup needs {tool}, which is not installed"
        return reasons

    def _plan(self) -> list[tuple[str, str]]:
        reasons = {name: "--skip " + name for name in self.skip}
        for name, reason in self._unavailable().items():
            reasons.setdefault(name, reason)
        left_out = set()
        for name, reason in reasons.items():
            for step in SKIPPABLE[name]:
                left_out.add(step)
                self.skipped.setdefault(step, reason)
        # Emptying the scope is a preparation, not a measurement: not listed as skipped.
        for name in [name for name in self.skipped if name.startswith("empty_for_")]:
            del self.skipped[name]
        return [(name, step) for name, step in PLAN if name not in left_out]

    def execute(self) -> dict:
        plan = self._plan()
        python_steps = {name for name, step in plan if step not in EXTERNAL_STEPS}
        unknown = self.profile - python_steps
        if unknown:
            raise BenchError(f"--profile: no Python step named {', '.join(sorted(unknown))}")
        for sub in ("results", "logs", "backups", "replica", "dbbackup/store", "dbbackup/tmp"):
            (self.workdir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.workdir.chmod(0o700)
        self._write_state(
            {
                "rows": self.rows,
                "seed": self.seed,
                "hashes": self.hashes,
                "superadmin": "bench-root",
                # A throwaway secret for a throwaway database; never printed.
                "failsafe_password": secrets.token_urlsafe(24),
            }
        )
        env = self.child_env()
        if self.profile:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.database.create()
            for number, (name, step) in enumerate(plan, start=1):
                self._say(f"[{number:2d}/{len(plan)}] {name} ...")
                try:
                    if step == "pg_dump":
                        result = self._run_pg_dump(env)
                    elif step == "pg_restore":
                        result = self._run_pg_restore(env)
                    else:
                        result = self._run_python_step(name, step, env)
                except _Skip as skip:
                    self.skipped[name] = str(skip)
                    self._say(f"        skipped: {skip}")
                    continue
                self._record(name, result)
                if step == "migrate" and any(s == "pg_restore" for _, s in plan):
                    self.database.copy_schema()
                self._say(
                    f"        {report.seconds_text(result['seconds'])}, "
                    f"peak {report.bytes_text(result['peak_rss_bytes'])}"
                )
            return self.document()
        finally:
            if not self.keep:
                self.database.drop()
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                self._say(f"kept: {self.workdir} and database {self.database.name}")

    def _record(self, name: str, result: dict) -> None:
        if name == "prepare":
            self.prepared = result
        elif name == "migrate":
            self.migrated = result
        change = result.pop("change", None)
        if change:
            self.changes[name.removeprefix("change_")] = change
        self.measurements[name] = result

    def document(self) -> dict:
        prepared = self.prepared
        database = {**prepared["database"], **self.database.describe()}
        return {
            "rows": self.rows,
            "seed": self.seed,
            "machine": machine.describe(),
            "code": code_version(),
            "database": database,
            "dataset": {
                "password_hashes": self.hashes,
                **prepared["counts"],
                "build_seconds": prepared["seconds"],
                "migrate_seconds": self.migrated["seconds"],
                # What migrate leaves in the captured tables (the restores' empty start).
                "after_migrate": self.migrated["counts"],
                "incompressible_floor": prepared["incompressible_floor"],
            },
            "changes": self.changes,
            "measurements": {
                k: v for k, v in self.measurements.items() if k not in ("migrate", "prepare")
            },
            "skipped": self.skipped,
            "workdir": str(self.workdir),
            "kept": self.keep,
        }


def code_version() -> dict:
    """The commit measured and how many files differ from it: a result describes a tree."""
    git = shutil.which("git")
    if git is None:
        return {}
    # --no-optional-locks: reading the status must not rewrite the index of a shared tree.
    commands = {
        "commit": [git, "rev-parse", "--short", "HEAD"],
        "changes": [git, "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
    }
    found = {}
    for name, argv in commands.items():
        completed = subprocess.run(argv, cwd=BASE_DIR, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            return {}
        found[name] = completed.stdout
    return {
        "commit": found["commit"].strip(),
        "modified_files": len(found["changes"].splitlines()),
    }


class _Skip(Exception):
    """A baseline that cannot run here; the report says why."""


def command_line(argv: list[str]) -> str:
    shown = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append(redact(arg))
            hide_next = False
            continue
        if arg.startswith("--database-url="):
            shown.append("--database-url=" + redact(arg.split("=", 1)[1]))
            continue
        hide_next = arg == "--database-url"
        shown.append(arg)
    return "bench/run.py " + shlex.join(shown)
