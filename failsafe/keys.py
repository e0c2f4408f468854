"""The failsafe's key material: the Tink keyset that encrypts archives, the audit key, and
the key that names archive chunks.

The keyset is JSON, either inline in `settings.FAILSAFE_KEYSET` (kept by whatever holds the
environment's secrets) or in the file `settings.FAILSAFE_KEYSET_FILE`, which this module can
create and rotate. Rotation adds a key and makes it primary but keeps the old ones, because
every archive written before the rotation still needs its key. Settings are read on every
call so tests and a rotation in another process are seen without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tink
from django.conf import settings
from django.utils.crypto import salted_hmac
from tink import secret_key_access
from tink import streaming_aead as tink_streaming_aead
from tink.proto import tink_pb2

from .durable import fsync_directory, fsync_path
from .exceptions import FailsafeError

NO_KEYSET = "No failsafe keyset: run manage.py raos_bootstrap or set FAILSAFE_KEYSET"
UNREADABLE_KEYSET = "The failsafe keyset in {source} is not a valid Tink streaming AEAD keyset"
INLINE_ROTATION = (
    "The failsafe keyset is set inline by FAILSAFE_KEYSET: rotate it where it is kept, "
    "then update FAILSAFE_KEYSET"
)

# Salt of the audit key derived from SECRET_KEY; changing it breaks every existing chain.
AUDIT_KEY_SALT = "raos.failsafe.audit-chain"
# Salt of the chunk-id key. Changing it (or FAILSAFE_CHUNK_KEY, or SECRET_KEY) only costs
# deduplication: manifests name their chunks, so old backups still read.
CHUNK_KEY_SALT = "raos.failsafe.chunk-id"

# 1 MB segments: a reader holds one segment, so memory stays flat for any archive size.
KEY_TEMPLATE = tink_streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB


@dataclass(frozen=True)
class ActiveKeyset:
    """The streaming AEAD of one keyset and the id of the key it encrypts with."""

    primitive: tink_streaming_aead.StreamingAead
    primary_key_id: int


@functools.cache
def _register() -> None:
    tink_streaming_aead.register()


def _inline_keyset() -> str:
    return (getattr(settings, "FAILSAFE_KEYSET", "") or "").strip()


def _keyset_path() -> Path | None:
    configured = getattr(settings, "FAILSAFE_KEYSET_FILE", "") or ""
    return Path(configured) if configured else None


def _read_keyset() -> tuple[str, str]:
    """Returns (where the keyset comes from, its JSON)."""
    inline = _inline_keyset()
    if inline:
        return "FAILSAFE_KEYSET", inline
    path = _keyset_path()
    if path is None:
        raise FailsafeError(NO_KEYSET)
    try:
        return str(path), path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FailsafeError(NO_KEYSET) from None


def _parse(source: str, keyset_json: str) -> tink.KeysetHandle:
    _register()
    try:
        return tink.json_proto_keyset_format.parse(keyset_json, secret_key_access.TOKEN)
    except tink.TinkError:
        # `from None`: the parser's message may quote the keyset, which is secret.
        raise FailsafeError(UNREADABLE_KEYSET.format(source=source)) from None


@functools.lru_cache(maxsize=8)
def _active_keyset(source: str, keyset_json: str) -> ActiveKeyset:
    # Cached on the keyset's text, so a rotation (new text) is picked up on the next call.
    handle = _parse(source, keyset_json)
    try:
        primitive = handle.primitive(tink_streaming_aead.StreamingAead)
    except tink.TinkError:
        raise FailsafeError(UNREADABLE_KEYSET.format(source=source)) from None
    return ActiveKeyset(primitive, handle.keyset_info().primary_key_id)


def load_keyset_handle() -> tink.KeysetHandle:
    """The configured keyset. Raises FailsafeError when there is none or it is unreadable."""
    return _parse(*_read_keyset())


def active_keyset() -> ActiveKeyset:
    """The primitive and primary key id read together, so they always describe one keyset."""
    return _active_keyset(*_read_keyset())


def streaming_aead() -> tink_streaming_aead.StreamingAead:
    return active_keyset().primitive


def primary_key_id() -> int:
    return active_keyset().primary_key_id


def _write_private_temp(directory: Path, text: str) -> str:
    """Writes `text` to a new file in `directory`, mode 0600 from creation, and syncs it."""
    # mkstemp creates the file 0600 whatever the umask: the key never sits in a readable file.
    fd, temp_path = tempfile.mkstemp(prefix=".keyset-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as temp_file:
            temp_file.write(text)
        fsync_path(temp_path)
    except BaseException:
        os.unlink(temp_path)
        raise
    return temp_path


def _new_keyset_json() -> str:
    _register()
    handle = tink.new_keyset_handle(KEY_TEMPLATE)
    return tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)


def ensure_keyset_file() -> str | None:
    """Creates a new keyset file when no keyset is configured; returns its path, else None."""
    path = _keyset_path()
    if _inline_keyset() or path is None or path.exists():
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp_path = _write_private_temp(path.parent, _new_keyset_json())
    try:
        # A hard link publishes the complete file or fails if another process won the race;
        # nobody ever reads a half-written keyset.
        os.link(temp_path, path)
    except FileExistsError:
        return None
    finally:
        os.unlink(temp_path)
    fsync_directory(path.parent)
    return str(path)


@contextlib.contextmanager
def _rotation_lock(path: Path):
    # Two rotations at once would each drop the other's new key, and with it every archive
    # written under that key; the lock file serializes them across processes.
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _keyset_proto(handle: tink.KeysetHandle) -> tink_pb2.Keyset:
    serialized = tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    return tink_pb2.Keyset.FromString(serialized)


def rotate_keyset() -> int:
    """Adds a new primary key to the keyset file, keeping the old keys; returns its id.

    Raises FailsafeError when the keyset is inline (FAILSAFE_KEYSET) or missing.
    """
    if _inline_keyset():
        raise FailsafeError(INLINE_ROTATION)
    path = _keyset_path()
    if path is None or not path.exists():
        raise FailsafeError(NO_KEYSET)
    with _rotation_lock(path):
        keyset = _keyset_proto(load_keyset_handle())
        taken = {key.key_id for key in keyset.key}
        while True:
            new_key = _keyset_proto(tink.new_keyset_handle(KEY_TEMPLATE)).key[0]
            if new_key.key_id not in taken:  # ids are random 32-bit values
                break
        keyset.key.append(new_key)
        keyset.primary_key_id = new_key.key_id
        rotated = tink.proto_keyset_format.parse(
            keyset.SerializeToString(), secret_key_access.TOKEN
        )
        rotated_json = tink.json_proto_keyset_format.serialize(rotated, secret_key_access.TOKEN)
        temp_path = _write_private_temp(path.parent, rotated_json)
        try:
            os.replace(temp_path, path)
        except BaseException:
            os.unlink(temp_path)
            raise
        fsync_directory(path.parent)
    return new_key.key_id


def audit_key() -> bytes:
    """The audit chain's HMAC key: FAILSAFE_AUDIT_KEY, else derived from SECRET_KEY.

    It lives only in settings, never in the database, so someone who can write the audit
    table cannot forge a chain that verifies.
    """
    configured = getattr(settings, "FAILSAFE_AUDIT_KEY", "") or ""
    if configured:
        return configured.encode("utf-8")
    return salted_hmac(
        AUDIT_KEY_SALT, "audit-key", secret=settings.SECRET_KEY, algorithm="sha256"
    ).digest()


def chunk_id_key(key_id: int) -> bytes:
    """The 32-byte key of the keyed hash that names the chunks encrypted under `key_id`.

    From FAILSAFE_CHUNK_KEY, else from SECRET_KEY; never stored with the archives. Keyed, so
    someone who can list the archive storage cannot test a guess of a chunk's rows against
    its name. One key per keyset key: after a rotation, new backups write their chunks
    afresh under the new primary key instead of reusing ones encrypted under the old key.
    """
    configured = getattr(settings, "FAILSAFE_CHUNK_KEY", "") or ""
    return salted_hmac(
        CHUNK_KEY_SALT,
        f"chunk-id-key:{key_id}",
        secret=configured or settings.SECRET_KEY,
        algorithm="sha256",
    ).digest()
