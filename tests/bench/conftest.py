"""One benchmark run for the whole tests/bench session: the run is what takes the time, and
every test reads the same document it wrote."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

BASE_DIR = Path(__file__).resolve().parents[2]
ROWS = 300
TIMEOUT = 240


def on_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


@pytest.fixture(scope="session")
def bench_run():
    """(stdout, document) of `bench/run.py --rows 300 --json` on this run's database vendor:
    a fresh SQLite file, or a fresh raos_bench_* database on the tests' PostgreSQL server."""
    database_url = os.environ["DATABASE_URL"] if on_postgres() else "sqlite"
    completed = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            *("--rows", str(ROWS)),
            "--json",
            "--quiet",
            *("--database-url", database_url),
        ],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout, json.loads(completed.stdout)
