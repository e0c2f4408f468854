"""Disaster recovery from nothing: the catalog that lives with the archives, and
`failsafe_recover` rebuilding the Backup rows of a new or damaged database from a primary
store or a replica alone.

The full runbook (docs/disaster-recovery.md) runs as one test in new processes, against a
new database of the kind this run uses (SQLite, or PostgreSQL when DATABASE_URL says so),
with the primary store and the keyset file deleted and only the recovery file and an S3
replica (moto's S3 server over HTTP) left.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from django.db import connection

from failsafe import services
from failsafe.exceptions import NotSuperAdmin
from failsafe.models import AuditEvent, Backup
from tests.factories import FAILSAFE_PASSWORD, UserFactory
from tests.helpers import run
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "kept in the safe, not with the backups"
OLD_PASSWORD = "alice's own old password 7"


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here takes backups."""


def _backup_rows() -> dict:
    fields = [
        "type", "reason", "created_at", "created_by_id", "created_by_username", "status",
        "is_safe", "marked_safe_at", "marked_safe_by_username", "state", "archive_name",
        "archive_sha256", "format_version", "key_id", "audit_head_seq", "audit_head_hash",
    ]  # fmt: skip
    return {
        str(row.pk): {name: getattr(row, name) for name in fields} for row in Backup.objects.all()
    }


def _files(directory) -> dict[str, bytes]:
    root = Path(directory)
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def history(actor, armed, population):
    """Three backups, the first two marked safe, all in the primary store."""
    first = services.create_backup(actor=actor, reason="monday")
    services.mark_safe(actor=actor, backup_id=str(first.id), password=FAILSAFE_PASSWORD)
    second = services.create_backup(actor=actor, reason="tuesday")
    services.mark_safe(actor=actor, backup_id=str(second.id), password=FAILSAFE_PASSWORD)
    third = services.create_backup(actor=actor, reason="wednesday")
    return [first, second, third]


@pytest.fixture
def replica(history, file_replica_url):
    """A second directory holding a copy of the primary store's files, as a replica does."""
    directory = file_replica_url.removeprefix("file://")
    shutil.copytree(settings.FAILSAFE_BACKUP_DIR, directory, dirs_exist_ok=True)
    return file_replica_url


def _lose_the_catalog_and_the_primary() -> None:
    """The database loses its backup rows and the primary store is gone."""
    Backup.objects.all().delete()
    shutil.rmtree(settings.FAILSAFE_BACKUP_DIR)


def _recover(*args, password=FAILSAFE_PASSWORD) -> dict:
    stdin = f"{password}\n" if password else ""
    extra = ["--password-stdin"] if password else []
    return json.loads(run("failsafe_recover", *args, *extra, "--json", stdin=stdin))


def test_safe_marks_are_kept_with_the_archives_and_the_rows_come_back_whole(history, replica):
    before = _backup_rows()
    _lose_the_catalog_and_the_primary()

    printed = _recover("--from", replica)

    assert _backup_rows() == before
    assert {entry["Id"] for entry in printed["Added"]} == set(before)
    assert printed["Damaged"] == [] and printed["Conflicts"] == []
    assert printed["LastSafeBackupId"] == str(history[1].id)
    # The configured store works again: what the rows name is there, and a restore's own
    # checks read it through.
    verified = json.loads(run("failsafe_verify", "--all", "--json"))
    assert verified["Valid"] is True, verified
    event = AuditEvent.objects.filter(action="failsafe.recover").last()
    assert event.outcome == AuditEvent.Outcome.SUCCESS
    assert event.details["found"] == 3


def test_a_dry_run_reads_everything_and_changes_nothing(history, replica):
    _lose_the_catalog_and_the_primary()

    printed = _recover("--from", replica, "--dry-run", password=None)

    assert printed["DryRun"] is True
    assert {entry["Id"] for entry in printed["Added"]} == {str(b.id) for b in history}
    assert not Backup.objects.exists()
    assert not os.path.exists(settings.FAILSAFE_BACKUP_DIR) or not _files(
        settings.FAILSAFE_BACKUP_DIR
    ).keys() - {"audit/anchors.log"}


def test_a_storage_holding_no_backups_is_refused_in_one_line(history, file_replica_url):
    before = _backup_rows()
    with pytest.raises(CommandError) as refused:
        _recover("--from", file_replica_url)
    assert str(refused.value) == (
        f"{file_replica_url} holds no failsafe backups: nothing was changed"
    )
    assert "\n" not in str(refused.value)
    assert _backup_rows() == before


