"""Storages named by a URL, so a replica is one line of configuration.

A replica (FAILSAFE_REPLICAS) is a Django storage opened from a URL. Three forms:

``file:///absolute/path``
    A directory on this host: a mounted NAS or a second disk. Files are private to this
    process's user (0600, directories 0700). Nothing after the path is accepted.

``s3://bucket[/prefix][?endpoint_url=https://host:port][&region=name][&addressing_style=path]``
    A bucket (and a key prefix inside it) through django-storages' S3 backend and boto3.
    Without ``endpoint_url`` it is AWS S3; with it, anything speaking the S3 API (MinIO,
    Ceph, Backblaze B2, ...). ``region`` defaults to boto3's (AWS_DEFAULT_REGION);
    ``addressing_style`` is ``auto`` (default), ``path`` or ``virtual``. Credentials come
    from the usual AWS places only: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    AWS_SESSION_TOKEN in the environment, AWS_PROFILE, an instance role.

``sftp://user@host[:port]/absolute/path[?key=/path/to/key][&known_hosts=/path][&host_key=…]``
    A directory on an SSH server through django-storages' SFTP backend, key-based only.
    With ``key``, that private key file is the only one tried (so it must not be
    passphrase-protected); without it, the keys of a running ssh-agent and ~/.ssh/id_*.
    The server's host key is checked against ``known_hosts`` (default ~/.ssh/known_hosts)
    and a host that is not in it is refused, as OpenSSH's ``StrictHostKeyChecking yes``
    does: add it first with ``ssh-keyscan -p PORT HOST >> known_hosts`` (and compare the
    fingerprint with the server's), or say ``host_key=accept-new`` to trust the key seen on
    the first connection and append it to that file (OpenSSH's ``accept-new``). A host
    whose key changed is refused either way. ``host_key=strict`` is the default, spelled out.

A URL never carries a secret: one with a password (``user:password@``), an S3 URL with any
user part, or a query parameter this module does not know is refused, so a URL can be shown
to people and stored in the database as it is (``describe``). The bucket or directory must
exist: a replica whose NAS is not mounted must not fill the local disk instead, so
``check_reachable`` refuses a missing directory as it refuses a missing bucket, and saving
to a file:// or sftp:// replica whose directory has vanished raises StorageUnreachable
instead of creating it.

Every storage opened here keeps what it wrote: saving a name that is already taken stores the
file under another name (returned by ``save``), as Django's FileSystemStorage does, on all
three kinds alike.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from django.core.files.storage import FileSystemStorage, Storage

from ..exceptions import InvalidStorageUrl, StorageUnreachable, one_line

SCHEMES = ("file", "s3", "sftp")
SFTP_DEFAULT_PORT = 22
# Long enough for a slow link, short enough that a dead replica does not hang a backup.
CONNECT_TIMEOUT_SECONDS = 15
READ_TIMEOUT_SECONDS = 120

_S3_PARAMETERS = ("endpoint_url", "region", "addressing_style")
_SFTP_PARAMETERS = ("key", "known_hosts", "host_key")
_ADDRESSING_STYLES = ("auto", "path", "virtual")
_HOST_KEY_POLICIES = ("strict", "accept-new")
# What AWS accepts as a bucket name, which every S3 service follows.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION_NAME = re.compile(r"[a-z0-9-]{1,64}")
_SFTP_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")


# --- Parsing: a URL to the few facts each kind needs -----------------------------------------


class _Location:
    """A parsed storage URL: its scheme, where it points, and its options."""

    def __init__(self, scheme: str, *, host: str = "", user: str = "", port: int | None = None,
                 path: str = "", options: dict[str, str] | None = None):
        self.scheme = scheme
        self.host = host
        self.user = user
        self.port = port
        self.path = path
        self.options = options or {}

    def url(self) -> str:
        """The URL written the one canonical way."""
        query = f"?{urlencode(sorted(self.options.items()), safe='/:')}" if self.options else ""
        path = quote(self.path, safe="/")
        if self.scheme == "file":
            return f"file://{path}"
        if self.scheme == "s3":
            return f"s3://{self.host}{path}{query}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sftp://{self.user}@{host}:{self.port}{path}{query}"


def _refuse(url: str, what: str) -> InvalidStorageUrl:
    # Echoed only once known to carry no password, and without its ?query, where someone
    # may have tried to put a key this module refuses.
    shown = url.split("#", 1)[0].split("?", 1)[0]
    return InvalidStorageUrl(f"Invalid storage URL {shown!r}: {what}.")


def _parse(url: str) -> _Location:
    if not isinstance(url, str) or not url.strip():
        raise InvalidStorageUrl("Invalid storage URL: it is empty.")
    url = url.strip()
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise InvalidStorageUrl("Invalid storage URL: it contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError as exc:
        # The message of urlsplit never includes the URL, so nothing secret is echoed.
        raise InvalidStorageUrl(f"Invalid storage URL: {one_line(exc)}.") from None
    if parts.password is not None:
        # Never echo this one: it carries a password.
        shown = f"{parts.scheme}://…@{parts.hostname or ''}"
        raise InvalidStorageUrl(
            f"Invalid storage URL {shown}: it contains a password; storage URLs never carry "
            "secrets (use an SSH key for sftp://, the AWS environment variables for s3://)."
        )
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(f"{name}://" for name in SCHEMES)
        if not scheme:
            raise _refuse(url, f"it has no scheme (one of {known})")
        raise _refuse(url, f"unknown scheme {scheme}:// (use one of {known})")
    if parts.fragment:
        raise _refuse(url, "a storage URL has no #fragment")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _refuse(url, "its ?query is malformed") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name in options:
            raise _refuse(url, f"?{name}= is given twice")
        options[name] = value
    return {"file": _parse_file, "s3": _parse_s3, "sftp": _parse_sftp}[scheme](url, parts, options)


def _clean_path(url: str, raw_path: str, what: str) -> str:
    path = unquote(raw_path)
    if not path.startswith("/"):
        raise _refuse(url, f"the {what} must be an absolute path (three slashes: file:///path)"
                      if what == "directory" else f"the {what} must be an absolute path")
    if "\x00" in path:
        raise _refuse(url, f"the {what} contains a NUL character")
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise _refuse(url, f"the {what} must not contain . or .. segments")
    if not segments:
        raise _refuse(url, f"the {what} is missing (the root directory is not a storage)")
    return "/" + "/".join(segments)


def _no_options(url: str, options: dict[str, str], allowed: tuple[str, ...], scheme: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise _refuse(url, f"unknown option ?{unknown[0]}= for {scheme}:// (accepted: {accepted})")
    for name, value in options.items():
        if not value:
            raise _refuse(url, f"?{name}= is empty")


def _parse_file(url: str, parts, options: dict[str, str]) -> _Location:
    if parts.username is not None:
        raise _refuse(url, "a file:// URL has no user")
    if parts.netloc not in ("", "localhost"):
        raise _refuse(url, f"file:// names a directory on this host, not on {parts.netloc!r} "
                      "(write file:///absolute/path, three slashes)")
    if not parts.path:
        raise _refuse(url, "the directory is missing (write file:///absolute/path)")
    _no_options(url, options, (), "file")
    return _Location("file", path=_clean_path(url, parts.path, "directory"))


def _parse_s3(url: str, parts, options: dict[str, str]) -> _Location:
    if parts.username is not None:
        raise _refuse(url, "an s3:// URL carries no user or key: credentials come from the "
                      "AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
    bucket = parts.netloc
    if not bucket:
        raise _refuse(url, "the bucket is missing (write s3://bucket/prefix)")
    if parts.port is not None or not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise _refuse(url, f"{bucket!r} is not a valid bucket name (3 to 63 lowercase letters, "
                      "digits, dots and hyphens; the endpoint goes in ?endpoint_url=)")
    _no_options(url, options, _S3_PARAMETERS, "s3")
    endpoint = options.get("endpoint_url")
    if endpoint is not None:
        endpoint_parts = urlsplit(endpoint)
        if endpoint_parts.scheme not in ("http", "https") or not endpoint_parts.hostname:
            raise _refuse(url, "?endpoint_url= must be an http:// or https:// URL")
        if endpoint_parts.username is not None or endpoint_parts.password is not None:
            raise _refuse(url, "?endpoint_url= must not carry a user or password")
        if endpoint_parts.query or endpoint_parts.fragment:
            raise _refuse(url, "?endpoint_url= must be scheme://host[:port][/path] only")
        try:
            endpoint_parts.port  # noqa: B018 - read to validate it
        except ValueError:
            raise _refuse(url, "?endpoint_url= has an invalid port") from None
    region = options.get("region")
    if region is not None and not _REGION_NAME.fullmatch(region):
        raise _refuse(url, f"?region={region} is not a region name (like eu-west-1)")
    style = options.get("addressing_style")
    if style is not None and style not in _ADDRESSING_STYLES:
        raise _refuse(url, f"?addressing_style= must be one of {', '.join(_ADDRESSING_STYLES)}")
    prefix = unquote(parts.path).strip("/")
    if any(segment in (".", "..", "") for segment in prefix.split("/")) and prefix:
        raise _refuse(url, "the prefix must not contain empty, . or .. segments")
    return _Location("s3", host=bucket, path=f"/{prefix}" if prefix else "", options=options)


def _parse_sftp(url: str, parts, options: dict[str, str]) -> _Location:
    if not parts.hostname:
        raise _refuse(url, "the host is missing (write sftp://user@host:port/path)")
    if not parts.username:
        raise _refuse(url, "the user is missing (write sftp://user@host:port/path)")
    user = unquote(parts.username)
    if not _SFTP_USER.fullmatch(user):
        raise _refuse(url, f"{user!r} is not a valid user name")
    port = parts.port if parts.port is not None else SFTP_DEFAULT_PORT
    if port == 0:
        raise _refuse(url, "port 0 is not a port")
    _no_options(url, options, _SFTP_PARAMETERS, "sftp")
    for name in ("key", "known_hosts"):
        if name in options and not os.path.isabs(options[name]):
            raise _refuse(url, f"?{name}= must be an absolute path")
    policy = options.get("host_key")
    if policy is not None and policy not in _HOST_KEY_POLICIES:
        raise _refuse(url, f"?host_key= must be one of {', '.join(_HOST_KEY_POLICIES)}")
    if not parts.path:
        raise _refuse(url, "the directory is missing (write sftp://user@host:port/path)")
    path = _clean_path(url, parts.path, "directory on the server")
    return _Location("sftp", host=parts.hostname, user=user, port=port, path=path,
                     options=options)


# --- Opening: a parsed URL to a Django storage -----------------------------------------------


def describe(url: str) -> str:
    """`url` as shown to people and stored in the database: written the canonical way.

    Raises InvalidStorageUrl as open_storage does; there is nothing to hide in a URL that
    passes, since one carrying a password is refused.
    """
    return _parse(url).url()


def open_storage(url: str) -> Storage:
    """The Django storage that `url` names (see the module docstring for the forms).

    Opening connects to nothing; `check_reachable` proves the storage answers. Raises
    InvalidStorageUrl with one line for anything malformed.
    """
    location = _parse(url)
    if location.scheme == "file":
        return ReplicaFileSystemStorage(
            location=location.path,
            file_permissions_mode=0o600,
            directory_permissions_mode=0o700,
        )
    if location.scheme == "s3":
        from . import remote_s3

        return remote_s3.open_s3(location)
    from . import remote_sftp

    return remote_sftp.open_sftp(location)


class ReplicaFileSystemStorage(FileSystemStorage):
    """Django's FileSystemStorage that never creates its own root directory (see
    _missing_root); what lies below it is made as usual, private to this user."""

    def _save(self, name, content):
        if not os.path.isdir(self.location):
            raise _missing_root(self)
        return super()._save(name, content)


def _missing_root(storage: Storage) -> StorageUnreachable:
    # A replica's directory that has vanished is most often a disk or share that is not
    # mounted: creating it would put the "off-site" copy on the local disk, unnoticed.
    return StorageUnreachable(
        f"{where(storage)} is unreachable: the directory does not exist (create it, or mount "
        "the disk it lives on)"
    )


# --- Reachability: one cheap call that proves the storage answers ----------------------------


def _loaded(module: str, name: str):
    """`module.name` if that module was imported, else None: a storage of a remote kind, or
    an error of its library, can exist only once its module is loaded, and nothing here
    loads boto3 or paramiko to find out that it is neither."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name, None) if loaded is not None else None


