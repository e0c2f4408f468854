"""A replica that is down, refuses our credentials or is misnamed: the backup still
completes, the replica's copy is FAILED with one line saying why, nothing is written to it,
and failsafe_replicate catches up once it is back."""

import json
import os
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from failsafe.models import AuditEvent, Backup, BackupReplica
from tests.helpers import run
from tests.servers import free_port


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here takes backups."""


def _backup() -> Backup:
    return Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])


def _bucket_keys(s3, bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return [entry["Key"] for entry in listed]


def _one_line_failure(row: BackupReplica) -> str:
    assert row.status == BackupReplica.Status.FAILED
    assert row.error and "\n" not in row.error and "Traceback" not in row.error
    return row.error


def test_a_replica_down_during_a_backup_fails_its_copy_not_the_backup_and_is_caught_up(
    superadmin, population, settings, tmp_path, s3
):
    nas = tmp_path / "nas-not-mounted"
    bucket = f"later-{os.getpid()}"
    settings.FAILSAFE_REPLICAS = [f"nas=file://{nas}", f"offsite={s3.url(bucket)}"]

    backup = _backup()

    assert backup.status == Backup.Status.COMPLETE
    assert "does not exist" in _one_line_failure(backup.replicas.get(replica="nas"))
    assert "bucket does not exist" in _one_line_failure(backup.replicas.get(replica="offsite"))
    assert not nas.exists()  # a replica that is not there is never created on the local disk
    status = run("failsafe_status")
    assert "System status: Degraded" in status
    assert "Replica nas: 1 backups failed to replicate" in status

    with pytest.raises(CommandError, match="2 of 2 backup copies failed to replicate"):
        run("failsafe_replicate")

    with pytest.raises(CommandError, match=r"^file://.* is unreachable: the directory does not"):
        run("failsafe_verify", "--replica", "nas")

    # Back: the NAS is mounted, the bucket is there.
    nas.mkdir()
    s3.create_bucket(name=bucket)
    printed = run("failsafe_replicate")

    assert "2 of 2 backup copies replicated" in printed
    for row in backup.replicas.all():
        assert row.status == BackupReplica.Status.REPLICATED and row.error == ""
    assert (nas / f"{backup.id}.manifest").exists()
    assert f"failsafe/{backup.id}.manifest" in _bucket_keys(s3, bucket)
    assert f"{backup.id}  OK" in run("failsafe_verify", "--replica", "offsite")
    assert "System status: Degraded" not in run("failsafe_status")
    event = AuditEvent.objects.filter(action="failsafe.replicate").order_by("-seq").first()
    assert event.outcome == AuditEvent.Outcome.SUCCESS and event.details["replicated"] == 2


def test_wrong_s3_credentials_fail_the_copy_in_one_line_and_write_nothing(
    superadmin, population, settings, s3, monkeypatch
):
    bucket = s3.create_bucket()
    settings.FAILSAFE_REPLICAS = [f"offsite={s3.url(bucket)}"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    backup = _backup()

    assert backup.status == Backup.Status.COMPLETE
    error = _one_line_failure(backup.replicas.get())
    assert "access denied" in error
    assert "not-the-secret" not in error
    with pytest.raises(CommandError) as refused:
        run("failsafe_replicate", "--replica", "offsite")
    assert "\n" not in str(refused.value)
    assert _bucket_keys(s3, bucket) == []


def test_an_sftp_server_refusing_the_key_fails_the_copy_in_one_line(
    superadmin, population, settings, sftp_server, tmp_path, monkeypatch
):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    directory = tmp_path / "vault"
    directory.mkdir()
    stranger = tmp_path / "stranger_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {stranger}")  # noqa: S605
    settings.FAILSAFE_REPLICAS = [f"vault={sftp_server.url(directory, key=str(stranger))}"]

    backup = _backup()

    assert backup.status == Backup.Status.COMPLETE
    assert "refused the key" in _one_line_failure(backup.replicas.get())
    assert os.listdir(directory) == []


def test_an_unreachable_sftp_server_fails_the_copy_in_one_line(
    superadmin, population, settings, sftp_server, tmp_path
):
    directory = tmp_path / "vault"
    directory.mkdir()
    url = sftp_server.url(directory).replace(f":{sftp_server.port}/", f":{free_port()}/")
    settings.FAILSAFE_REPLICAS = [f"vault={url}"]

    backup = _backup()

    assert backup.status == Backup.Status.COMPLETE
    assert "cannot connect" in _one_line_failure(backup.replicas.get())
    assert os.listdir(directory) == []


def test_bad_replica_names_and_urls_are_refused_in_one_line_and_change_nothing(
    superadmin, population, settings, file_replica_url
):
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    backup = _backup()
    rows_before = list(BackupReplica.objects.values_list("replica", "status", "verified_at"))

    with pytest.raises(CommandError, match=r"^No replica is named 'usb' \(replicas: nas\)$"):
        run("failsafe_replicate", "--replica", "usb")
    with pytest.raises(CommandError, match=r"^No replica is named 'usb'"):
        run("failsafe_verify", "--replica", "usb")
    with pytest.raises(CommandError, match="does not take --replica"):
        run("failsafe_verify", "--replica", "nas", "--repair")

    settings.FAILSAFE_REPLICAS = ["nas=ftp://example.org/backups"]
    with pytest.raises(CommandError) as refused:
        run("failsafe_replicate")
    assert "unknown scheme ftp://" in str(refused.value)
    assert "\n" not in str(refused.value)
    # A backup taken meanwhile still completes; the broken setting is in the status.
    assert _backup().status == Backup.Status.COMPLETE
    assert "unknown scheme ftp://" in run("failsafe_status")

    assert list(BackupReplica.objects.values_list("replica", "status", "verified_at")) == (
        rows_before
    )
    assert Path(file_replica_url.removeprefix("file://"), f"{backup.id}.manifest").exists()