def test_an_unreachable_source_or_a_bad_url_is_refused_in_one_line(
    history, tmp_path, s3, monkeypatch
):
    before = _backup_rows()
    with pytest.raises(CommandError, match="does not exist") as missing:
        _recover("--from", f"file://{tmp_path}/not-mounted")
    with pytest.raises(CommandError, match="Invalid storage URL") as malformed:
        _recover("--from", "ftp://example.org/backups")
    nobody_listens = f"s3://{s3.create_bucket()}/x?endpoint_url=http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match="is unreachable: cannot connect") as down:
        _recover("--from", nobody_listens)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(CommandError, match="is unreachable: access denied") as refused:
        _recover("--from", s3.url(s3.create_bucket()))
    for refusal in (missing, malformed, down, refused):
        assert "\n" not in str(refusal.value)
    assert _backup_rows() == before


def test_a_corrupted_manifest_is_named_as_damaged_and_the_rest_recovered(history, replica):
    _lose_the_catalog_and_the_primary()
    damaged = history[2]
    manifest = Path(replica.removeprefix("file://")) / f"{damaged.id}.manifest"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))

    printed = _recover("--from", replica)

    assert [d["BackupId"] for d in printed["Damaged"]] == [str(damaged.id)]
    assert "cannot be decrypted" in printed["Damaged"][0]["Problem"]
    assert set(Backup.objects.values_list("id", flat=True)) == {history[0].id, history[1].id}
    assert not os.path.exists(Path(settings.FAILSAFE_BACKUP_DIR) / manifest.name)


def test_a_corrupted_chunk_is_named_and_its_backups_left_out(history, replica):
    _lose_the_catalog_and_the_primary()
    chunks = sorted((Path(replica.removeprefix("file://")) / "chunks").rglob("*"))
    chunk = next(path for path in chunks if path.is_file())
    chunk.write_bytes(chunk.read_bytes()[:-7] + b"garbage")

    printed = _recover("--from", replica)

    assert printed["Damaged"], printed
    assert all(chunk.name in d["Problem"] for d in printed["Damaged"])
    added = {entry["Id"] for entry in printed["Added"]}
    assert added.isdisjoint(d["BackupId"] for d in printed["Damaged"])
    assert Backup.objects.count() == len(added)


def test_a_forged_or_moved_safe_mark_is_not_trusted(history, replica):
    _lose_the_catalog_and_the_primary()
    catalog = Path(replica.removeprefix("file://")) / "catalog"
    # The mark of the first backup, moved to the third (never marked safe).
    mark = next((catalog / str(history[0].id)).iterdir())
    (catalog / str(history[2].id)).mkdir()
    shutil.copy(mark, catalog / str(history[2].id) / mark.name)

    printed = _recover("--from", replica)

    assert Backup.objects.get(pk=history[2].id).is_safe is False
    assert Backup.objects.get(pk=history[0].id).is_safe is True
    assert [d["Name"] for d in printed["Damaged"]] == [
        f"catalog/{history[2].id}/{mark.name}"
    ]


def test_an_existing_row_with_other_data_is_reported_never_overwritten(history, replica):
    # A damaged database: one row lost, another changed (its safe mark gone).
    Backup.objects.filter(pk=history[2].id).delete()
    Backup.objects.filter(pk=history[1].id).update(is_safe=False, marked_safe_at=None)

    printed = _recover("--from", replica)

    assert [entry["Id"] for entry in printed["Added"]] == [str(history[2].id)]
    assert printed["AlreadyPresent"] == [str(history[0].id)]
    assert printed["Conflicts"] == [{"BackupId": str(history[1].id), "DiffersIn": ["is_safe"]}]
    assert Backup.objects.get(pk=history[1].id).is_safe is False


