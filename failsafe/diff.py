"""Merge-join of two snapshot streams: the one primitive behind compare and restore.

Both sides come in primary-key order, so one pass with one row of each side in hand finds
every added, removed and modified record, whatever the size of the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .exceptions import SchemaMismatch
from .snapshot import ModelSpec, Section

ADDED = "added"  # in `current` only
REMOVED = "removed"  # in `baseline` only
MODIFIED = "modified"  # in both, with different values


@dataclass
class RowDiff:
    kind: str
    pk: object
    baseline: list | None
    current: list | None

    def changed_columns(self, spec: ModelSpec) -> list[str]:
        if self.kind != MODIFIED:
            return []
        return [
            name
            for name, old, new in zip(spec.columns, self.baseline, self.current, strict=True)
            if old != new
        ]


_END = object()


def diff_rows(baseline: Iterable[list], current: Iterable[list]) -> Iterator[RowDiff]:
    left, right = iter(baseline), iter(current)
    old, new = next(left, _END), next(right, _END)
    while old is not _END and new is not _END:
        # The same record on both sides is by far the most common step, so it goes first.
        old_pk, new_pk = old[0], new[0]
        if old_pk == new_pk:
            # Rows are lists on both sides, equal for nearly every pair: compare them as
            # they are, and as lists only when that says otherwise (a tuple on one side).
            if old != new and list(old) != list(new):
                yield RowDiff(MODIFIED, old_pk, old, new)
            old, new = next(left, _END), next(right, _END)
        elif old_pk < new_pk:
            yield RowDiff(REMOVED, old_pk, old, None)
            old = next(left, _END)
        else:
            yield RowDiff(ADDED, new_pk, None, new)
            new = next(right, _END)
    while old is not _END:
        yield RowDiff(REMOVED, old[0], old, None)
        old = next(left, _END)
    while new is not _END:
        yield RowDiff(ADDED, new[0], None, new)
        new = next(right, _END)


def paired_sections(
    baseline: Iterable[Section], current: Iterable[Section]
) -> Iterator[tuple[Section, Section]]:
    """Pairs the sections of two snapshots, which must capture the same models in one order.

    Sections are consumed in lockstep because an archive yields them one after another from
    a single stream: a section's rows must be read before the next section starts.
    """
    left, right = iter(baseline), iter(current)
    while True:
        old, new = next(left, None), next(right, None)
        if old is None and new is None:
            return
        if old is None or new is None or old.spec.label != new.spec.label:
            old_label = old.spec.label if old else "nothing"
            new_label = new.spec.label if new else "nothing"
            raise SchemaMismatch(
                f"Snapshots capture different models: {old_label} where the other has {new_label}"
            )
        yield old, new
