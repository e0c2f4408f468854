"""How far a long operation has got: rows, bytes, rate and time left, for a terminal.

A service that reads or writes an archive (backup, verify, compare, restore) takes an
optional `progress` and makes it the one `reporting` for its duration; it opens a `stage`
for each pass over an archive, with the rows it expects from counts it already has. The
archive readers and writers advance the current progress once per chunk (or batch of
rows), never per row, so reporting costs nothing measurable, and nothing at all with the
default `NO_PROGRESS`.

Why a context variable rather than an argument threaded down: between a service and the
loops that do the work sit the store's `write` and `verify`, whose callers (the API, the
admin, the terminal page) have no display, and whose interface should not grow one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Protocol


class Progress(Protocol):
    """What reports progress. One stage runs at a time: start, advances, finish."""

    def start(self, label: str, total_rows: int | None) -> None:
        """A stage begins; `total_rows` is what it expects to process, None if unknown."""

    def advance(self, rows: int, byte_count: int = 0) -> None:
        """`rows` more rows were processed, `byte_count` more stored bytes read or written."""

    def finish(self) -> None:
        """The stage ended, done or failed."""


class NoProgress:
    """Reports nothing: what every caller without a terminal gets."""

    def start(self, label: str, total_rows: int | None) -> None:
        pass

    def advance(self, rows: int, byte_count: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass


NO_PROGRESS = NoProgress()

_current: ContextVar[Progress] = ContextVar("failsafe_progress", default=NO_PROGRESS)


def current() -> Progress:
    """The progress of the operation running in this context (NO_PROGRESS if none)."""
    return _current.get()


@contextmanager
def reporting(progress: Progress | None) -> Iterator[Progress]:
    """Makes `progress` the current one for the block; None keeps whatever is current."""
    if progress is None:
        yield current()
        return
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)


@contextmanager
def stage(label: str, total_rows: int | None) -> Iterator[Progress]:
    """One pass of the current operation: started here, finished however the block ends."""
    progress = current()
    progress.start(label, total_rows)
    try:
        yield progress
    finally:
        progress.finish()


class TerminalProgress:
    """One rich progress line per stage on stderr, kept when the stage ends.

    Use as a context manager around the service call, so the display stops before the
    command prints its result. Only the management commands create one, and only on a
    terminal (see FailsafeCommand.progress).
    """

    def __init__(self, console=None):
        """`console`: a rich Console to draw on; by default one on sys.stderr."""
        # Imported here: the services and the web doors never need rich.
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        rows_column, bytes_column, rate_column = _rich_columns()
        self._display = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            rows_column(),
            bytes_column(),
            rate_column(),
            TimeRemainingColumn(elapsed_when_finished=True),
            console=console or Console(file=sys.stderr),
        )
        self._task = None
        self._bytes = 0

    def __enter__(self) -> TerminalProgress:
        self._display.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.finish()
        self._display.stop()

    def start(self, label: str, total_rows: int | None) -> None:
        self.finish()
        self._bytes = 0
        self._task = self._display.add_task(label, total=total_rows, bytes=0)

    def advance(self, rows: int, byte_count: int = 0) -> None:
        if self._task is None:
            return
        self._bytes += byte_count
        self._display.update(self._task, advance=rows, bytes=self._bytes)

    def finish(self) -> None:
        if self._task is None:
            return
        task = next(task for task in self._display.tasks if task.id == self._task)
        if task.total is None or task.completed > task.total:
            # Nothing was counted beforehand, or more came than counted: the line ends
            # full at what was done. A stage that failed half way stays half full.
            self._display.update(self._task, total=task.completed)
        self._display.stop_task(self._task)
        self._task = None


@cache
def _rich_columns():
    """The columns rich has no ready-made version of: rows done, bytes, rows per second."""
    from rich.filesize import decimal
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RowsColumn(ProgressColumn):
        def render(self, task) -> Text:
            total = "?" if task.total is None else f"{int(task.total):,}"
            return Text(f"{int(task.completed):,}/{total} rows", style="progress.download")

    class BytesColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(decimal(int(task.fields.get("bytes", 0))), style="progress.filesize")

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text("- rows/s", style="progress.data.speed")
            return Text(f"{speed:,.0f} rows/s", style="progress.data.speed")

    return RowsColumn, BytesColumn, RateColumn