def _is(value, module: str, name: str) -> bool:
    kind = _loaded(module, name)
    return kind is not None and isinstance(value, kind)


def is_s3(storage: Storage) -> bool:
    return _is(storage, "storages.backends.s3", "S3Storage")


def is_sftp(storage: Storage) -> bool:
    return _is(storage, "storages.backends.sftpstorage", "SFTPStorage")


def where(storage: Storage) -> str:
    """A short name for `storage` in messages: the directory, bucket or server it is."""
    if is_s3(storage):
        prefix = f"/{storage.location}" if storage.location else ""
        at = f" at {storage.endpoint_url}" if storage.endpoint_url else ""
        return f"s3://{storage.bucket_name}{prefix}{at}"
    if is_sftp(storage):
        user = storage.params.get("username", "")
        port = storage.params.get("port", SFTP_DEFAULT_PORT)
        host = f"[{storage.host}]" if ":" in storage.host else storage.host
        return f"sftp://{user}@{host}:{port}{storage.root_path}"
    if isinstance(storage, FileSystemStorage):
        return f"file://{storage.location}"
    return storage.__class__.__name__


def check_reachable(storage: Storage) -> None:
    """Proves `storage` answers, with one cheap call: the bucket, directory or server is
    there and accepts these credentials. Raises StorageUnreachable with one line."""
    try:
        if is_s3(storage):
            _check_s3(storage)
        elif is_sftp(storage):
            _check_sftp(storage)
        elif isinstance(storage, FileSystemStorage):
            _check_directory(storage)
        else:
            storage.listdir("")
    except StorageUnreachable:
        raise
    except Exception as exc:
        raise StorageUnreachable(f"{where(storage)} is unreachable: {explain_failure(exc)}") \
            from None


