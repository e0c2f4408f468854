"""The failsafe's key material: the Tink keyset that encrypts archives, the audit key, and
the keys that name archive chunks.

The keyset is JSON, either inline in `settings.FAILSAFE_KEYSET` (kept by whatever holds the
environment's secrets) or in the file `settings.FAILSAFE_KEYSET_FILE`, which this module can
create, rotate and merge into. Rotation adds a key and makes it primary but keeps the old
ones, because every archive written before the rotation still needs its key. Settings and
files are read on every call so tests and a change made by another process are seen
without a restart.

The audit key and the chunk-naming keys come from settings or, by default, are derived from
SECRET_KEY. A new installation has another SECRET_KEY, so the recovery file (`seal` /
`unseal`, manage.py failsafe_keys export / import) carries the derived bytes themselves, and
an import writes them to the imported-keys file beside the keyset, which then takes the
place of the derivation.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import fcntl
import functools
import hmac
import json
import os
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import tink
from argon2.low_level import Type, hash_secret_raw
from django.conf import settings
from django.utils.crypto import salted_hmac
from tink import secret_key_access
from tink import streaming_aead as tink_streaming_aead
from tink.proto import tink_pb2

from .durable import fsync_directory, fsync_path
from .exceptions import ArchiveCorrupt, FailsafeError

IMPORT_ADVICE = "import the key material (manage.py failsafe_keys import)"
NO_KEYSET = (
    "No failsafe keyset: if backups exist, " + IMPORT_ADVICE + "; on a new installation "
    "run manage.py raos_bootstrap or set FAILSAFE_KEYSET"
)
UNREADABLE_KEYSET = "The failsafe keyset in {source} is not a valid Tink streaming AEAD keyset"
INLINE_ROTATION = (
    "The failsafe keyset is set inline by FAILSAFE_KEYSET: rotate it where it is kept, "
    "then update FAILSAFE_KEYSET"
)
MISSING_KEY = (
    "Backup {backup_id} was encrypted with key {key_id} which the keyset does not hold: "
    + IMPORT_ADVICE
)
INLINE_SOURCE = "FAILSAFE_KEYSET"

# Salt of the audit key derived from SECRET_KEY; changing it breaks every existing chain.
AUDIT_KEY_SALT = "raos.failsafe.audit-chain"
# Salt of the chunk-id key. Changing it (or FAILSAFE_CHUNK_KEY, or SECRET_KEY) only costs
# deduplication: manifests name their chunks, so old backups still read.
CHUNK_KEY_SALT = "raos.failsafe.chunk-id"

# 1 MB segments: a reader holds one segment, so memory stays flat for any archive size.
KEY_TEMPLATE = tink_streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB

# Where an import puts the audit and chunk-naming keys: beside the keyset file, same stem.
IMPORTED_KEYS_SUFFIX = ".imported-keys"


class KeyNotHeld(ArchiveCorrupt):
    """The archive was encrypted under a key id the configured keyset does not hold."""


@dataclass(frozen=True)
class ActiveKeyset:
    """The streaming AEAD of one keyset, the id of the key it encrypts with, and every key
    id it can decrypt."""

    primitive: tink_streaming_aead.StreamingAead
    primary_key_id: int
    key_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class KeysetInfo:
    """Which keyset is configured, without its secrets: where it is and which keys it holds."""

    source: str
    primary_key_id: int
    key_ids: tuple[int, ...]


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
        return INLINE_SOURCE, inline
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
    info = handle.keyset_info()
    return ActiveKeyset(
        primitive, info.primary_key_id, frozenset(key.key_id for key in info.key_info)
    )


def load_keyset_handle() -> tink.KeysetHandle:
    """The configured keyset. Raises FailsafeError when there is none or it is unreadable."""
    return _parse(*_read_keyset())


def active_keyset() -> ActiveKeyset:
    """The primitive and primary key id read together, so they always describe one keyset."""
    return _active_keyset(*_read_keyset())


def keyset_info() -> KeysetInfo:
    """Where the keyset is and which key ids it holds. Raises FailsafeError like
    active_keyset when there is none or it is unreadable."""
    source, keyset_json = _read_keyset()
    active = _active_keyset(source, keyset_json)
    return KeysetInfo(source, active.primary_key_id, tuple(sorted(active.key_ids)))


def streaming_aead(
    *, key_id: int | None = None, backup_id: str = ""
) -> tink_streaming_aead.StreamingAead:
    """The keyset's streaming AEAD. Given the key id an archive was encrypted with, raises
    KeyNotHeld naming it when the keyset does not hold that key, instead of the generic
    "cannot be decrypted" a decryption attempt would end in."""
    active = active_keyset()
    if key_id is not None and key_id not in active.key_ids:
        raise KeyNotHeld(MISSING_KEY.format(backup_id=backup_id or "?", key_id=key_id))
    return active.primitive


def primary_key_id() -> int:
    return active_keyset().primary_key_id


def _write_private_temp(directory: Path, data: str | bytes) -> str:
    """Writes `data` to a new file in `directory`, mode 0600 from creation, and syncs it."""
    # mkstemp creates the file 0600 whatever the umask: the key never sits in a readable file.
    fd, temp_path = tempfile.mkstemp(prefix=".keyset-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(data.encode("utf-8") if isinstance(data, str) else data)
        fsync_path(temp_path)
    except BaseException:
        os.unlink(temp_path)
        raise
    return temp_path


def _replace_private_file(path: Path, data: str | bytes) -> None:
    """Replaces `path` whole with `data` (mode 0600): readers see the old file or the new."""
    temp_path = _write_private_temp(path.parent, data)
    try:
        os.replace(temp_path, path)
    except BaseException:
        os.unlink(temp_path)
        raise
    fsync_directory(path.parent)


def write_new_private_file(path: Path, data: bytes) -> None:
    """Creates `path` (mode 0600) holding `data`; refuses, writing nothing, when it exists."""
    if not path.parent.is_dir():
        raise FailsafeError(f"Cannot write {path}: its directory does not exist")
    temp_path = _write_private_temp(path.parent, data)
    try:
        # A hard link publishes the complete file, and never over an existing one.
        os.link(temp_path, path)
    except FileExistsError:
        raise FailsafeError(f"{path} already exists: name a new file") from None
    finally:
        os.unlink(temp_path)
    fsync_directory(path.parent)


def _new_keyset_json() -> str:
    _register()
    handle = tink.new_keyset_handle(KEY_TEMPLATE)
    return tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)


def _publish_new_keyset(path: Path, keyset_json: str) -> bool:
    """Writes the keyset file unless one exists; False if another process won the race."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp_path = _write_private_temp(path.parent, keyset_json)
    try:
        # A hard link publishes the complete file or fails if another process won the race;
        # nobody ever reads a half-written keyset.
        os.link(temp_path, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temp_path)
    fsync_directory(path.parent)
    return True


