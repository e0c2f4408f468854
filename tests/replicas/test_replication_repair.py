"""A replica as the source that repairs the primary: a chunk damaged on the primary, whose
rows are no longer live, is rewritten from the copy an S3 replica (moto over HTTP) holds.

The store takes the replicas as repair sources after the live data; `failsafe_verify
--repair` offers them (replicas.chunk_sources())."""

import json
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from failsafe import archives, replicas
from failsafe.archive import get_store
from failsafe.models import Backup, BackupReplica
from tests.helpers import run


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here takes backups."""


def test_a_chunk_damaged_on_the_primary_is_rewritten_from_the_replica(
    superadmin, population, settings, s3_replica_url
):
    settings.FAILSAFE_REPLICAS = [f"offsite={s3_replica_url}"]
    backup = Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])
    assert backup.replicas.get().status == BackupReplica.Status.REPLICATED
    users, licenses = population
    for license_ in licenses:
        license_.delete()  # the rows of the licenses chunk are no longer live
    primary = Path(settings.FAILSAFE_BACKUP_DIR)
    chunk_paths = sorted(path for path in (primary / "chunks").rglob("*") if path.is_file())
    for path in chunk_paths:
        path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    with pytest.raises(CommandError, match="1 of 1 backups failed verification"):
        run("failsafe_verify")

    report = get_store().repair(
        archives=[archives.location(backup)],
        checked_chunks=set(),
        sources=replicas.chunk_sources(),
    )

    assert set(report.rewritten) == {path.name for path in chunk_paths}
    assert set(report.rewritten.values()) == {"replica offsite"}
    assert f"{backup.id}  OK" in run("failsafe_verify")


def test_a_replica_that_is_down_offers_nothing_and_fails_nothing(
    superadmin, population, settings, tmp_path, file_replica_url
):
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    backup = Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])
    settings.FAILSAFE_REPLICAS = [f"nas=file://{tmp_path / 'unmounted'}"]
    primary = Path(settings.FAILSAFE_BACKUP_DIR)
    damaged = next(path for path in (primary / "chunks").rglob("*") if path.is_file())
    damaged.write_bytes(b"garbage")

    report = get_store().repair(
        archives=[archives.location(backup)],
        checked_chunks=set(),
        sources=replicas.chunk_sources(),
    )

    assert list(report.damaged) == [damaged.name]
    assert report.rewritten == {}


def test_verify_repair_rewrites_the_primary_from_the_replica(
    superadmin, population, settings, s3_replica_url
):
    settings.FAILSAFE_REPLICAS = [f"offsite={s3_replica_url}"]
    backup_id = json.loads(run("failsafe_backup", "--json"))["BackupId"]
    users, licenses = population
    for license_ in licenses:
        license_.delete()  # live data can no longer give these chunks back
    primary = Path(settings.FAILSAFE_BACKUP_DIR)
    for path in (primary / "chunks").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))

    repaired = json.loads(run("failsafe_verify", "--repair", "--json"))

    assert repaired["Valid"] is True, repaired
    assert f"{backup_id}  OK" in run("failsafe_verify")