def _check_directory(storage: FileSystemStorage) -> None:
    location = storage.location
    if not os.path.isdir(location):
        raise _missing_root(storage)
    if not os.access(location, os.W_OK | os.X_OK):
        raise StorageUnreachable(
            f"{where(storage)} is unreachable: this process's user may not write there"
        )
    storage.listdir("")


def _check_s3(storage) -> None:
    storage.connection.meta.client.head_bucket(Bucket=storage.bucket_name)


def _check_sftp(storage) -> None:
    try:
        attributes = storage.sftp.stat(storage.root_path)
    except FileNotFoundError:
        raise _missing_root(storage) from None
    if not stat.S_ISDIR(attributes.st_mode or 0):
        raise StorageUnreachable(f"{where(storage)} is unreachable: it is not a directory")
    storage.sftp.listdir(storage.root_path)


def explain_failure(exc: BaseException) -> str:
    """What went wrong talking to a storage, in one line for people: the S3 error code,
    the network or SSH failure, without a traceback and without any credential."""
    botocore = "botocore.exceptions"
    if _is(exc, botocore, "NoCredentialsError") or _is(exc, botocore, "PartialCredentialsError"):
        return ("no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE)")
    if _is(exc, botocore, "ClientError"):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket", "404") or (status == 404 and not code.startswith("NoSuchKey")):
            return "the bucket does not exist (create it first)"
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                    "ExpiredToken", "AccessDenied", "403", "Forbidden") or status == 403:
            return (f"access denied ({code or status}): check the AWS credentials and what "
                    "they may do on this bucket")
        message = one_line(error.get("Message", "")) if error.get("Message") else ""
        return f"S3 answered {code or status}" + (f": {message}" if message else "")
    if _is(exc, botocore, "EndpointConnectionError") or _is(exc, botocore, "ConnectTimeoutError"):
        return f"cannot connect to the endpoint ({one_line(exc)})"
    if _is(exc, "paramiko", "AuthenticationException"):
        return "the SSH server refused the key (check ?key= and the server's authorized_keys)"
    if _is(exc, "paramiko", "BadHostKeyException"):
        return (f"the host key of {exc.hostname} changed: it no longer matches known_hosts "
                "(someone may be impersonating the server; check before updating known_hosts)")
    if _is(exc, "failsafe.archive.remote_sftp", "UnknownHostKey"):
        return one_line(exc)
    if _is(exc, "paramiko", "SSHException"):
        return f"SSH failed: {one_line(exc)}"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError):
        reason = exc.strerror or one_line(exc)
        return f"cannot connect ({reason})"
    return f"{exc.__class__.__name__}: {one_line(exc)}"
