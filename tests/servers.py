"""Real servers for the replica tests: S3 over HTTP and SFTP over SSH, on loopback ports.

The product code talks to them as it would to AWS S3 or a NAS over SSH: through
django-storages, boto3 and paramiko, over real sockets. Nothing here patches boto3.

- S3: moto's standalone server (`python -m moto.server`) in a subprocess. It starts with
  credential checks on: the fixture creates an IAM user with an access key and an S3 policy,
  then turns moto's authentication on, so a wrong key is refused as AWS would refuse it.
- SFTP: Debian's OpenSSH server (`/usr/sbin/sshd -D -e`) with a throwaway host key, a
  throwaway user key and a generated sshd_config, as the user running the tests.

The fixtures (registered in tests/conftest.py):

- `s3_server` (session): the running S3Server. Its methods create buckets and build URLs;
  they use the server's credentials themselves, whatever the environment says.
- `s3` (function): the same S3Server, with the AWS environment variables set to its
  credentials for the test (and no ~/.aws files or instance role to fall back on).
- `s3_replica_url` (function): the s3:// URL of a new, empty bucket, with `s3` in force.
- `sftp_server` (session): the running SFTPServer; `url(directory)` names a directory.
- `sftp_replica_url` (function): the sftp:// URL of a new, empty directory served by sshd.
- `file_replica_url` (function): the file:// URL of a new, empty directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import getpass
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

SSHD = "/usr/sbin/sshd"
LOOPBACK = "127.0.0.1"
# How long a server may take to start listening; the tests themselves time nothing.
START_DEADLINE_SECONDS = 60
S3_REGION = "us-east-1"
S3_USER = "failsafe-replica"
S3_POLICY = (
    '{"Version": "2012-10-17", "Statement": '
    '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

_bucket_numbers = itertools.count(1)


def free_port() -> int:
    """A TCP port nothing listens on now (the server that takes it binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _log_tail(log_path: Path, lines: int = 5) -> str:
    try:
        text = log_path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(text[-lines:])


def _wait_until_listening(process: subprocess.Popen, port: int, log_path: Path, what: str):
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with status {process.returncode}: {_log_tail(log_path)}"
            )
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not listen on port {port}: {_log_tail(log_path)}")


def _die_with_the_tests() -> None:
    # Runs in the child before exec: the kernel sends it SIGTERM when the test process
    # dies, so a killed test run leaves no server behind holding a port.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- S3 -----------------------------------------------------------------------------------


class S3Server:
    """moto's S3 server on a loopback port, requiring the credentials it hands out."""

    region = S3_REGION

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.access_key_id = ""
        self.secret_access_key = ""

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> S3Server:
        log_path = self.work_dir / "moto.log"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for attempt in range(3):
            self.port = free_port()
            with open(log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=environment,
                    preexec_fn=_die_with_the_tests,
                )
            try:
                _wait_until_listening(self.process, self.port, log_path, "moto's S3 server")
                break
            except RuntimeError:
                _stop(self.process)
                if attempt == 2:
                    raise
        self._require_credentials()
        return self

    def _require_credentials(self) -> None:
        # While moto checks nothing, make the user whose key the tests will use...
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName=S3_USER)
        iam.put_user_policy(UserName=S3_USER, PolicyName="s3", PolicyDocument=S3_POLICY)
        key = iam.create_access_key(UserName=S3_USER)["AccessKey"]
        self.access_key_id = key["AccessKeyId"]
        self.secret_access_key = key["SecretAccessKey"]
        # ...then have every later request signed by a known key with a policy allowing it.
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            # Not a form, or Flask takes the body away from moto.
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.status == 200

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def client(self, *, access_key_id: str | None = None, secret_access_key: str | None = None):
        """A boto3 S3 client of this server (its own credentials unless others are given)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(retries={"mode": "standard", "max_attempts": 2}),
        )

    def create_bucket(self, *, object_lock: bool = False, name: str | None = None) -> str:
        """A new empty bucket (with S3 Object Lock enabled if asked); returns its name."""
        name = name or f"replica-{os.getpid()}-{next(_bucket_numbers)}"
        if object_lock:
            self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            self.client().create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "failsafe") -> str:
        """The s3:// URL of `prefix` in `bucket` on this server."""
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint_url={self.endpoint_url}&region={self.region}"

    def use_credentials(self, monkeypatch) -> None:
        """Puts this server's key in the AWS environment variables, and nothing else AWS."""
        for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
                     "AWS_DEFAULT_PROFILE", "AWS_S3_SESSION_PROFILE", "AWS_S3_ACCESS_KEY_ID",
                     "AWS_S3_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)
        missing = str(self.work_dir / "no-such-aws-file")
        monkeypatch.setenv("AWS_CONFIG_FILE", missing)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_DEFAULT_REGION", self.region)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", self.access_key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", self.secret_access_key)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    s3_server.use_credentials(monkeypatch)
    return s3_server