def test_the_primary_store_itself_and_archives_older_than_the_catalog_record(actor, armed):
    """A format-1 archive whose meta predates the catalog record, read from the configured
    store itself: the row comes back with what it held, and nothing is copied."""
    from failsafe import capture
    from failsafe.archive import get_store
    from failsafe.snapshot import iso

    old = Backup.objects.create(type=Backup.Type.MANUAL, reason="from before", status="COMPLETE")
    with capture.consistent_read():
        state = capture.system_state()
        info = get_store().write(
            backup_id=str(old.id),
            meta={"backup_id": str(old.id), "type": old.type,
                  "created_at": iso(old.created_at), "state": state},
            sections=capture.live_sections(),
            format_version=1,
        )  # fmt: skip
    Backup.objects.filter(pk=old.pk).update(
        state=state, archive_name=info.name, archive_sha256=info.sha256,
        format_version=1, archive_size=info.size,
    )  # fmt: skip
    primary = f"file://{settings.FAILSAFE_BACKUP_DIR}"

    present = _recover("--from", primary)
    assert present["AlreadyPresent"] == [str(old.id)] and present["Conflicts"] == []

    Backup.objects.all().delete()
    printed = _recover("--from", primary)

    assert printed["CopiedInto"] is None and printed["FilesCopied"] == 0
    back = Backup.objects.get()
    assert (back.pk, back.type, back.created_at, back.state, back.format_version) == (
        old.pk, old.type, old.created_at, state, 1,
    )  # fmt: skip
    assert back.reason == "" and back.is_safe is False
    assert json.loads(run("failsafe_verify", str(old.id), "--json"))["Valid"] is True


def test_recovering_needs_the_failsafe_password_once_one_is_set(history, replica):
    _lose_the_catalog_and_the_primary()
    with pytest.raises(CommandError, match="[Ff]ailsafe password"):
        _recover("--from", replica, password="not the password")
    assert not Backup.objects.exists()


def test_without_the_keys_nothing_is_recovered(history, replica, settings):
    _lose_the_catalog_and_the_primary()
    os.unlink(settings.FAILSAFE_KEYSET_FILE)
    with pytest.raises(CommandError) as refused:
        _recover("--from", replica)
    assert str(refused.value) == (
        f"No failsafe keyset to open the backups in {replica}: import the key material first "
        "(manage.py failsafe_keys import FILE); nothing was changed"
    )
    assert not Backup.objects.exists()


# --- the runbook, in new processes ------------------------------------------------------


def _database_for_subprocess(tmp_path) -> tuple[str, str | None]:
    if connection.vendor == "postgresql":
        name = f"raos_dr_{uuid.uuid4().hex[:8]}"
        return f"postgres://postgres@127.0.0.1:5432/{name}", name
    return f"sqlite:///{tmp_path / 'server.sqlite3'}", None


