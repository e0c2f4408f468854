"""Anchors of the audit chain kept outside the database, in the archive storage.

An anchor is one event's sequence number and MAC, written after the event is committed.
Someone with write access to the database can delete the newest events or wipe the table,
and with the audit key could even re-sign what is left; the anchors, out of the database's
reach, still name the events that existed and the MACs they had. Nothing in an anchor is
secret or lets anyone forge: a MAC needs the audit key, which is never stored here.

`anchor_log(storage)` picks how anchors are kept, by what the storage can do:

- a local directory (FileSystemStorage, the default): one append-only text file,
  `audit/anchors.log`, one line `<seq> <mac>` per event, appended with O_APPEND and synced
  (fsync) before the event's caller goes on. Appends of one short line from several
  processes do not interleave on a local file system.
- any other storage, which cannot append (S3 and other object stores through
  django-storages): one small object per anchor, `audit/anchors/<seq>-<mac>`, whose name
  says everything, so reading the anchors is a listing and never opens an object. Objects
  are only ever created, never rewritten, so an object store's write-once settings (S3
  Object Lock, a bucket policy denying deletes to the application's credentials) make the
  anchors append-only even for someone holding those credentials.

Both sit behind `AnchorLog` (append one, read all), so a log that writes to several
storages (replicas) can wrap them without the audit trail knowing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, Storage

from ..durable import fsync_directory

ANCHOR_DIR = "audit"
ANCHOR_FILE = f"{ANCHOR_DIR}/anchors.log"
ANCHOR_OBJECTS = f"{ANCHOR_DIR}/anchors"
# One anchor: the event's seq and its HMAC-SHA256 in hex, as a line or as an object's name.
_LINE = re.compile(r"(\d{1,19}) ([0-9a-f]{64})")
_OBJECT_NAME = re.compile(r"(\d{1,20})-([0-9a-f]{64})")


@dataclass(frozen=True)
class Anchor:
    """An audit event's place in the chain and its MAC, as they were when it was recorded."""

    seq: int
    mac: str


class AnchorLog(Protocol):
    """Where anchors are kept. `read` yields them in the order they were written, roughly
    (concurrent writers may interleave); `unreadable` counts what `read` skipped."""

    unreadable: int

    def append(self, anchor: Anchor) -> None: ...

    def read(self) -> Iterator[Anchor]: ...


def anchor_log(storage: Storage) -> AnchorLog:
    """The anchor log kept in `storage`: an appended file in a local directory, else one
    object per anchor."""
    # By type, not by asking `storage.path()`: some storages without local files answer it
    # (InMemoryStorage names a path it never writes).
    if isinstance(storage, FileSystemStorage):
        return AnchorFile(storage.path(ANCHOR_FILE))
    return AnchorObjects(storage)


class AnchorFile:
    """Anchors appended, one line each, to a local file."""

    def __init__(self, path: str):
        self.path = path
        self.unreadable = 0

    def append(self, anchor: Anchor) -> None:
        """Appends and syncs one line. Raises OSError (disk full, read-only, missing)."""
        directory = os.path.dirname(self.path)
        created = not os.path.exists(self.path)
        if created:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        line = f"{anchor.seq} {anchor.mac}\n".encode("ascii")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A writer died mid-line (power cut): end that line so this one stays whole.
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            # The new file's name, and the audit directory's when that is new as well.
            fsync_directory(directory)
            fsync_directory(os.path.dirname(directory))

    def read(self) -> Iterator[Anchor]:
        """Every anchor in the file; none when it does not exist. Raises OSError."""
        self.unreadable = 0
        try:
            log = open(self.path, "rb")  # noqa: SIM115 - closed below, after the last line
        except FileNotFoundError:
            return
        with log:
            for line in log:
                anchor = _parse(_LINE, line.decode("ascii", "replace").rstrip("\n"))
                if anchor is None:
                    if line.strip():
                        self.unreadable += 1
                    continue
                yield anchor


class AnchorObjects:
    """Anchors as one small object each, for storages that cannot append.

    Cost: one PUT per audit event (an object store's round trip, tens of milliseconds) and
    one listing to verify.
    """

    def __init__(self, storage: Storage):
        self.storage = storage
        self.unreadable = 0

    def append(self, anchor: Anchor) -> None:
        """Saves one object. Raises whatever the storage raises when it cannot."""
        name = f"{ANCHOR_OBJECTS}/{anchor.seq:020d}-{anchor.mac}"
        # The content repeats the name, for someone reading the object rather than the list.
        self.storage.save(name, ContentFile(f"{anchor.seq} {anchor.mac}\n".encode("ascii")))

    def read(self) -> Iterator[Anchor]:
        """Every anchor object, in seq order; none when there are none yet."""
        self.unreadable = 0
        try:
            names = self.storage.listdir(ANCHOR_OBJECTS)[1]
        except FileNotFoundError:
            return
        for name in sorted(names):
            anchor = _parse(_OBJECT_NAME, name)
            if anchor is None:
                self.unreadable += 1
                continue
            yield anchor


def _parse(pattern: re.Pattern, text: str) -> Anchor | None:
    match = pattern.fullmatch(text)
    return Anchor(seq=int(match.group(1)), mac=match.group(2)) if match else None