@pytest.fixture
def s3_replica_url(s3):
    return s3.url(s3.create_bucket())


# --- SFTP ---------------------------------------------------------------------------------


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


class SFTPServer:
    """OpenSSH's sshd on a loopback port, letting the current user in with one key."""

    host = LOOPBACK

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.user = getpass.getuser()
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.host_key = work_dir / "ssh_host_ed25519_key"
        self.user_key = work_dir / "id_ed25519"
        self.authorized_keys = work_dir / "authorized_keys"
        self.known_hosts = work_dir / "known_hosts"
        self.config = work_dir / "sshd_config"

    def start(self) -> SFTPServer:
        if not os.path.exists(SSHD):
            pytest.fail(
                f"{SSHD} is missing: the SFTP tests need OpenSSH's server "
                "(apt-get install -y openssh-server)",
                pytrace=False,
            )
        _keygen(self.host_key, "failsafe-test-host")
        _keygen(self.user_key, "failsafe-test-user")
        shutil.copyfile(f"{self.user_key}.pub", self.authorized_keys)
        if os.geteuid() == 0:
            # sshd's privilege separation directory; Debian makes it only when sshd runs
            # as a service.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log_path = self.work_dir / "sshd.log"
        for attempt in range(3):
            self.port = free_port()
            self._write_config()
            config_test = subprocess.run([SSHD, "-t", "-f", str(self.config)], text=True,
                                         capture_output=True, stdin=subprocess.DEVNULL)
            if config_test.returncode != 0:
                raise RuntimeError(f"sshd refused its test config: {config_test.stderr.strip()}")
            with open(log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(self.config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    preexec_fn=_die_with_the_tests,
                )
            try:
                _wait_until_listening(self.process, self.port, log_path, "sshd")
                break
            except RuntimeError:
                _stop(self.process)
                if attempt == 2:
                    raise
        host_public_key = Path(f"{self.host_key}.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {' '.join(host_public_key)}\n")
        return self

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}:{self.port}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.work_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "X11Forwarding no",
                    "AllowTcpForwarding no",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def url(self, directory: Path | str, **options: str) -> str:
        """The sftp:// URL of `directory` (an absolute path on this host, served by sshd),
        with this server's user key and known_hosts unless `options` say otherwise."""
        options = {"key": str(self.user_key), "known_hosts": str(self.known_hosts), **options}
        query = "&".join(f"{name}={value}" for name, value in options.items() if value)
        return f"sftp://{self.user}@{self.host}:{self.port}{directory}" + (
            f"?{query}" if query else ""
        )


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory):
    server = SFTPServer(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def sftp_replica_url(sftp_server, tmp_path, monkeypatch):
    # Only the URL's key counts, never an agent the developer happens to run.
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    directory = tmp_path / "sftp-replica"
    directory.mkdir()
    return sftp_server.url(directory)


# --- file ---------------------------------------------------------------------------------


@pytest.fixture
def file_replica_url(tmp_path):
    directory = tmp_path / "file-replica"
    directory.mkdir()
    return f"file://{directory}"
