"""Storages opened from a URL, against real servers: moto's S3 over HTTP, OpenSSH's sftp, a
directory. A replica URL that is wrong is refused in one line before anything is written; one
that points at something not answering is reported in one line by check_reachable."""

import os
import stat
import subprocess

import pytest
from django.core.files.base import ContentFile

from failsafe.archive.locations import check_reachable, describe, open_storage
from failsafe.exceptions import REFUSALS, InvalidStorageUrl, StorageUnreachable
from tests.servers import free_port

REPLICA_KINDS = ["file_replica_url", "s3_replica_url", "sftp_replica_url"]


def refusal_of(call, *args) -> str:
    with pytest.raises(REFUSALS) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def unreachable(url: str) -> str:
    storage = open_storage(url)
    with pytest.raises(StorageUnreachable) as caught:
        check_reachable(storage)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- Each kind keeps files through its real server -------------------------------------------


@pytest.mark.parametrize("replica_url", REPLICA_KINDS)
def test_a_file_goes_in_comes_back_is_listed_and_deleted(replica_url, request):
    storage = open_storage(request.getfixturevalue(replica_url))
    check_reachable(storage)

    assert storage.save("chunks/ab12", ContentFile(b"chunk bytes")) == "chunks/ab12"
    storage.save("b1.manifest", ContentFile(b"manifest"))

    with storage.open("chunks/ab12") as stored:
        assert stored.read() == b"chunk bytes"
    assert storage.listdir("") == (["chunks"], ["b1.manifest"])
    assert storage.listdir("chunks") == ([], ["ab12"])
    assert storage.exists("chunks/ab12") and storage.size("chunks/ab12") == len(b"chunk bytes")

    storage.delete("chunks/ab12")
    assert not storage.exists("chunks/ab12")
    assert storage.listdir("chunks")[1] == []


@pytest.mark.parametrize("replica_url", REPLICA_KINDS)
def test_a_name_already_written_is_never_overwritten(replica_url, request):
    storage = open_storage(request.getfixturevalue(replica_url))
    storage.save("b1.manifest", ContentFile(b"first"))

    second = storage.save("b1.manifest", ContentFile(b"second"))

    assert second != "b1.manifest"
    with storage.open("b1.manifest") as stored:
        assert stored.read() == b"first"


def test_the_s3_replica_writes_under_its_prefix_in_the_bucket(s3):
    bucket = s3.create_bucket()
    storage = open_storage(s3.url(bucket, prefix="site-a/failsafe"))

    storage.save("chunks/ab12", ContentFile(b"chunk bytes"))

    stored = s3.client().get_object(Bucket=bucket, Key="site-a/failsafe/chunks/ab12")
    assert stored["Body"].read() == b"chunk bytes"


def test_an_s3_bucket_with_object_lock_takes_files(s3):
    bucket = s3.create_bucket(object_lock=True)
    lock = s3.client().get_object_lock_configuration(Bucket=bucket)
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    storage = open_storage(s3.url(bucket))

    storage.save("chunks/ab12", ContentFile(b"chunk bytes"))

    with storage.open("chunks/ab12") as stored:
        assert stored.read() == b"chunk bytes"


def test_the_sftp_replica_writes_private_files_in_its_directory(sftp_server, tmp_path,
                                                                monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    directory = tmp_path / "nas"
    directory.mkdir()
    storage = open_storage(sftp_server.url(directory))

    storage.save("chunks/ab12", ContentFile(b"chunk bytes"))

    written = directory / "chunks" / "ab12"
    assert written.read_bytes() == b"chunk bytes"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700


def test_the_file_replica_writes_private_files(file_replica_url):
    storage = open_storage(file_replica_url)

    storage.save("chunks/ab12", ContentFile(b"chunk bytes"))

    written = storage.path("chunks/ab12")
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(written)).st_mode) == 0o700


