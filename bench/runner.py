"""The parent process: a fresh database, one child process per measured step, the report.

The parent never imports Django. It stays small because on Linux a child started with
vfork inherits its parent's memory high-water mark in getrusage; the Python children read
their own from /proc instead, and pg_dump (the one non-Python child) is sampled from
/proc/<pid>/status while it runs.
"""

from __future__ import annotations

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
    ("prepare", "prepare"),
    ("backup", "backup"),
    ("mark_safe", "mark_safe"),
    ("backup_unchanged", "backup_unchanged"),
    ("backup_unchanged_reverify", "backup_unchanged_reverify"),
    ("dumpdata", "dumpdata"),
    ("pg_dump", "pg_dump"),
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
]
# What --skip dumpdata leaves out: the slow baselines and the emptying only they need.
SKIPPABLE = {
    "dumpdata": {"dumpdata", "empty_for_loaddata", "loaddata"},
    "loaddata": {"empty_for_loaddata", "loaddata"},
    "pg_dump": {"pg_dump"},
}


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

    def pg_dump_env(self) -> dict:
        raise BenchError("pg_dump needs PostgreSQL")


class PostgresDatabase:
    """A database of our own on the server DATABASE_URL names, created and dropped here."""

    vendor = "postgresql"

    def __init__(self, server_url: str):
        self.server = urlsplit(server_url)
        self.name = f"{DATABASE_PREFIX}_{secrets.token_hex(4)}"

    @property
    def url(self) -> str:
        return urlunsplit(self.server._replace(path=f"/{self.name}"))

    def _connect(self):
        import psycopg

        return psycopg.connect(
            host=self.server.hostname or None,
            port=self.server.port or None,
            user=unquote(self.server.username or "") or None,
            password=unquote(self.server.password or "") or None,
            dbname="postgres",
            autocommit=True,
        )

    def create(self) -> None:
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

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

    def pg_dump_env(self) -> dict:
        env = {"PGDATABASE": self.name}
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

    def _run_python_step(self, name: str, step: str, env: dict) -> dict:
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

    def _run_pg_dump(self, env: dict) -> dict:
        executable = shutil.which("pg_dump")
        if executable is None:
            raise _Skip("pg_dump is not installed")
        out = self.workdir / "pg_dump.sql"
        log_path = self.workdir / "logs" / "pg_dump.log"
        argv = [executable, "--data-only", "--no-owner", "--no-privileges", "-f", str(out)]
        for table in self.prepared["captured_tables"]:
            argv += ["-t", table]
        measured = wait_measured(
            argv, env={**env, **self.database.pg_dump_env()}, log_path=log_path
        )
        if measured.returncode != 0:
            first = (log_path.read_text(errors="replace").strip().splitlines() or ["?"])[0]
            raise _Skip(f"pg_dump failed: {first}")
        peak = measured.polled_peak_bytes or measured.ru_maxrss_bytes
        return {
            "seconds": measured.process_seconds,
            "process_seconds": measured.process_seconds,
            "bytes": out.stat().st_size,
            "ru_maxrss_bytes": measured.ru_maxrss_bytes,
            # pg_dump's own; the server's work is not in it.
            "peak_rss_bytes": peak,
            "data_peak_rss_bytes": peak,
        }

    @property
    def profile_dir(self) -> Path:
        # Outside the work directory, so profiles outlive a run without --keep.
        return BENCH_VAR / "profiles" / self.workdir.name

    def _plan(self) -> list[tuple[str, str]]:
        left_out = set().union(*(SKIPPABLE[name] for name in self.skip))
        for name in self.skip:
            self.skipped[name] = "--skip " + name
        if self.database.vendor != "postgresql" and "pg_dump" not in self.skip:
            left_out.add("pg_dump")
            self.skipped["pg_dump"] = "the floor is measured on PostgreSQL only"
        return [(name, step) for name, step in PLAN if name not in left_out]

    def execute(self) -> dict:
        plan = self._plan()
        python_steps = {name for name, step in plan if step != "pg_dump"}
        unknown = self.profile - python_steps
        if unknown:
            raise BenchError(f"--profile: no Python step named {', '.join(sorted(unknown))}")
        for sub in ("results", "logs", "backups"):
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
                    else:
                        result = self._run_python_step(name, step, env)
                except _Skip as skip:
                    self.skipped[name] = str(skip)
                    self._say(f"        skipped: {skip}")
                    continue
                self._record(name, result)
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
                "migrate_seconds": prepared["migrate_seconds"],
            },
            "changes": self.changes,
            "measurements": {k: v for k, v in self.measurements.items() if k != "prepare"},
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
