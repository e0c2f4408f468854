"""The archive store: where snapshots are kept, encrypted, behind one small interface.

Callers write a snapshot stream and get back what the Backup row records (`ArchiveInfo`),
and open an archive by that record to get the stream back. How bytes are laid out is the
format module's business (`single_file` today); where they live is a Django storage: the
`"failsafe"` entry of STORAGES when there is one (S3 or anything django-storages offers),
else a private directory at FAILSAFE_BACKUP_DIR.

An archive is written to a local temporary file and only saved under its final name once
complete, so a failed or interrupted backup never leaves a partial archive behind a name.
Opening checks the stored SHA-256 before decrypting anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from .. import keys
from ..capture import Section
from ..exceptions import ArchiveCorrupt, InvalidBackupId
from . import single_file

FORMAT_VERSION = single_file.FORMAT_VERSION
STORAGE_ALIAS = "failsafe"
_READ_CHUNK = 1024 * 1024


@dataclass
class ArchiveInfo:
    """What the Backup row records about its archive."""

    name: str
    size: int
    sha256: str
    format_version: int
    key_id: int
    counts: dict[str, int] = field(default_factory=dict)


class SnapshotReader(Protocol):
    """An opened archive. `sections()` may be iterated once; `counts` is set at its end."""

    meta: dict
    counts: dict[str, int] | None

    def sections(self) -> Iterator[Section]: ...


class _HashingWriter:
    """Hashes and counts the ciphertext on its way to the temporary file."""

    def __init__(self, target):
        self._target = target
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._target.write(data)
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _MovableArchive(File):
    # FileSystemStorage moves a file that has a path instead of copying it; in the same
    # directory that is one atomic rename, so the final name never holds a partial file.
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def temporary_file_path(self) -> str:
        return self._path


def _backup_key(backup_id) -> str:
    """The canonical text of a backup id: the archive's name and its associated data."""
    try:
        return str(uuid.UUID(str(backup_id)))
    except ValueError:
        raise InvalidBackupId(f"Backup id {str(backup_id)[:64]!r} is not a UUID") from None


class ArchiveStore:
    def __init__(self, storage: Storage):
        self.storage = storage

    def _temp_dir(self) -> str | None:
        if isinstance(self.storage, FileSystemStorage):
            # Same directory as the final file, so saving it is a rename, not a copy.
            os.makedirs(self.storage.location, mode=0o700, exist_ok=True)
            return self.storage.location
        return None  # the system temp dir; the storage then uploads a copy

    def _save(self, name: str, temp_path: str) -> str:
        with open(temp_path, "rb") as temp_file:
            if isinstance(self.storage, FileSystemStorage):
                content = _MovableArchive(temp_file, temp_path)
            else:
                content = File(temp_file)
            return self.storage.save(name, content)

    def write(self, *, backup_id: str, meta: dict, sections: Iterable[Section]) -> ArchiveInfo:
        """Encrypts the snapshot into the store. Raises InvalidBackupId, FailsafeError (no
        keyset), and whatever the sections iterator raises, leaving nothing stored."""
        backup_key = _backup_key(backup_id)
        keyset = keys.active_keyset()
        # mkstemp: mode 0600, and the name says nothing about the backup or its content.
        fd, temp_path = tempfile.mkstemp(prefix=".", suffix=".partial", dir=self._temp_dir())
        try:
            with os.fdopen(fd, "wb") as temp_file:
                ciphertext = _HashingWriter(temp_file)
                counts = single_file.write_snapshot(
                    ciphertext,
                    aead=keyset.primitive,
                    associated_data=backup_key.encode("ascii"),
                    meta=meta,
                    sections=sections,
                )
                temp_file.flush()
                os.fsync(temp_file.fileno())
            name = self._save(f"{backup_key}{single_file.SUFFIX}", temp_path)
        finally:
            # Gone already when the storage moved it into place.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
        return ArchiveInfo(
            name=name,
            size=ciphertext.size,
            sha256=ciphertext.hexdigest(),
            format_version=FORMAT_VERSION,
            key_id=keyset.primary_key_id,
            counts=counts,
        )

    def _open_stored(self, name: str, backup_key: str):
        missing = ArchiveCorrupt(f"Archive file of backup {backup_key} is missing")
        if not name or not self.storage.exists(name):
            raise missing
        try:
            return self.storage.open(name, "rb")
        except FileNotFoundError:
            raise missing from None

    def _check_sha256(self, name: str, sha256: str, backup_key: str) -> None:
        digest = hashlib.sha256()
        with self._open_stored(name, backup_key) as stored:
            while chunk := stored.read(_READ_CHUNK):
                digest.update(chunk)
        if not hmac.compare_digest(digest.hexdigest(), (sha256 or "").lower()):
            raise ArchiveCorrupt(
                f"Archive checksum mismatch for backup {backup_key}: "
                "the file was modified or truncated"
            )

    @contextlib.contextmanager
    def open(self, *, name: str, sha256: str, backup_id: str) -> Iterator[SnapshotReader]:
        """The archive as a snapshot stream. Raises ArchiveCorrupt (on entering, or while
        rows are read) for a missing, altered, truncated or undecryptable archive."""
        backup_key = _backup_key(backup_id)
        aead = keys.streaming_aead()
        self._check_sha256(name, sha256, backup_key)
        reader = single_file.SingleFileReader(
            self._open_stored(name, backup_key),
            aead=aead,
            associated_data=backup_key.encode("ascii"),
            backup_id=backup_key,
        )
        try:
            yield reader
        finally:
            reader.close()

    def verify(self, *, name: str, sha256: str, backup_id: str) -> dict[str, int]:
        """Decodes every record; returns the per-model row counts or raises ArchiveCorrupt."""
        with self.open(name=name, sha256=sha256, backup_id=backup_id) as reader:
            for section in reader.sections():
                for _row in section.rows:
                    pass
            return dict(reader.counts)

    def delete(self, name: str) -> None:
        if name:
            self.storage.delete(name)

    def exists(self, name: str) -> bool:
        return bool(name) and self.storage.exists(name)


def get_store() -> ArchiveStore:
    """The store as configured now (settings are read on every call)."""
    if STORAGE_ALIAS in settings.STORAGES:
        return ArchiveStore(storages[STORAGE_ALIAS])
    # Archives are readable by this process's user only; the key is what protects them
    # elsewhere, but nobody else on the host needs to see them.
    storage = FileSystemStorage(
        location=settings.FAILSAFE_BACKUP_DIR,
        file_permissions_mode=0o600,
        directory_permissions_mode=0o700,
    )
    return ArchiveStore(storage)
