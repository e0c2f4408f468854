"""Making a write survive a power cut: sync a file's bytes, or the directory that names it.

A new file is only durable once its bytes are synced and, after it is renamed or linked
into place, so is its directory. A leaf: the standard library only.
"""

from __future__ import annotations

import os


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Syncs the file at `path` to disk, whichever descriptor wrote it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Syncs `directory`'s entries, so a name created, renamed or linked there stays."""
    fsync_path(directory)
