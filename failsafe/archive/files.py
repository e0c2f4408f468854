"""Files in the archive storage: saved whole under their final name, or not at all.

Any Django storage works (a local directory, S3 through django-storages, memory in tests).
A file is written to a local temporary file first and saved once complete; on a
FileSystemStorage that save is a rename in the same file system, so a final name never
holds a partial file, which matters doubly for chunks: a later backup reuses an existing
chunk file (once healing.StoredChunkCheck trusts it) instead of writing it again.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage

from ..durable import fsync_path

CHUNK_DIR = "chunks"
# Where the safe marks of each backup live (failsafe.recovery writes them).
CATALOG_DIR = "catalog"
# A chunk's name is its id: 32 bytes as 64 lowercase hex digits.
CHUNK_NAME = re.compile(r"[0-9a-f]{64}")
# What mkstemp leaves behind when a writer dies before the rename.
TEMP_PREFIX = "."
TEMP_SUFFIX = ".partial"

T = TypeVar("T")


class _MovableFile(File):
    # FileSystemStorage moves a file that has a path instead of copying it; in the same
    # file system that is one atomic rename, so the final name never holds a partial file.
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def temporary_file_path(self) -> str:
        return self._path


def _temp_dir(storage: Storage) -> str | None:
    if isinstance(storage, FileSystemStorage):
        # Inside the storage, so saving is a rename, not a copy.
        os.makedirs(storage.location, mode=0o700, exist_ok=True)
        return storage.location
    return None  # the system temp dir; the storage then uploads a copy


def save_via_temp(storage: Storage, name: str, write: Callable[[object], T]) -> tuple[str, T]:
    """Calls `write(file)` on a new private temporary file, syncs it, saves it as `name`.

    Returns the name the storage chose (the same unless `name` was taken) and what `write`
    returned. Whatever `write` raises propagates and nothing is saved.
    """
    # mkstemp: mode 0600, and the name says nothing about the backup or its content.
    fd, temp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=_temp_dir(storage))
    try:
        with os.fdopen(fd, "wb") as temp_file:
            result = write(temp_file)
        fsync_path(temp_path)
        with open(temp_path, "rb") as temp_file:
            if isinstance(storage, FileSystemStorage):
                content = _MovableFile(temp_file, temp_path)
            else:
                content = File(temp_file)
            saved = storage.save(name, content)
    finally:
        # Gone already when the storage moved it into place.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
    return saved, result


def list_files(storage: Storage, directory: str) -> list[str]:
    """Names of the files directly in `directory`; none when it does not exist yet."""
    try:
        return storage.listdir(directory)[1]
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_directories(storage: Storage, directory: str) -> list[str]:
    try:
        return storage.listdir(directory)[0]
    except (FileNotFoundError, NotADirectoryError):
        return []


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


class ChunkFiles:
    """The chunk files of a storage, `chunks/<first two hex digits>/<id in hex>`.

    Which chunks exist is learned from one listing per two-digit shard, the first time a
    chunk of that shard is asked about, instead of one existence check per chunk: on S3 a
    check is a request. The listing is the truth, not a table that could disagree with
    the storage after either was restored from elsewhere.

    On a local directory, new chunks are written to temporary files and moved into place
    SYNC_BATCH at a time, after all of the batch were synced to disk together: one fsync
    per chunk, one after the other, costs a journal commit each (several milliseconds),
    while concurrent ones share commits. A chunk is only ever under its name once synced.
    Writers call finish() after their last put(), or abandon() when they fail.
    """

    SYNC_BATCH = 64
    SYNC_THREADS = 8

    def __init__(self, storage: Storage):
        self.storage = storage
        self._local = isinstance(storage, FileSystemStorage)
        self._present: dict[str, set[str]] = {}
        self._pending: list[tuple[str, str]] = []  # (temporary path, chunk name)
        self._touched_shards: set[str] = set()

    @staticmethod
    def name(chunk_hex: str) -> str:
        return f"{CHUNK_DIR}/{chunk_hex[:2]}/{chunk_hex}"

    def _shard(self, shard: str) -> set[str]:
        present = self._present.get(shard)
        if present is None:
            present = set(list_files(self.storage, f"{CHUNK_DIR}/{shard}"))
            self._present[shard] = present
        return present

    def holds(self, chunk_hex: str) -> bool:
        """Whether the chunk is stored (or about to be, by this writer)."""
        return chunk_hex in self._shard(chunk_hex[:2])

    def size(self, chunk_hex: str) -> int:
        return self.storage.size(self.name(chunk_hex))

    def stamp(self, chunk_hex: str) -> str:
        """What changes whenever the chunk file is written: on a local directory its size,
        inode and modification and change times (one stat; utime cannot set the change
        time back); elsewhere "", because asking an object store costs a request per chunk.
        Raises FileNotFoundError when a local chunk is not there."""
        if not self._local:
            return ""
        stat = os.stat(self.storage.path(self.name(chunk_hex)))
        return f"{stat.st_size}:{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"

    def get(self, chunk_hex: str) -> bytes:
        """The stored bytes. Raises FileNotFoundError when the chunk is not there."""
        with self.storage.open(self.name(chunk_hex), "rb") as stored:
            return stored.read()

    def put(self, chunk_hex: str, data: bytes) -> None:
        name = self.name(chunk_hex)
        if self._local:
            fd, temp_path = tempfile.mkstemp(
                prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=_temp_dir(self.storage)
            )
            self._pending.append((temp_path, name))
            with os.fdopen(fd, "wb") as temp_file:
                temp_file.write(data)
            if len(self._pending) >= self.SYNC_BATCH:
                self._store_pending()
        else:
            # An object store's upload is atomic: the object appears whole or not at all.
            self._saved(name, self.storage.save(name, ContentFile(data)))
        self._shard(chunk_hex[:2]).add(chunk_hex)

    def replace(self, chunk_hex: str, data: bytes) -> None:
        """Stores `data` under the chunk's name, replacing what is there (a damaged copy).

        On a local directory the new file is synced and renamed over the old one, so the
        name always holds one whole file. Elsewhere the old object is deleted first (a
        storage may refuse to overwrite), which is no loss: it could not be read anyway.
        """
        name = self.name(chunk_hex)
        if self._local:
            path = self.storage.path(name)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd, temp_path = tempfile.mkstemp(
                prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=_temp_dir(self.storage)
            )
            try:
                with os.fdopen(fd, "wb") as temp_file:
                    temp_file.write(data)
                fsync_path(temp_path)
                os.replace(temp_path, path)
            finally:
                _unlink_all([temp_path])
            fsync_path(os.path.dirname(path))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.storage.delete(name)
            saved = self.storage.save(name, ContentFile(data))
            if saved != name:
                self.storage.delete(saved)
                raise OSError(f"Chunk {chunk_hex} could not be rewritten under its own name")
        self._shard(chunk_hex[:2]).add(chunk_hex)

    def _saved(self, name: str, saved: str) -> None:
        if saved != name:
            # The name was taken after we listed the shard (a stale listing or another
            # writer): that file has the same id, so ours is a duplicate.
            self.storage.delete(saved)

    def _sync_all(self, paths: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=self.SYNC_THREADS) as pool:
            list(pool.map(fsync_path, paths))

    def _store_pending(self) -> None:
        pending, self._pending = self._pending, []
        try:
            self._sync_all([temp_path for temp_path, _ in pending])
            for temp_path, name in pending:
                with open(temp_path, "rb") as temp_file:
                    saved = self.storage.save(name, _MovableFile(temp_file, temp_path))
                self._saved(name, saved)
                self._touched_shards.add(os.path.dirname(self.storage.path(name)))
        finally:
            _unlink_all(temp_path for temp_path, _ in pending)

    def finish(self) -> None:
        """Stores what is still pending and syncs the directories that gained chunks, so
        a manifest saved after this names only chunks that are on disk."""
        if self._pending:
            self._store_pending()
        if self._touched_shards:
            self._sync_all(sorted(self._touched_shards))
            self._touched_shards.clear()

    def abandon(self) -> None:
        """Removes what was not stored yet; a failed writer leaves no partial chunks."""
        pending, self._pending = self._pending, []
        _unlink_all(temp_path for temp_path, _ in pending)

    def stored(self) -> Iterator[tuple[str, str]]:
        """(file name, path in the storage) of every file under chunks/, shard by shard."""
        for shard in sorted(list_directories(self.storage, CHUNK_DIR)):
            for file_name in sorted(list_files(self.storage, f"{CHUNK_DIR}/{shard}")):
                yield file_name, f"{CHUNK_DIR}/{shard}/{file_name}"


def _unlink_all(paths: Iterable[str]) -> None:
    for path in paths:
        # Gone already when the storage moved it into place.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
