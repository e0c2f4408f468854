"""The SFTP kind of replica storage (locations.py), imported only when one is opened:
paramiko and its cryptography are a tenth of an idle process's memory."""

from __future__ import annotations

import contextlib
import os

import paramiko
from storages.backends.sftpstorage import SFTPStorage

from .locations import CONNECT_TIMEOUT_SECONDS, _Location, _missing_root


class ReplicaSFTPStorage(SFTPStorage):
    """django-storages' SFTP storage that checks the server's host key.

    The upstream class adds any unknown host key to known_hosts silently (paramiko's
    AutoAddPolicy), which lets anyone between us and the server receive the backups. This
    one refuses an unknown host unless the URL said host_key=accept-new, and never rewrites
    the known_hosts file: it appends the one accepted line. It also keeps names (see the
    module docstring) and lets delete() report a lost connection instead of ignoring it.
    """

    def get_default_settings(self):
        return {**super().get_default_settings(), "accept_new_host_key": False}

    def _connect(self):
        client = paramiko.SSHClient()
        known_hosts = self.known_host_file
        if os.path.exists(known_hosts):
            client.load_host_keys(known_hosts)
        if self.accept_new_host_key:
            client.set_missing_host_key_policy(_AppendNewHostKey(known_hosts))
        else:
            client.set_missing_host_key_policy(_RefuseUnknownHost(known_hosts))
        try:
            client.connect(self.host, **self.params)
        except BaseException:
            client.close()
            raise
        self._ssh = client
        self._sftp = client.open_sftp()

    def delete(self, name):
        with contextlib.suppress(FileNotFoundError):
            self.sftp.remove(self._remote_path(name))

    def _mkdir(self, path):
        # Reached only when a directory is missing all the way up to the root: the root
        # itself is never made here (see _missing_root).
        root = self.root_path.rstrip("/") or "/"
        if path == root or root.startswith(path.rstrip("/") + "/"):
            raise _missing_root(self)
        super()._mkdir(path)


class _RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
    # OpenSSH's StrictHostKeyChecking yes.
    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(
            f"the host key of {hostname} ({key.get_name()} {key.fingerprint}) is not in "
            f"{self.known_hosts}; add it with ssh-keyscan after checking its fingerprint, or "
            "add ?host_key=accept-new to the URL"
        )


class _AppendNewHostKey(paramiko.MissingHostKeyPolicy):
    # OpenSSH's StrictHostKeyChecking accept-new: trust on first use, remember it.
    def __init__(self, known_hosts: str):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        directory = os.path.dirname(self.known_hosts)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as known_hosts_file:
            known_hosts_file.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class UnknownHostKey(paramiko.SSHException):
    """The server's host key is not in known_hosts and the URL did not accept new ones."""


def open_sftp(location: _Location) -> ReplicaSFTPStorage:
    key_file = location.options.get("key")
    params = {
        "port": location.port,
        "username": location.user,
        "timeout": CONNECT_TIMEOUT_SECONDS,
        "banner_timeout": CONNECT_TIMEOUT_SECONDS,
        "auth_timeout": CONNECT_TIMEOUT_SECONDS,
        # Keys only: a URL never carries a password, and nothing here may prompt for one.
        # A key named in the URL is the only one tried, so what authenticates is predictable.
        "look_for_keys": key_file is None,
        "allow_agent": key_file is None,
    }
    if key_file is not None:
        params["key_filename"] = key_file
    return ReplicaSFTPStorage(
        host=location.host,
        params=params,
        interactive=False,
        file_mode=0o600,
        dir_mode=0o700,
        known_host_file=location.options.get("known_hosts")
        or os.path.expanduser(os.path.join("~", ".ssh", "known_hosts")),
        accept_new_host_key=location.options.get("host_key") == "accept-new",
        root_path=location.path,
        base_url=None,
    )