def keyset_file() -> str:
    """The configured keyset file's path ("" when none is configured), set inline or not."""
    path = _keyset_path()
    return str(path) if path is not None else ""


def keyset_file_missing() -> bool:
    """Whether a keyset file is configured and absent, so ensure_keyset_file would create it."""
    path = _keyset_path()
    return not _inline_keyset() and path is not None and not path.exists()


def ensure_keyset_file() -> str | None:
    """Creates a new keyset file when no keyset is configured; returns its path, else None.

    A new keyset cannot open any archive written before it: callers make sure no backup
    needs the keyset that is missing (failsafe.services.prepare_keyset does).
    """
    path = _keyset_path()
    if not keyset_file_missing() or path is None:
        return None
    return str(path) if _publish_new_keyset(path, _new_keyset_json()) else None


@contextlib.contextmanager
def _rotation_lock(path: Path):
    # Two rotations (or imports) at once would each drop the other's new key, and with it
    # every archive written under that key; the lock file serializes them across processes.
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


def _keyset_json(keyset: tink_pb2.Keyset) -> str:
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)


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
        _replace_private_file(path, _keyset_json(keyset))
    return new_key.key_id


# --- the audit and chunk-naming keys ---------------------------------------------------
#
# Each comes from its setting, else from the imported-keys file (written by an import),
# else from SECRET_KEY.