class _Host:
    """One installation: its database, primary store and keyset, driven by manage.py."""

    def __init__(self, tmp_path: Path, name: str):
        self.database_url, self.pg_name = _database_for_subprocess(tmp_path / name)
        (tmp_path / name).mkdir()
        self.backup_dir = tmp_path / name / "backups"
        self.keyset_file = tmp_path / name / "failsafe.keyset"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "FAILSAFE_BACKUP_DIR": str(self.backup_dir),
            "FAILSAFE_KEYSET_FILE": str(self.keyset_file),
            "FAILSAFE_KEYSET": "",
            "FAILSAFE_AUDIT_KEY": "",
            "FAILSAFE_CHUNK_KEY": "",
        }
        self.env.pop("FAILSAFE_REPLICAS", None)
        if self.pg_name:
            subprocess.run(
                ["createdb", "-h", "127.0.0.1", "-U", "postgres", self.pg_name], check=True
            )

    def manage(self, *args, stdin="", env=None, ok=True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def shell(self, code: str) -> str:
        return self.manage("shell", "--no-imports", "-c", code).stdout

    def drop(self) -> None:
        if self.pg_name:
            subprocess.run(
                ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", self.pg_name],
                check=False,
            )


def _upload(s3, bucket: str, prefix: str, directory: Path) -> int:
    """Copies every file of the primary store into the bucket, as a replica holds them."""
    client = s3.client()
    count = 0
    for name, data in _files(directory).items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
        count += 1
    return count


CATALOG_DUMP = (
    "import json; from failsafe.models import Backup; print(json.dumps([[str(b.id), b.type, "
    "b.reason, b.created_at.isoformat(), b.created_by_username, b.status, b.is_safe, "
    "b.marked_safe_at and b.marked_safe_at.isoformat(), b.marked_safe_by_username, b.state, "
    "b.archive_name, b.archive_sha256, b.key_id, b.audit_head_seq, b.audit_head_hash] "
    "for b in Backup.objects.order_by('created_at')]))"
)
LOGIN_CHECK = (
    "from django.test import Client; "
    "client = Client(); "
    "response = client.post('/accounts/login/', {'username': 'alice', 'password': %r}); "
    "print(response.status_code, client.session.get('_auth_user_id') is not None)"
)


@pytest.mark.django_db(transaction=True)
def test_the_disaster_recovery_runbook_from_nothing_but_the_recovery_file_and_a_replica(
    tmp_path, s3
):
    """docs/disaster-recovery.md, step by step: the old host is lost with its database, its
    primary store and its keyset; a new checkout gets the recovery file and the S3 replica."""
    old, new = _Host(tmp_path, "old"), _Host(tmp_path, "new")
    bucket = s3.create_bucket()
    replica_url = s3.url(bucket, "failsafe")
    recovery_file = tmp_path / "offline" / "failsafe-keys.rfk"
    recovery_file.parent.mkdir()
    try:
        # --- the old host, before the disaster ---
        old.manage("migrate", "--noinput")
        boot = json.loads(
            old.manage(
                "raos_bootstrap", "--superadmin", "root", "--json", "--no-input",
                env={"RAOS_SUPERADMIN_PASSWORD": "Root-Old-Password-9"},
            ).stdout
        )  # fmt: skip
        old.shell(
            "from accounts.models import User; from licensing.models import License; "
            "from django.contrib.auth.models import Group; "
            "staff = Group.objects.create(name='support'); "
            f"alice = User.objects.create_user('alice', 'alice@example.com', {OLD_PASSWORD!r}); "
            "alice.groups.add(staff); "
            "License.objects.create(owner=alice, instance_name='alice-prod', max_users=3)"
        )
        old.manage("failsafe_setpassword", "--password-stdin", stdin=f"{FAILSAFE_PASSWORD}\n")
        safe_id = json.loads(
            old.manage(
                "failsafe_trigger", "--passkey-stdin", "--json",
                stdin=boot["ServerLicensePasskey"] + "\n",
            ).stdout
        )["BackupId"]  # fmt: skip
        old.manage(
            "failsafe_marksafe", safe_id, "--password-stdin", stdin=f"{FAILSAFE_PASSWORD}\n"
        )
        # Later, an attacker's change, and another backup of it (not safe).
        old.shell(
            "from accounts.models import User; User.objects.filter(username='alice').delete()"
        )
        old.manage("failsafe_backup", "--reason", "after the attack")
        old.manage(
            "failsafe_keys", "export", str(recovery_file), "--password-stdin",
            "--passphrase-stdin", stdin=f"{FAILSAFE_PASSWORD}\n{PASSPHRASE}\n",
        )  # fmt: skip
        assert _upload(s3, bucket, "failsafe", old.backup_dir) > 3
        catalog_before = old.shell(CATALOG_DUMP)
        # --- the disaster: the host, its database, its store and its keyset are gone ---
        old.drop()
        shutil.rmtree(old.backup_dir)
        old.keyset_file.unlink()

        # --- the runbook, on a new checkout with an empty database ---
        new.manage("migrate", "--noinput")
        wrong = new.manage(
            "failsafe_keys", "import", str(recovery_file), "--passphrase-stdin",
            stdin="not the passphrase at all\n", ok=False,
        )  # fmt: skip
        assert wrong.returncode != 0
        assert wrong.stderr.strip().splitlines() == [
            "CommandError: The recovery passphrase is wrong, or the file was altered: "
            "nothing was changed"
        ]
        imported = new.manage(
            "failsafe_keys", "import", str(recovery_file), "--passphrase-stdin",
            stdin=f"{PASSPHRASE}\n",
        ).stdout  # fmt: skip
        assert imported.startswith("Key material imported")

        dry = json.loads(new.manage("failsafe_recover", "--from", replica_url, "--dry-run",
                                    "--json").stdout)  # fmt: skip
        assert dry["Found"] == 2 and dry["LastSafeBackupId"] == safe_id
        assert new.shell("from failsafe.models import Backup; print(Backup.objects.count())") \
            .strip() == "0"  # fmt: skip

        recovered = new.manage("failsafe_recover", "--from", replica_url).stdout
        assert f"Recovered 2 intact backup(s) in {replica_url}: 2 added" in recovered
        assert f"Last safe backup: {safe_id}" in recovered
        assert "raos_bootstrap --superadmin recovery" in recovered
        assert "Audit anchors in the source:" in recovered
        # The recovered catalog is the old one, row for row: type, reason, creator, state,
        # archive, key id, audit chain head and the safe mark.
        assert new.shell(CATALOG_DUMP) == catalog_before

        # No SuperAdmin exists in the new database: a temporary one runs the restore.
        new.manage(
            "raos_bootstrap", "--superadmin", "recovery", "--no-input",
            env={"RAOS_SUPERADMIN_PASSWORD": "Temporary-Recovery-Password-3"},
        )  # fmt: skip
        new.manage("failsafe_setpassword", "--password-stdin", stdin=f"{FAILSAFE_PASSWORD}\n")
        restored = new.manage(
            "failsafe_restore", safe_id, "--yes", "--password-stdin",
            stdin=f"{FAILSAFE_PASSWORD}\n",
        ).stdout  # fmt: skip
        assert restored.startswith(f"Backup restoration completed (backup {safe_id})")

        # Every user, group and license is back, and alice logs in with her old password.
        counts = new.shell(
            "from accounts.models import User; from licensing.models import License; "
            "from django.contrib.auth.models import Group; "
            "print(sorted(User.objects.values_list('username', flat=True)), "
            "list(Group.objects.values_list('name', flat=True)), "
            "list(License.objects.values_list('instance_name', flat=True)), "
            "list(User.objects.get(username='alice').groups.values_list('name', flat=True)))"
        )
        assert counts.strip() == "['alice', 'root'] ['support'] ['alice-prod'] ['support']"
        assert new.shell(LOGIN_CHECK % OLD_PASSWORD).split() == ["302", "True"]
        assert new.shell(LOGIN_CHECK % "a wrong password").split()[1] == "False"
        # The restore's own backup joined the recovered ones; the safe one is still safe.
        listed = json.loads(new.manage("failsafe_backups", "--json").stdout)
        assert len(listed["Backups"]) == 3
        assert [b["Id"] for b in listed["Backups"] if b["IsSafe"]] == [safe_id]
    finally:
        old.drop()
        new.drop()


def test_recovering_on_a_new_installation_runs_as_the_system_only_from_the_shell(db):
    # The same rule as the key import: with a SuperAdmin around, the system may not.
    get_user_model().objects.create_user("boss", role="SUPERADMIN", password="x" * 12)
    with pytest.raises(NotSuperAdmin, match="A SuperAdmin exists"):
        services.recover(actor=services.keys.SYSTEM, source="file:///nowhere", dry_run=True)


def test_marking_safe_is_refused_when_the_store_cannot_keep_the_mark(actor, armed):
    backup = services.create_backup(actor=actor, reason="to be trusted")
    # Where the marks go is taken by a file: the storage cannot create catalog/<id>/.
    (Path(settings.FAILSAFE_BACKUP_DIR) / "catalog").write_bytes(b"not a directory")

    with pytest.raises(CommandError) as refused:
        run("failsafe_marksafe", str(backup.id), "--password-stdin", stdin=FAILSAFE_PASSWORD)

    assert str(refused.value).startswith("Marking the backup safe failed")
    assert "\n" not in str(refused.value)
    backup.refresh_from_db()
    assert backup.is_safe is False


def test_an_s3_replica_missing_a_chunk_names_the_backups_that_need_it(history, actor, s3):
    UserFactory(username="zed")
    newest = services.create_backup(actor=actor, reason="zed joined")
    bucket = s3.create_bucket()
    _upload(s3, bucket, "failsafe", Path(settings.FAILSAFE_BACKUP_DIR))
    older_chunks = {ref.id for backup in history for entry in _manifest(backup).models
                    for ref in entry.chunks}  # fmt: skip
    lost = next(
        ref.id.hex()
        for entry in _manifest(newest).models
        for ref in entry.chunks
        if ref.id not in older_chunks
    )
    s3.client().delete_object(Bucket=bucket, Key=f"failsafe/chunks/{lost[:2]}/{lost}")
    _lose_the_catalog_and_the_primary()

    printed = _recover("--from", s3.url(bucket, "failsafe"))

    assert [d["BackupId"] for d in printed["Damaged"]] == [str(newest.id)]
    assert f"is missing chunk {lost}" in printed["Damaged"][0]["Problem"]
    assert set(Backup.objects.values_list("id", flat=True)) == {b.id for b in history}
    assert json.loads(run("failsafe_verify", "--all", "--json"))["Valid"] is True


def _manifest(backup):
    from failsafe.archive import get_store

    return get_store().read_manifest(
        name=backup.archive_name, sha256=backup.archive_sha256, backup_id=str(backup.id)
    )


def test_an_sftp_replica_rebuilds_the_catalog_too(history, sftp_replica_url, tmp_path):
    # The directory sshd serves is a local one here: the replica's files are copied in.
    shutil.copytree(settings.FAILSAFE_BACKUP_DIR, tmp_path / "sftp-replica", dirs_exist_ok=True)
    before = _backup_rows()
    _lose_the_catalog_and_the_primary()

    printed = _recover("--from", sftp_replica_url)

    assert _backup_rows() == before
    assert printed["Damaged"] == [] and printed["LastSafeBackupId"] == str(history[1].id)
