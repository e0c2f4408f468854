"""The benchmark must not rot: it runs end to end, at a tiny size, on this run's database.

It runs once per session (tests/bench/conftest.py), in a subprocess exactly as `make bench`
does, on SQLite or (when the tests run on PostgreSQL) in a fresh raos_bench_* database on
the same server. The tests check that every measurement is there and describes the run —
the defined change was found, every restore brought everything back, each anchor ran or
says why it could not — and never how fast anything was.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

import psycopg
import pytest

from bench import report
from tests.bench.conftest import BASE_DIR, ROWS, on_postgres

OURS = [
    "backup",
    "mark_safe",
    "backup_unchanged",
    "backup_unchanged_reverify",
    "backup_with_replica",
    "backup_after_clustered",
    "compare_live",
    "compare_1pct",
    "trigger",
    "backup_after_scattered",
    "backup_after_everywhere",
    "compare_everywhere",
    "restore",
]
# requirements-dev.txt pins it; a venv without it must say so instead of measuring.
HAS_DBBACKUP = importlib.util.find_spec("dbbackup") is not None
# Python children besides ours: Django's and django-dbbackup's commands, the changes.
PYTHON_ANCHORS = ["dumpdata", "loaddata"] + (["dbbackup", "dbrestore"] if HAS_DBBACKUP else [])
PREPARATIONS = [
    "change_clustered",
    "change_scattered",
    "change_everywhere",
    "empty_for_restore",
    "empty_for_loaddata",
] + (["empty_for_dbrestore"] if HAS_DBBACKUP else [])
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
    "backup (create_backup) vs dumpdata",
    "restore into an emptied scope (incl. pre-restore backup, verify) vs loaddata",
    "backup vs django-dbbackup's dbbackup",
    "restore into an emptied scope (incl. pre-restore backup, verify) vs dbrestore",
    "2nd backup after a scattered 1% update: bytes written",
    "2nd backup after the clustered 1% change: bytes written",
    "archive size vs the incompressible floor of the data",
    "archive size vs dumpdata's JSON through zstd -3",
    "peak memory without the argon2 secret check",
    "peak memory, whole process",
    "compare live vs the safe backup",
    "compare two backups 1% apart vs two that differ everywhere",
    "emergency trigger end to end",
    "verify-on-reuse:",
    "backup with one file:// replica",
    "bytes that backup wrote to the replica",
]
POSTGRES_TARGETS = [
    "backup vs pg_dump -Fc of the same tables",
    "restore into an emptied scope (incl. pre-restore backup, verify) vs pg_restore",
]


def _user_counts(measurement: dict) -> dict:
    # A comparison that could not read a backup finds nothing and says why in its issues.
    assert "accounts.user" in measurement["found"], measurement["issue_texts"]
    return measurement["found"]["accounts.user"]


def _built(doc: dict) -> dict:
    return {table: doc["dataset"][table] for table in COUNTED}


def _rows_named(doc: dict, label: str) -> list[dict]:
    return [row for row in doc["targets"] if row["what"].startswith(label)]


def test_every_step_is_measured_in_its_own_process(bench_run):
    _stdout, doc = bench_run
    measurements = doc["measurements"]
    for name in OURS + PYTHON_ANCHORS + PREPARATIONS:
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


def test_the_incompressible_floor_is_below_what_any_archive_of_the_data_takes(bench_run):
    _stdout, doc = bench_run
    floor = doc["dataset"]["incompressible_floor"]
    # Unique hashes: most of the random bytes are the argon2 salts and digests.
    assert floor["parts"]["password_hashes"] > floor["bytes"] / 2
    assert sum(floor["parts"].values()) >= floor["bytes"]
    measurements = doc["measurements"]
    # No compressor goes below the entropy of its input: an archive, a compressed dump.
    assert measurements["backup"]["bytes_written"] > floor["bytes"]
    assert measurements["dumpdata"]["zstd_bytes"] > floor["bytes"]
    [row] = _rows_named(doc, "archive size vs the incompressible floor")
    assert row["baseline"] == floor["bytes"] and row["passed"] in (True, False)


def test_pg_dump_and_pg_restore_are_anchors_on_postgresql(bench_run):
    _stdout, doc = bench_run
    measurements = doc["measurements"]
    if not on_postgres():
        assert doc["database"]["vendor"] == "sqlite"
        for tool in ("pg_dump", "pg_restore"):
            assert tool not in measurements
            assert "PostgreSQL only" in doc["skipped"][tool]
        return
    assert doc["database"]["vendor"] == "postgresql"
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            assert doc["skipped"][tool] == f"{tool} is not installed"
            continue
        step = measurements[tool]
        # The tool's own process: its wall time, and its memory (not the server's).
        assert step["seconds"] == step["process_seconds"] > 0
        assert step["peak_rss_bytes"] > 0
    assert measurements["pg_dump"]["bytes"] > 0
    # Restored into an empty copy of the schema: every captured row came back.
    assert measurements["pg_restore"]["counts"] == _built(doc)
    for label in POSTGRES_TARGETS:
        [row] = _rows_named(doc, label)
        assert row["ratio"] > 0 and row["passed"] in (True, False)


def test_django_dbbackup_backs_up_and_restores_the_whole_database(bench_run):
    _stdout, doc = bench_run
    measurements = doc["measurements"]
    if not HAS_DBBACKUP:
        for name in ("dbbackup", "dbrestore"):
            assert name not in measurements
            assert "django-dbbackup is not installed" in doc["skipped"][name]
        return
    backup = measurements["dbbackup"]
    assert backup["bytes"] > 0
    # Its own choice for the database: a copy of the SQLite file, pg_dump -Fc on PostgreSQL.
    expected = "PgDumpBinaryConnector" if on_postgres() else "SqliteBackupConnector"
    assert backup["connector"].endswith(expected)
    assert measurements["empty_for_dbrestore"]["counts"]["users"] == 1
    assert measurements["dbrestore"]["counts"] == _built(doc)


def test_one_file_replica_receives_the_backup(bench_run):
    _stdout, doc = bench_run
    step = doc["measurements"]["backup_with_replica"]
    [replica] = step["replicas"]
    assert replica["status"] == "REPLICATED", replica["error"]
    assert replica["chunks_copied"] > 0
    # The replica started empty: every chunk the backup names went there, and the manifest.
    assert step["replica_bytes_written"] >= replica["bytes_copied"] > 0


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


def test_every_restore_starts_empty_and_brings_back_the_built_population(bench_run):
    _stdout, doc = bench_run
    built = _built(doc)
    assert built["users"] == ROWS and built["licenses"] == ROWS // 3
    # migrate writes no captured row: every restore starts from nothing but what it keeps.
    assert set(doc["dataset"]["after_migrate"].values()) == {0}
    measurements = doc["measurements"]
    for emptied in [name for name in PREPARATIONS if name.startswith("empty_for_")]:
        counts = measurements[emptied]["counts"]
        assert counts["users"] == 1  # the acting SuperAdmin
        assert counts["licenses"] == counts["groups"] == counts["user_groups"] == 0
    assert measurements["restore"]["verified"] is True
    for restore in ["restore", "loaddata"] + (["dbrestore"] if HAS_DBBACKUP else []):
        assert measurements[restore]["counts"] == built, restore


def test_every_target_is_reported_and_rendered(bench_run):
    _stdout, doc = bench_run
    rows = doc["targets"]
    expected = TARGETS + (POSTGRES_TARGETS if on_postgres() else [])
    for label in expected:
        matching = _rows_named(doc, label)
        assert matching, label
        assert all(row["ours"] > 0 for row in matching), label
    for row in rows:
        assert row["passed"] in (True, False, None)
    assert doc["all_targets_met"] == all(row["passed"] is not False for row in rows)
    table = report.render(doc)
    for label in expected:
        assert label in table
    assert doc["machine"]["cpu"] and doc["machine"]["python"]


def test_a_baseline_run_adds_the_scaling_and_memory_growth_rows(bench_run, tmp_path):
    _stdout, doc = bench_run
    earlier, rendered = tmp_path / "earlier.json", tmp_path / "rendered.json"
    earlier.write_text(json.dumps(doc))
    completed = subprocess.run(
        [sys.executable, "bench/run.py", "--render", str(earlier), "--baseline", str(earlier)]
        + ["--json-out", str(rendered)],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Against itself: the same time per million rows and the same peak, so exactly 1.
    for step in report.SCALING_STEPS:
        assert f"{step}: time per million rows, from {ROWS} to {ROWS} rows" in completed.stdout
    assert "peak memory without argon2, growth from" in completed.stdout
    targets = json.loads(rendered.read_text())["targets"]
    scaling = [row for row in targets if "time per million rows" in row["what"]]
    assert len(scaling) == len(report.SCALING_STEPS)
    assert all(row["ratio"] == pytest.approx(1.0) and row["passed"] for row in scaling)


def test_no_secret_reaches_the_output(bench_run):
    stdout, doc = bench_run
    assert "SERVER-" not in stdout  # the passkey's shape
    assert "passkey" not in stdout.lower()
    assert "failsafe_password" not in stdout


def test_the_run_leaves_no_database_or_files_behind(bench_run):
    _stdout, doc = bench_run
    assert not os.path.exists(doc["workdir"])
    if on_postgres():
        # Asked of the server directly: this test needs no test database of its own.
        server = urlsplit(os.environ["DATABASE_URL"])
        with psycopg.connect(
            host=server.hostname,
            port=server.port,
            user=server.username,
            password=server.password,
            dbname="postgres",
        ) as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                [doc["database"]["name"] + "%"],
            ).fetchall()
        assert left == []


def test_strict_turns_a_missed_target_into_a_failing_exit_code():
    met = {"what": "backup", "passed": True}
    missed = {"what": "restore", "passed": False}
    informational = {"what": "trigger", "passed": None}
    assert report.exit_code([met, informational], strict=True) == 0
    assert report.exit_code([met, missed], strict=True) == 1
    assert report.exit_code([met, missed], strict=False) == 0
