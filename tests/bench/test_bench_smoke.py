"""The benchmark must not rot: it runs end to end, at a tiny size, on this run's database.

It runs in a subprocess exactly as `make bench` does, on SQLite or (when the tests run on
PostgreSQL) in a fresh raos_bench_* database on the same server. The tests check that
every measurement is there and describes the run — the defined change was found, the
restores brought everything back — and never how fast anything was.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from bench import report

BASE_DIR = Path(__file__).resolve().parents[2]
ROWS = 300
TIMEOUT = 180

OURS = [
    "backup",
    "mark_safe",
    "backup_after_clustered",
    "compare_live",
    "compare_1pct",
    "trigger",
    "backup_after_scattered",
    "backup_after_everywhere",
    "compare_everywhere",
    "restore",
]
MEASURED = OURS + [
    "dumpdata",
    "loaddata",
    "change_clustered",
    "change_scattered",
    "change_everywhere",
    "empty_for_restore",
    "empty_for_loaddata",
]
BACKUPS = ["backup", "backup_after_clustered", "backup_after_scattered", "trigger"]
# What the run counts after building and after each restore.
COUNTED = (
    "users",
    "groups",
    "licenses",
    "user_groups",
    "user_permissions",
    "group_permissions",
)
TARGETS = [
    "backup (create_backup)",
    "restore into an emptied scope",
    "peak memory, whole process",
    "peak memory without the argon2 secret check",
    "archive size vs dumpdata's JSON",
    "2nd backup after the clustered 1% change: bytes written",
    "2nd backup after a scattered 1% update: bytes written",
    "compare two backups 1% apart vs two that differ everywhere",
    "emergency trigger end to end",
]


def _on_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


@pytest.fixture(scope="module")
def bench_run():
    database_url = os.environ["DATABASE_URL"] if _on_postgres() else "sqlite"
    completed = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--rows",
            str(ROWS),
            "--json",
            "--quiet",
            "--database-url",
            database_url,
        ],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout, json.loads(completed.stdout)


def _user_counts(measurement: dict) -> dict:
    return measurement["found"]["accounts.user"]


def test_every_step_is_measured_in_its_own_process(bench_run):
    _stdout, doc = bench_run
    measurements = doc["measurements"]
    for name in MEASURED:
        step = measurements[name]
        assert step["seconds"] > 0, name
        # The process time holds the measured operation plus start-up.
        assert step["process_seconds"] > step["seconds"], name
        # Python with Django loaded is tens of MB; anything smaller was not measured.
        assert step["peak_rss_bytes"] > 20 * report.MB, name
        assert step["data_peak_rss_bytes"] <= step["peak_rss_bytes"], name


def test_the_secret_checks_are_measured_apart_from_the_data_path(bench_run):
    _stdout, doc = bench_run
    for name in ("trigger", "restore"):
        step = doc["measurements"][name]
        # argon2's 100 MB is in the whole-process peak and left out of the data path's.
        assert step["secret_check_peak_bytes"] > step["data_peak_rss_bytes"]
        assert step["peak_rss_bytes"] >= step["secret_check_peak_bytes"]


def test_backups_and_dumps_report_what_they_wrote(bench_run):
    _stdout, doc = bench_run
    measurements = doc["measurements"]
    for name in BACKUPS:
        assert measurements[name]["bytes_written"] > 0, name
    dump = measurements["dumpdata"]
    assert 0 < dump["zstd_bytes"] < dump["bytes"]


def test_pg_dump_is_the_floor_on_postgresql_only(bench_run):
    _stdout, doc = bench_run
    if _on_postgres():
        assert doc["measurements"]["pg_dump"]["bytes"] > 0
        assert doc["database"]["vendor"] == "postgresql"
    else:
        assert "pg_dump" not in doc["measurements"]
        assert "PostgreSQL" in doc["skipped"]["pg_dump"]
        assert doc["database"]["vendor"] == "sqlite"


def test_the_comparisons_find_exactly_the_defined_change(bench_run):
    _stdout, doc = bench_run
    clustered = doc["changes"]["clustered"]
    expected = {
        "modified": clustered["users_updated"],
        "removed": clustered["users_deleted"],
        "added": clustered["users_appended"],
    }
    measurements = doc["measurements"]
    assert _user_counts(measurements["compare_1pct"]) == expected
    assert _user_counts(measurements["compare_live"]) == expected
    assert _user_counts(measurements["trigger"]) == expected
    # Scattered backup vs everywhere backup: every user's email differs.
    users_then = measurements["change_scattered"]["counts"]["users"]
    assert _user_counts(measurements["compare_everywhere"]) == {
        "modified": users_then,
        "removed": 0,
        "added": 0,
    }
    assert clustered["definition"] and doc["changes"]["scattered"]["definition"]


def test_both_restores_start_empty_and_bring_back_the_built_population(bench_run):
    _stdout, doc = bench_run
    built = {table: doc["dataset"][table] for table in COUNTED}
    assert built["users"] == ROWS and built["licenses"] == ROWS // 3
    measurements = doc["measurements"]
    for emptied in ("empty_for_restore", "empty_for_loaddata"):
        counts = measurements[emptied]["counts"]
        assert counts["users"] == 1  # the acting SuperAdmin
        assert counts["licenses"] == counts["groups"] == counts["user_groups"] == 0
    assert measurements["restore"]["verified"] is True
    assert measurements["restore"]["counts"] == built
    assert measurements["loaddata"]["counts"] == built


def test_every_target_is_reported_and_rendered(bench_run):
    _stdout, doc = bench_run
    rows = doc["targets"]
    for label in TARGETS:
        matching = [row for row in rows if row["what"].startswith(label)]
        assert matching, label
        assert all(row["ours"] > 0 for row in matching), label
    for row in rows:
        assert row["passed"] in (True, False, None)
    assert doc["all_targets_met"] == all(row["passed"] is not False for row in rows)
    table = report.render(doc)
    for label in TARGETS:
        assert label in table
    assert doc["machine"]["cpu"] and doc["machine"]["python"]


def test_no_secret_reaches_the_output(bench_run):
    stdout, doc = bench_run
    assert "SERVER-" not in stdout  # the passkey's shape
    assert "passkey" not in stdout.lower()
    assert "failsafe_password" not in stdout


@pytest.mark.django_db
def test_the_run_leaves_no_database_or_files_behind(bench_run):
    _stdout, doc = bench_run
    assert not Path(doc["workdir"]).exists()
    if _on_postgres():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [doc["database"]["name"]]
            )
            assert cursor.fetchone() is None


def test_strict_turns_a_missed_target_into_a_failing_exit_code():
    met = {"what": "backup", "passed": True}
    missed = {"what": "restore", "passed": False}
    informational = {"what": "trigger", "passed": None}
    assert report.exit_code([met, informational], strict=True) == 0
    assert report.exit_code([met, missed], strict=True) == 1
    assert report.exit_code([met, missed], strict=False) == 0