def test_a_file_replica_whose_directory_vanished_is_not_recreated_on_save(tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    storage = open_storage(f"file://{nas}")
    nas.rmdir()  # the share was unmounted

    with pytest.raises(StorageUnreachable, match="does not exist"):
        storage.save("chunks/ab12", ContentFile(b"chunk bytes"))

    assert not nas.exists()


def test_an_sftp_replica_whose_directory_vanished_is_not_recreated_on_save(
    sftp_server, tmp_path, monkeypatch
):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    nas = tmp_path / "nas"
    nas.mkdir()
    storage = open_storage(sftp_server.url(nas))
    check_reachable(storage)
    nas.rmdir()

    with pytest.raises(StorageUnreachable, match="does not exist"):
        storage.save("chunks/ab12", ContentFile(b"chunk bytes"))

    assert not nas.exists()


# --- Malformed URLs: one line, nothing opened --------------------------------------------------


@pytest.mark.parametrize(
    ("url", "what"),
    [
        ("", "empty"),
        ("/var/backups", "no scheme"),
        ("ftp://nas/backups", "unknown scheme ftp://"),
        ("file:backups", "absolute path"),
        ("file://backups/x", "on this host"),
        ("file:///", "directory is missing"),
        ("file:///srv/../etc", ". or .."),
        ("file:///srv/x?mode=777", "unknown option ?mode="),
        ("s3://", "bucket is missing"),
        ("s3:///prefix", "bucket is missing"),
        ("s3://My_Bucket/x", "not a valid bucket name"),
        ("s3://bucket/x?endpoint_url=ftp://host", "http:// or https://"),
        ("s3://bucket/x?region=", "?region= is empty"),
        ("s3://bucket/x?region=eu-west-1&region=us-east-1", "given twice"),
        ("s3://bucket/x?addressing_style=sideways", "addressing_style"),
        ("s3://bucket/x#y", "fragment"),
        ("sftp://nas.example/backups", "user is missing"),
        ("sftp://@nas.example/backups", "user is missing"),
        ("sftp://backup@/backups", "host is missing"),
        ("sftp://backup@nas.example", "directory is missing"),
        ("sftp://backup@nas.example:port/x", "port"),
        ("sftp://backup@nas.example:70000/x", "out of range"),
        ("sftp://backup@nas.example/x?key=id_ed25519", "?key= must be an absolute path"),
        ("sftp://backup@nas.example/x?host_key=yes-please", "?host_key= must be one of"),
        ("sftp://backup@nas.example/x?password=x", "unknown option ?password="),
        ("s3://bucket/x y", "spaces"),
    ],
)
def test_a_malformed_url_is_refused_in_one_line_naming_what_is_wrong(url, what):
    for call in (open_storage, describe):
        with pytest.raises(InvalidStorageUrl):
            call(url)
        message = refusal_of(call, url)
        assert message.startswith("Invalid storage URL")
        assert what in message


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/prefix", "wJalrXUtnFEMI"),
        ("sftp://backup:hunter2@nas.example/backups", "hunter2"),
        ("file://root:hunter2@/srv/backups", "hunter2"),
        ("s3://bucket/prefix?aws_secret_access_key=wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ("s3://bucket/prefix?endpoint_url=http://u:hunter2@127.0.0.1:9000", "hunter2"),
    ],
)
def test_credentials_in_a_url_are_refused_and_never_echoed(url, secret):
    message = refusal_of(open_storage, url)

    assert message.startswith("Invalid storage URL")
    assert secret not in message


def test_an_s3_url_naming_an_access_key_is_refused():
    message = refusal_of(open_storage, "s3://AKIAEXAMPLE@bucket/prefix")

    assert "AWS_ACCESS_KEY_ID" in message


