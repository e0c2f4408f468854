"""Immutable copies: S3 Object Lock on every object written to a replica, asked of moto's S3
server over HTTP and read back from it; deleting and collecting skip what is retained."""

import datetime
import json

import pytest
from django.core.management.base import CommandError
from django.utils import timezone

from failsafe.models import Backup, BackupReplica
from tests.factories import FAILSAFE_PASSWORD, UserFactory
from tests.helpers import run


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here takes backups."""


def _backup() -> Backup:
    return Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])


def _keys(client, bucket: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(entry["Key"] for entry in listed)


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_every_replicated_object_is_written_with_the_retention(
    superadmin, population, settings, s3, mode, django_capture_on_commit_callbacks
):
    bucket = s3.create_bucket(object_lock=True)
    settings.FAILSAFE_REPLICAS = [f"offsite={s3.url(bucket)}"]
    settings.FAILSAFE = {"REPLICA_LOCK_MODE": mode, "REPLICA_LOCK_DAYS": 7}
    before = timezone.now().replace(microsecond=0)  # S3 keeps whole seconds
    # Committed as on a server, so the audit events are anchored and the anchors copied.
    with django_capture_on_commit_callbacks(execute=True):
        backup = _backup()
    UserFactory(username="frank")
    later = _backup()

    assert backup.replicas.get().status == BackupReplica.Status.REPLICATED
    assert later.replicas.get().status == BackupReplica.Status.REPLICATED
    client = s3.client()
    stored = _keys(client, bucket)
    assert f"failsafe/{backup.id}.manifest" in stored
    assert f"failsafe/{later.id}.manifest" in stored
    assert any(key.startswith("failsafe/chunks/") for key in stored)
    assert any(key.startswith("failsafe/audit/anchors/") for key in stored)
    for key in stored:
        # What S3 says the object's retention is (moto answers HeadObject with it; it lacks
        # GetObjectRetention).
        retention = client.head_object(Bucket=bucket, Key=key)
        assert retention["ObjectLockMode"] == mode, key
        until = retention["ObjectLockRetainUntilDate"]
        assert before + datetime.timedelta(days=7) <= until, key
        assert until <= timezone.now() + datetime.timedelta(days=7), key


def test_delete_and_gc_skip_what_is_still_locked_and_say_so(
    superadmin, armed, population, settings, s3
):
    bucket = s3.create_bucket(object_lock=True)
    settings.FAILSAFE_REPLICAS = [f"offsite={s3.url(bucket)}"]
    settings.FAILSAFE = {
        "REPLICA_LOCK_MODE": "GOVERNANCE",
        "REPLICA_LOCK_DAYS": 1,
        "GC_GRACE_SECONDS": 0,
    }
    first = _backup()
    UserFactory(username="frank")
    _backup()
    client = s3.client()
    stored = _keys(client, bucket)

    printed = run(
        "failsafe_delete", str(first.id), "--yes", "--password-stdin", stdin=FAILSAFE_PASSWORD
    )

    assert "Replica offsite: 0 deleted; 1 kept, still locked (Object Lock)" in printed
    assert f"{first.id}.manifest" in printed
    # A chunk no manifest names, but still retained: the collector must leave it.
    stray = "failsafe/chunks/ff/" + "f" * 64
    client.put_object(
        Bucket=bucket,
        Key=stray,
        Body=b"unreferenced",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=timezone.now() + datetime.timedelta(days=1),
    )
    stored = _keys(client, bucket)
    collected = run("failsafe_gc", "--password-stdin", stdin=FAILSAFE_PASSWORD)
    assert (
        "Replica offsite: 0 deleted; 1 kept, still locked (Object Lock): "
        + stray.removeprefix("failsafe/")
        in collected
    )
    # The deleted backup's manifest keeps its chunks on the replica: nothing went.
    assert _keys(client, bucket) == stored
    for key in stored:
        versions = client.list_object_versions(Bucket=bucket, Prefix=key)
        assert not versions.get("DeleteMarkers"), key


def test_a_bucket_without_object_lock_is_refused_in_one_line_and_nothing_is_written(
    superadmin, population, settings, s3
):
    bucket = s3.create_bucket(object_lock=False)
    settings.FAILSAFE_REPLICAS = [f"offsite={s3.url(bucket)}"]
    settings.FAILSAFE = {"REPLICA_LOCK_MODE": "COMPLIANCE", "REPLICA_LOCK_DAYS": 30}

    backup = _backup()

    assert backup.status == Backup.Status.COMPLETE
    row = backup.replicas.get()
    assert row.status == BackupReplica.Status.FAILED
    assert f"Bucket {bucket} has no Object Lock" in row.error
    assert "\n" not in row.error
    assert _keys(s3.client(), bucket) == []

    with pytest.raises(CommandError) as refused:
        run("failsafe_replicate", "--replica", "offsite")
    assert str(refused.value) == "1 of 1 backup copies failed to replicate"
    assert _keys(s3.client(), bucket) == []
    assert "has no Object Lock" in run("failsafe_status")


def test_a_lock_mode_that_is_no_mode_is_named_in_one_line(superadmin, population, settings, s3):
    bucket = s3.create_bucket(object_lock=True)
    settings.FAILSAFE_REPLICAS = [f"offsite={s3.url(bucket)}"]
    settings.FAILSAFE = {"REPLICA_LOCK_MODE": "FOREVER", "REPLICA_LOCK_DAYS": 30}

    backup = _backup()

    assert backup.status == Backup.Status.COMPLETE
    row = backup.replicas.get()
    assert row.status == BackupReplica.Status.FAILED
    assert row.error == "REPLICA_LOCK_MODE must be GOVERNANCE or COMPLIANCE, not 'FOREVER'"
    assert "REPLICA_LOCK_MODE must be GOVERNANCE or COMPLIANCE" in run("failsafe_status")
    assert _keys(s3.client(), bucket) == []