def _imported_keys_path() -> Path | None:
    path = _keyset_path()
    return path.with_name(path.stem + IMPORTED_KEYS_SUFFIX) if path is not None else None


@dataclass(frozen=True)
class _ImportedKeys:
    audit: bytes | None = field(default=None, repr=False)
    chunk_ids: Mapping[int, bytes] = field(default_factory=dict, repr=False)


def _imported_keys() -> _ImportedKeys:
    path = _imported_keys_path()
    if path is None:
        return _ImportedKeys()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return _ImportedKeys()
    # The audit key is asked for once per event when a chain is verified: parse once per
    # version of the file.
    return _parse_imported_keys(str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)


@functools.lru_cache(maxsize=4)
def _parse_imported_keys(path: str, _mtime_ns: int, _size: int, _inode: int) -> _ImportedKeys:
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        audit = record.get("audit")
        return _ImportedKeys(
            audit=_unb64(audit) if audit else None,
            chunk_ids={int(key_id): _unb64(value) for key_id, value in record["chunk_ids"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise FailsafeError(f"The imported keys file {path} is unreadable") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        raise ValueError("not base64") from None


def _derived_audit_key() -> bytes:
    return salted_hmac(
        AUDIT_KEY_SALT, "audit-key", secret=settings.SECRET_KEY, algorithm="sha256"
    ).digest()


def _configured_audit_key() -> bytes | None:
    configured = getattr(settings, "FAILSAFE_AUDIT_KEY", "") or ""
    return configured.encode("utf-8") if configured else None


def audit_key() -> bytes:
    """The audit chain's HMAC key: FAILSAFE_AUDIT_KEY, else the imported one, else derived
    from SECRET_KEY.

    It lives only outside the database, so someone who can write the audit table cannot
    forge a chain that verifies.
    """
    return _configured_audit_key() or _imported_keys().audit or _derived_audit_key()


def audit_key_source() -> str:
    if _configured_audit_key():
        return "FAILSAFE_AUDIT_KEY"
    if _imported_keys().audit:
        return f"imported ({_imported_keys_path()})"
    return "derived from SECRET_KEY"


def _derived_chunk_id_key(key_id: int) -> bytes:
    configured = getattr(settings, "FAILSAFE_CHUNK_KEY", "") or ""
    return salted_hmac(
        CHUNK_KEY_SALT,
        f"chunk-id-key:{key_id}",
        secret=configured or settings.SECRET_KEY,
        algorithm="sha256",
    ).digest()


def chunk_id_key(key_id: int) -> bytes:
    """The 32-byte key of the keyed hash that names the chunks encrypted under `key_id`.

    Imported with the key material, else from FAILSAFE_CHUNK_KEY, else from SECRET_KEY;
    never stored with the archives. Keyed, so someone who can list the archive storage
    cannot test a guess of a chunk's rows against its name. One key per keyset key: after a
    rotation, new backups write their chunks afresh under the new primary key instead of
    reusing ones encrypted under the old key.
    """
    return _imported_keys().chunk_ids.get(key_id) or _derived_chunk_id_key(key_id)


def chunk_key_source() -> tuple[str, tuple[int, ...]]:
    """Where chunk-naming keys come from, and the key ids whose keys were imported."""
    configured = getattr(settings, "FAILSAFE_CHUNK_KEY", "") or ""
    source = "FAILSAFE_CHUNK_KEY" if configured else "derived from SECRET_KEY"
    return source, tuple(sorted(_imported_keys().chunk_ids))


# --- the recovery file: every key sealed under a passphrase, and its import ----------

RECOVERY_FORMAT = "raos-failsafe-key-material"
RECOVERY_VERSION = 1
MIN_PASSPHRASE_CHARS = 12
MAX_RECOVERY_FILE_BYTES = 1024 * 1024
# RFC 9106's second recommended argon2id setting (64 MiB, 3 passes, 4 lanes). They are
# stored in the file, so a later change of these still opens older files; a file asking
# for more than the bounds is refused before any work.
ARGON2_PARAMETERS = {"time_cost": 3, "memory_cost": 64 * 1024, "parallelism": 4}
ARGON2_BOUNDS = {"time_cost": 16, "memory_cost": 1024 * 1024, "parallelism": 16}
SALT_BYTES = 16
NONCE_BYTES = 12
WRONG_PASSPHRASE = "The recovery passphrase is wrong, or the file was altered: nothing was changed"
NOT_A_RECOVERY_FILE = "{source} is not a failsafe key recovery file: nothing was changed"


@dataclass(frozen=True)
class KeyMaterial:
    """Everything needed to open this installation's archives and check its audit chain."""

    keyset_json: str = field(repr=False)
    audit_key: bytes = field(repr=False)
    chunk_keys: Mapping[int, bytes] = field(repr=False)
    exported_at: str = ""

    @functools.cached_property
    def keyset(self) -> tink_pb2.Keyset:
        return _keyset_proto(_parse("the recovery file", self.keyset_json))

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(sorted(key.key_id for key in self.keyset.key))

    @property
    def primary_key_id(self) -> int:
        return self.keyset.primary_key_id


def current_key_material() -> KeyMaterial:
    """This installation's key material as it is in effect now. Raises FailsafeError when
    there is no keyset."""
    source, keyset_json = _read_keyset()
    active = _active_keyset(source, keyset_json)
    return KeyMaterial(
        keyset_json=keyset_json,
        audit_key=audit_key(),
        chunk_keys={key_id: chunk_id_key(key_id) for key_id in sorted(active.key_ids)},
        exported_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def _passphrase_key(passphrase: str, salt: bytes, parameters: Mapping[str, int]) -> bytes:
    return hash_secret_raw(
        secret=passphrase.encode("utf-8"),
        salt=salt,
        time_cost=parameters["time_cost"],
        memory_cost=parameters["memory_cost"],
        parallelism=parameters["parallelism"],
        hash_len=32,
        type=Type.ID,
    )


def _associated_data(header: dict) -> bytes:
    # The header travels in clear; binding it to the ciphertext means lowering its argon2
    # cost or swapping its salt makes the file fail to open instead of weakening it.
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def check_passphrase(passphrase: str) -> None:
    if len(passphrase or "") < MIN_PASSPHRASE_CHARS or not passphrase.strip():
        raise FailsafeError(
            f"The recovery passphrase must be at least {MIN_PASSPHRASE_CHARS} characters long"
        )


def seal(material: KeyMaterial, passphrase: str) -> bytes:
    """The recovery file's bytes: `material` encrypted with AES-256-GCM under a key that
    argon2id derives from `passphrase` and a random salt. The passphrase is not stored."""
    check_passphrase(passphrase)
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES)
    header = {
        "format": RECOVERY_FORMAT,
        "version": RECOVERY_VERSION,
        "kdf": {"name": "argon2id", "salt": _b64(salt), **ARGON2_PARAMETERS},
        "aead": {"name": "AES-256-GCM", "nonce": _b64(nonce)},
    }
    plaintext = json.dumps(
        {
            "keyset": material.keyset_json,
            "audit_key": _b64(material.audit_key),
            "chunk_keys": {str(key_id): _b64(key) for key_id, key in material.chunk_keys.items()},
            "exported_at": material.exported_at,
        }
    ).encode("utf-8")
    key = _passphrase_key(passphrase, salt, ARGON2_PARAMETERS)
    # The recovery file is the one user of `cryptography`: loaded here, not by every process.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ciphertext = AESGCM(key).encrypt(nonce, plaintext, _associated_data(header))
    return (json.dumps({**header, "ciphertext": _b64(ciphertext)}, indent=1) + "\n").encode()


def _recovery_header(data: bytes, source: str) -> tuple[dict, bytes, bytes, bytes, dict]:
    """(header, salt, nonce, ciphertext, argon2 parameters) of a recovery file."""
    not_ours = FailsafeError(NOT_A_RECOVERY_FILE.format(source=source))
    if len(data) > MAX_RECOVERY_FILE_BYTES:
        raise not_ours
    try:
        record = json.loads(data)
        if record.get("format") != RECOVERY_FORMAT:
            raise ValueError("not ours")
        if record.get("version") != RECOVERY_VERSION:
            raise FailsafeError(
                f"{source} has recovery file version {record.get('version')!r}; "
                f"this installation reads version {RECOVERY_VERSION}: nothing was changed"
            )
        kdf, aead = record["kdf"], record["aead"]
        if kdf["name"] != "argon2id" or aead["name"] != "AES-256-GCM":
            raise ValueError("unknown algorithms")
        parameters = {name: kdf[name] for name in ARGON2_PARAMETERS}
        for name, bound in ARGON2_BOUNDS.items():
            value = parameters[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= bound:
                raise ValueError(f"{name} out of bounds")
        salt, nonce = _unb64(kdf["salt"]), _unb64(aead["nonce"])
        ciphertext = _unb64(record["ciphertext"])
        if len(nonce) != NONCE_BYTES or len(salt) < 8:
            raise ValueError("bad salt or nonce")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise not_ours from None
    header = {name: value for name, value in record.items() if name != "ciphertext"}
    return header, salt, nonce, ciphertext, parameters


def unseal(data: bytes, passphrase: str, *, source: str = "The file") -> KeyMaterial:
    """The key material of a recovery file. Raises FailsafeError, in one line, for a file
    that is not one, a wrong passphrase or an altered file."""
    header, salt, nonce, ciphertext, parameters = _recovery_header(data, source)
    key = _passphrase_key(passphrase or "", salt, parameters)
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _associated_data(header))
    except InvalidTag:
        raise FailsafeError(WRONG_PASSPHRASE) from None
    try:
        record = json.loads(plaintext)
        material = KeyMaterial(
            keyset_json=record["keyset"],
            audit_key=_unb64(record["audit_key"]),
            chunk_keys={int(k): _unb64(v) for k, v in record["chunk_keys"].items()},
            exported_at=str(record.get("exported_at", "")),
        )
        material.keyset  # noqa: B018 - parsed now, so a bad keyset is refused before any write
    except (ValueError, KeyError, TypeError, AttributeError, FailsafeError):
        raise FailsafeError(NOT_A_RECOVERY_FILE.format(source=source)) from None
    return material


@dataclass
class InstalledKeys:
    """What an import changed: the keyset file created or the key ids added to it, and
    whether the audit and chunk-naming keys were written to the imported-keys file."""

    keyset_file: str
    keyset_created: bool = False
    added_key_ids: list[int] = field(default_factory=list)
    audit_key_installed: bool = False
    # Set when the audit key was left as it is, saying why.
    audit_key_kept: str = ""
    chunk_keys_installed: list[int] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.keyset_created
            or self.added_key_ids
            or self.audit_key_installed
            or self.chunk_keys_installed
        )


def _same_key(first: tink_pb2.Keyset.Key, second: tink_pb2.Keyset.Key) -> bool:
    return hmac.compare_digest(
        first.key_data.SerializeToString(deterministic=True),
        second.key_data.SerializeToString(deterministic=True),
    )


def _merged_keyset(
    current: tink_pb2.Keyset, imported: tink_pb2.Keyset
) -> tuple[tink_pb2.Keyset, list[int]]:
    """The current keyset plus the imported keys it lacks; its primary key stays primary.

    Raises FailsafeError when a key id is in both with different key material: that is
    another keyset, and neither may silently replace the other.
    """
    held = {key.key_id: key for key in current.key}
    merged = tink_pb2.Keyset()
    merged.CopyFrom(current)
    added = []
    for key in imported.key:
        if key.key_id in held:
            if not _same_key(held[key.key_id], key):
                raise FailsafeError(
                    f"Key {key.key_id} of the recovery file differs from the key with that id "
                    "in the keyset here: nothing was changed"
                )
            continue
        merged.key.append(key)
        added.append(key.key_id)
    return merged, added


def _plan_import(
    material: KeyMaterial, *, may_replace_audit_key: bool
) -> tuple[InstalledKeys, str | None, _ImportedKeys | None]:
    """What importing `material` would change: (outcome, new keyset JSON or None, new
    imported keys or None). Raises FailsafeError, changing nothing, for a conflict."""
    path = _keyset_path()
    if path is None:
        raise FailsafeError(
            "FAILSAFE_KEYSET_FILE is not set: the imported keys need a file to live in"
        )
    outcome = InstalledKeys(keyset_file=str(path))
    new_keyset_json = None
    inline = _inline_keyset()
    if inline:
        current = _keyset_proto(_parse(INLINE_SOURCE, inline))
        _, missing = _merged_keyset(current, material.keyset)
        if missing:
            raise FailsafeError(
                "The failsafe keyset is set inline by FAILSAFE_KEYSET and lacks keys "
                f"{', '.join(map(str, missing))} of the recovery file: add them where it is "
                "kept. Nothing was changed"
            )
        outcome.keyset_file = INLINE_SOURCE
    elif path.exists():
        current = _keyset_proto(load_keyset_handle())
        merged, outcome.added_key_ids = _merged_keyset(current, material.keyset)
        if outcome.added_key_ids:
            new_keyset_json = _keyset_json(merged)
    else:
        outcome.keyset_created = True
        new_keyset_json = material.keyset_json

    imported = _imported_keys()
    new_audit = imported.audit
    if not hmac.compare_digest(audit_key(), material.audit_key):
        if _configured_audit_key():
            raise FailsafeError(
                "FAILSAFE_AUDIT_KEY is set to another audit key than the recovery file's: "
                "unset it (the imported key is then used) or set it to the old value. "
                "Nothing was changed"
            )
        if may_replace_audit_key:
            new_audit = material.audit_key
            outcome.audit_key_installed = True
        else:
            outcome.audit_key_kept = (
                "the audit trail here began under the audit key in use, which was kept"
            )
    new_chunk_ids = dict(imported.chunk_ids)
    for key_id, key in sorted(material.chunk_keys.items()):
        if hmac.compare_digest(chunk_id_key(key_id), key):
            continue
        if key_id in imported.chunk_ids:
            raise FailsafeError(
                f"The chunk-naming key of key {key_id} differs from the one imported before: "
                "nothing was changed"
            )
        new_chunk_ids[key_id] = key
        outcome.chunk_keys_installed.append(key_id)
    changed_keys = outcome.audit_key_installed or outcome.chunk_keys_installed
    new_imported = _ImportedKeys(new_audit, new_chunk_ids) if changed_keys else None
    return outcome, new_keyset_json, new_imported


def install_key_material(material: KeyMaterial, *, may_replace_audit_key: bool) -> InstalledKeys:
    """Makes `material` take effect here, adding to what is there and replacing nothing.

    No keyset: the imported one is written to FAILSAFE_KEYSET_FILE. A keyset file: the keys
    it lacks are added, its primary key stays primary (new backups keep using it). An
    inline keyset must already hold every key. The audit key and chunk-naming keys that
    differ from the ones in effect go to the imported-keys file beside the keyset, which
    takes the place of the derivation from SECRET_KEY; the audit key only when
    `may_replace_audit_key` (the caller knows whether the audit trail here needs the key in
    use). Raises FailsafeError, changing nothing, on any conflict.
    """
    outcome, keyset_json, imported = _plan_import(
        material, may_replace_audit_key=may_replace_audit_key
    )
    if not outcome.changed:
        return outcome
    path = _keyset_path()
    assert path is not None  # _plan_import refused otherwise
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _rotation_lock(path):
        # Planned again under the lock: a rotation may have run since.
        outcome, keyset_json, imported = _plan_import(
            material, may_replace_audit_key=may_replace_audit_key
        )
        if imported is not None:
            imported_path = _imported_keys_path()
            assert imported_path is not None
            record = {
                "audit": _b64(imported.audit) if imported.audit else None,
                "chunk_ids": {str(k): _b64(v) for k, v in sorted(imported.chunk_ids.items())},
            }
            _replace_private_file(imported_path, json.dumps(record, indent=1) + "\n")
        if keyset_json is not None:
            if outcome.keyset_created:
                if not _publish_new_keyset(path, keyset_json):
                    raise FailsafeError(f"A keyset appeared at {path} meanwhile: import again")
            else:
                _replace_private_file(path, keyset_json)
    return outcome


def missing_key_ids(needed: Collection[int]) -> list[int]:
    """The key ids among `needed` the configured keyset does not hold (all when none)."""
    try:
        held = set(keyset_info().key_ids)
    except FailsafeError:
        held = set()
    return sorted(set(needed) - held)