def test_describe_writes_a_url_one_way_with_nothing_hidden():
    assert describe("s3://bucket/a/b/?region=eu-west-1&endpoint_url=https://s3.example:9000") \
        == "s3://bucket/a/b?endpoint_url=https://s3.example:9000&region=eu-west-1"
    assert describe("sftp://backup@nas.example/srv/failsafe/") \
        == "sftp://backup@nas.example:22/srv/failsafe"
    assert describe("FILE:///srv//failsafe/") == "file:///srv/failsafe"


# --- Not answering: one line from check_reachable --------------------------------------------


def test_a_file_replica_whose_directory_is_missing_is_unreachable(tmp_path):
    message = unreachable(f"file://{tmp_path}/unmounted-nas")

    assert "does not exist" in message and "mount" in message


def test_an_s3_endpoint_that_is_down_is_unreachable(s3):
    message = unreachable(
        f"s3://bucket/x?endpoint_url=http://127.0.0.1:{free_port()}&region=us-east-1"
    )

    assert "cannot connect" in message


def test_an_s3_bucket_that_does_not_exist_is_unreachable(s3):
    message = unreachable(s3.url("no-such-bucket"))

    assert "no-such-bucket" in message and "does not exist" in message


def test_wrong_s3_credentials_are_unreachable_and_not_echoed(s3, monkeypatch):
    url = s3.url(s3.create_bucket())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-key")

    message = unreachable(url)

    assert "access denied" in message
    assert "not-the-secret-key" not in message and s3.secret_access_key not in message


def test_no_s3_credentials_at_all_is_unreachable(s3, monkeypatch):
    url = s3.url(s3.create_bucket())
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    assert "no AWS credentials" in unreachable(url)


def test_an_sftp_server_that_is_down_is_unreachable(sftp_server, tmp_path):
    url = sftp_server.url(tmp_path).replace(f":{sftp_server.port}/", f":{free_port()}/")

    assert "cannot connect" in unreachable(url)


def test_an_sftp_directory_that_does_not_exist_is_unreachable(sftp_server, tmp_path):
    message = unreachable(sftp_server.url(tmp_path / "not-created"))

    assert "does not exist" in message


def test_an_sftp_key_the_server_does_not_know_is_unreachable(sftp_server, tmp_path,
                                                             monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    stranger_key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger_key)],
                   check=True, capture_output=True)

    message = unreachable(sftp_server.url(tmp_path, key=str(stranger_key)))

    assert "refused the key" in message


def test_an_sftp_host_not_in_known_hosts_is_refused(sftp_server, tmp_path):
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")

    message = unreachable(sftp_server.url(tmp_path, known_hosts=str(empty_known_hosts)))

    assert "not in" in message and "host_key=accept-new" in message
    assert empty_known_hosts.read_text() == ""


def test_accept_new_trusts_the_first_host_key_and_remembers_it(sftp_server, tmp_path):
    known_hosts = tmp_path / "known_hosts"

    check_reachable(open_storage(
        sftp_server.url(tmp_path, known_hosts=str(known_hosts), host_key="accept-new")
    ))

    assert known_hosts.read_text() == sftp_server.known_hosts.read_text()
    # Remembered: the strict default now lets the same server in.
    check_reachable(open_storage(sftp_server.url(tmp_path, known_hosts=str(known_hosts))))


def test_an_sftp_host_whose_key_changed_is_refused_even_with_accept_new(sftp_server,
                                                                        tmp_path):
    impostor_key = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor_key)],
                   check=True, capture_output=True)
    known_hosts = tmp_path / "known_hosts"
    impostor_public = " ".join(impostor_key.with_suffix(".pub").read_text().split()[:2])
    known_hosts.write_text(f"[127.0.0.1]:{sftp_server.port} {impostor_public}\n")

    message = unreachable(
        sftp_server.url(tmp_path, known_hosts=str(known_hosts), host_key="accept-new")
    )

    assert "changed" in message
    assert known_hosts.read_text() == f"[127.0.0.1]:{sftp_server.port} {impostor_public}\n"
