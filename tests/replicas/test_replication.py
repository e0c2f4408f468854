"""Backups copied to replicas of every kind, over real servers: a second directory, moto's
S3 over HTTP, OpenSSH's sftp. What a user sees: the copies exist byte for byte, read back
and verified; the status, the API and the admin say how far behind each replica is."""

import json
import os
from pathlib import Path

import pytest
from django.core.management.base import CommandError
from knox.models import AuthToken
from rest_framework.test import APIClient

from failsafe.archive import files
from failsafe.archive.locations import open_storage
from failsafe.models import Backup, BackupReplica
from tests.factories import UserFactory
from tests.helpers import run


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here takes backups."""


def _backup() -> Backup:
    return Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])


def _stored_names(storage) -> list[str]:
    """Every object in a storage: its manifests and chunks."""
    names = [name for name in files.list_files(storage, "") if not files.is_temp_name(name)]
    return names + [path for _, path in files.ChunkFiles(storage).stored()]


def _read(storage, name: str) -> bytes:
    with storage.open(name, "rb") as stored:
        return stored.read()


def test_a_backup_is_copied_to_all_three_kinds_read_back_and_verified(
    superadmin, population, settings, file_replica_url, s3_replica_url, sftp_replica_url
):
    settings.FAILSAFE_REPLICAS = [
        f"nas={file_replica_url}",
        f"offsite={s3_replica_url}",
        f"vault={sftp_replica_url}",
    ]
    backup = _backup()

    assert backup.status == Backup.Status.COMPLETE
    rows = {row.replica: row for row in backup.replicas.all()}
    assert set(rows) == {"nas", "offsite", "vault"}
    for row in rows.values():
        assert row.status == BackupReplica.Status.REPLICATED, row.error
        assert row.verified_at is not None
        assert row.chunks_copied > 0

    primary = open_storage(f"file://{settings.FAILSAFE_BACKUP_DIR}")
    on_primary = sorted(_stored_names(primary))
    assert f"{backup.id}.manifest" in on_primary
    for url in (file_replica_url, s3_replica_url, sftp_replica_url):
        replica = open_storage(url)
        # The same encrypted objects under the same names, byte for byte.
        assert sorted(_stored_names(replica)) == on_primary
        for name in on_primary:
            assert _read(replica, name) == _read(primary, name)

    for name in ("nas", "offsite", "vault"):
        checked = run("failsafe_verify", "--replica", name)
        assert f"{backup.id}  OK" in checked
        assert f"Replica {name}" in checked

    status = json.loads(run("failsafe_status", "--json"))
    assert [entry["Name"] for entry in status["Replicas"]] == ["nas", "offsite", "vault"]
    for entry in status["Replicas"]:
        assert entry["UpToDate"] is True
        assert entry["LastReplicatedBackupId"] == str(backup.id)
        assert entry["BackupsBehind"] == 0
        assert entry["LagSeconds"] == 0
    assert "Replica offsite: up to date" in run("failsafe_status")


def test_a_later_backup_copies_only_the_chunks_the_replica_lacks(
    superadmin, population, settings, file_replica_url
):
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    first = _backup()
    UserFactory(username="frank")
    second = _backup()

    first_row = first.replicas.get()
    second_row = second.replicas.get()
    assert second_row.status == BackupReplica.Status.REPLICATED
    # One model's rows changed: its chunk is new, the others are already on the replica.
    assert 0 < second_row.chunks_copied < first_row.chunks_copied
    replica = Path(file_replica_url.removeprefix("file://"))
    assert (replica / f"{first.id}.manifest").exists()
    assert (replica / f"{second.id}.manifest").exists()
    assert "OK" in run("failsafe_verify", "--replica", "nas", "--all")


def test_a_replica_configured_later_is_caught_up_with_every_backup(
    superadmin, population, settings, file_replica_url
):
    older = [_backup(), _backup()]
    settings.FAILSAFE_REPLICAS = [file_replica_url]  # unnamed: named by its URL
    status = json.loads(run("failsafe_status", "--json"))["Replicas"][0]
    assert status["Name"] == file_replica_url
    assert status["BackupsBehind"] == 2 and status["LastReplicatedBackupId"] is None
    assert f"Replica {file_replica_url}: holds no backup yet" in run("failsafe_status")

    printed = run("failsafe_replicate", "--replica", file_replica_url)

    assert "2 of 2 backup copies replicated" in printed
    for backup in older:
        assert backup.replicas.get().status == BackupReplica.Status.REPLICATED
    assert "Every replica holds every backup already" in run("failsafe_replicate")


def test_a_corrupted_object_on_a_replica_is_found_by_verify_and_replaced_by_replicate(
    superadmin, population, settings, file_replica_url, s3, s3_replica_url
):
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}", f"offsite={s3_replica_url}"]
    backup = _backup()
    nas_dir = Path(file_replica_url.removeprefix("file://"))
    chunk_path = next(path for path in (nas_dir / "chunks").rglob("*") if path.is_file())
    chunk_path.write_bytes(chunk_path.read_bytes()[:-1] + b"\x00")
    # On S3: a chunk object overwritten with other bytes, as a tampering client would.
    bucket = s3_replica_url.split("/")[2]
    client = s3.client()
    key = next(
        entry["Key"]
        for entry in client.list_objects_v2(Bucket=bucket, Prefix="failsafe/chunks/")["Contents"]
    )
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=bytes([body[0] ^ 1]) + body[1:])

    for name in ("nas", "offsite"):
        failed = f"1 of 1 backups failed verification on replica {name}"
        with pytest.raises(CommandError, match=failed):
            run("failsafe_verify", "--replica", name)
        row = backup.replicas.get(replica=name)
        assert row.status == BackupReplica.Status.FAILED
        assert "cannot be decrypted" in row.error
    # The primary was never touched.
    assert f"{backup.id}  OK" in run("failsafe_verify")

    printed = run("failsafe_replicate")

    assert "2 of 2 backup copies replicated" in printed
    assert f"{backup.id}  OK" in run("failsafe_verify", "--replica", "nas")
    assert f"{backup.id}  OK" in run("failsafe_verify", "--replica", "offsite")


def test_replication_lag_shows_in_the_api_and_the_admin(
    superadmin, population, settings, file_replica_url, client, tmp_path
):
    missing = tmp_path / "not-mounted"
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}", f"usb=file://{missing}"]
    backup = _backup()
    api = APIClient()
    _, token = AuthToken.objects.create(user=superadmin)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    status = api.get("/api/failsafe/status/").json()
    by_name = {entry["name"]: entry for entry in status["replicas"]}
    assert by_name["nas"]["up_to_date"] is True
    assert by_name["nas"]["last_replicated_backup_id"] == str(backup.id)
    assert by_name["usb"]["backups_behind"] == 1
    assert by_name["usb"]["failing_backups"][0]["backup_id"] == str(backup.id)
    assert "does not exist" in by_name["usb"]["failing_backups"][0]["error"]
    assert status["system_status"] == "Degraded"
    assert any("Replica usb" in problem for problem in status["problems"])

    detail = api.get(f"/api/failsafe/backups/{backup.id}/").json()
    copies = {entry["replica"]: entry for entry in detail["replicas"]}
    assert copies["nas"]["status"] == "REPLICATED" and copies["nas"]["verified_at"]
    assert copies["usb"]["status"] == "FAILED" and "does not exist" in copies["usb"]["error"]
    listed = api.get("/api/failsafe/backups/").json()
    assert "replicas" in json.dumps(listed)

    client.force_login(superadmin)
    page = client.get("/admin/failsafe/backup/").content.decode()
    assert "nas ✓" in page
    assert "usb FAILED" in page


def test_deleting_a_backup_deletes_its_manifest_on_the_replicas_and_gc_its_chunks(
    superadmin, armed, population, settings, file_replica_url
):
    from django.contrib.auth import get_user_model

    from tests.factories import FAILSAFE_PASSWORD

    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    settings.FAILSAFE = {"GC_GRACE_SECONDS": 0}
    first = _backup()
    UserFactory(username="frank")
    # Every user changed too: the users' chunk is written whole again, not as a delta
    # whose base (the first backup's chunk) the replica would have to keep.
    get_user_model().objects.update(last_name="Renamed")
    _backup()
    nas_dir = Path(file_replica_url.removeprefix("file://"))
    chunks_before = {path.name for path in (nas_dir / "chunks").rglob("*") if path.is_file()}

    printed = run(
        "failsafe_delete", str(first.id), "--yes", "--password-stdin", stdin=FAILSAFE_PASSWORD
    )
    assert "Replica nas: 1 deleted" in printed
    assert not (nas_dir / f"{first.id}.manifest").exists()

    collected = json.loads(
        run("failsafe_gc", "--password-stdin", "--json", stdin=FAILSAFE_PASSWORD)
    )
    on_replica = collected["Replicas"][0]
    assert on_replica["Replica"] == "nas" and on_replica["Deleted"] == 1
    chunks_after = {path.name for path in (nas_dir / "chunks").rglob("*") if path.is_file()}
    assert len(chunks_before - chunks_after) == 1
    assert "OK" in run("failsafe_verify", "--replica", "nas", "--all")
    assert os.listdir(nas_dir)


def test_a_storages_alias_is_a_replica_named_by_its_alias(
    superadmin, population, settings, tmp_path
):
    directory = tmp_path / "alias-replica"
    directory.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "offsite": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(directory)},
        },
    }
    settings.FAILSAFE = {"REPLICA_ALIASES": ["offsite"]}

    backup = _backup()

    assert backup.replicas.get(replica="offsite").status == BackupReplica.Status.REPLICATED
    assert (directory / f"{backup.id}.manifest").exists()
    assert f"{backup.id}  OK" in run("failsafe_verify", "--replica", "offsite")
    where = json.loads(run("failsafe_status", "--json"))["Replicas"][0]["Where"]
    assert where == "STORAGES['offsite']"

    settings.FAILSAFE = {"REPLICA_ALIASES": ["nowhere"]}
    with pytest.raises(CommandError, match="names 'nowhere', which is not in STORAGES"):
        run("failsafe_replicate")


def test_safe_marks_and_audit_anchors_follow_the_backups_to_the_replica(
    superadmin,
    armed,
    population,
    settings,
    sftp_replica_url,
    s3,
    s3_replica_url,
    django_capture_on_commit_callbacks,
):
    from failsafe.archive import anchors
    from tests.factories import FAILSAFE_PASSWORD

    settings.FAILSAFE_REPLICAS = [f"vault={sftp_replica_url}", f"offsite={s3_replica_url}"]
    # Audit events are anchored once committed: as on a real server, commits happen here.
    with django_capture_on_commit_callbacks(execute=True):
        backup = _backup()
        run("failsafe_marksafe", str(backup.id), "--password-stdin", stdin=FAILSAFE_PASSWORD)
    primary = open_storage(f"file://{settings.FAILSAFE_BACKUP_DIR}")
    marks = [
        f"catalog/{backup.id}/{name}" for name in files.list_files(primary, f"catalog/{backup.id}")
    ]
    assert marks  # marking safe sealed a mark beside the manifests

    primary_anchors = set(anchors.anchor_log(primary).read())
    assert primary_anchors

    printed = run("failsafe_replicate")

    assert "Every replica holds every backup already" in printed
    for url in (sftp_replica_url, s3_replica_url):
        replica = open_storage(url)
        for name in marks:
            assert _read(replica, name) == _read(primary, name)
        # As one object each, whatever form the primary keeps them in.
        assert set(anchors.AnchorObjects(replica).read()) >= primary_anchors
