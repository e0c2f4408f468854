"""Anomaly detection: how much each model changed between backups, and when that is unusual.

Each scheduled backup records, per captured model, how many records were added, removed and
modified since the backup before it (and, for the user model, how many changed role or
password hash): `count_changes`, streaming the two snapshots through diff.py's merge-join, so
memory stays flat. `detect` holds the newest scheduled backup's counts against the same
counts of the scheduled backups before it, with robust statistics (median and median
absolute deviation), and names what is far outside a model's own history in plain words:
"40 users removed in the last hour; usually 0-2". The fixed rules of compare.py still run;
this catches what they have no threshold for.
"""

from __future__ import annotations

import collections
import datetime
import math
import statistics
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model

from .conf import setting
from .diff import ADDED, MODIFIED, REMOVED, diff_rows, paired_sections
from .models import Backup
from .snapshot import Snapshot, iso, model_label

# The kinds of change counted per model, in the order messages name them.
ROLE_CHANGES = "role_changes"
PASSWORD_CHANGES = "password_changes"
KINDS = (ADDED, REMOVED, MODIFIED, ROLE_CHANGES, PASSWORD_CHANGES)
# Keys of Backup.change_counts that are not a model label.
SINCE = "_since"
PREVIOUS = "_previous"

# Intervals within this fraction of each other count as equal: a scheduler fires a little
# early or late, which is no reason to rescale a history of whole counts.
SAME_INTERVAL = 0.05
# The "usually" range a message gives: the 10th to the 90th percentile of the history
# (nearest rank), so one earlier spike does not widen it; over six intervals, min to max.
USUAL_LOW_PERCENTILE = 10
USUAL_HIGH_PERCENTILE = 90


# --- counting -------------------------------------------------------------------------


def _columns(spec) -> dict[str, int]:
    return {name: i for i, name in enumerate(spec.columns)}


def count_changes(*, baseline: Snapshot, current: Snapshot) -> dict[str, dict[str, int]]:
    """Per model label, the records added, removed and modified from `baseline` to `current`;
    for the user model also those whose role or password hash changed (as compare.py's user
    watch sees them: the `role` and `password` columns differ).

    Streams both snapshots once. A model whose captured columns differ between the two is
    left out (its records cannot be compared column by column); snapshots of different
    models raise SchemaMismatch.
    """
    user_label = model_label(get_user_model())
    counts: dict[str, dict[str, int]] = {}
    for old, new in paired_sections(baseline.sections, current.sections):
        if old.spec != new.spec:
            # An archive yields sections from one stream: a skipped section is still read.
            collections.deque(old.rows, maxlen=0)
            collections.deque(new.rows, maxlen=0)
            continue
        tally = dict.fromkeys((ADDED, REMOVED, MODIFIED), 0)
        role = password = None
        if old.spec.label == user_label:
            index = _columns(old.spec)
            role, password = index.get("role"), index.get("password")
            tally[ROLE_CHANGES] = tally[PASSWORD_CHANGES] = 0
        for row_diff in diff_rows(old.rows, new.rows):
            tally[row_diff.kind] += 1
            if row_diff.kind != MODIFIED:
                continue
            if role is not None and row_diff.baseline[role] != row_diff.current[role]:
                tally[ROLE_CHANGES] += 1
            if password is not None and row_diff.baseline[password] != row_diff.current[password]:
                tally[PASSWORD_CHANGES] += 1
        counts[old.spec.label] = tally
    return counts


def change_counts_record(
    counts: dict[str, dict[str, int]], *, previous: Backup
) -> dict[str, object]:
    """What Backup.change_counts holds: the counts, and since when and which backup."""
    return {**counts, SINCE: iso(previous.created_at), PREVIOUS: str(previous.id)}


# --- the rule -------------------------------------------------------------------------


@dataclass(frozen=True)
class Anomaly:
    """One model's count of one kind of change, far above that model's own history."""

    backup_id: str  # the scheduled backup whose counts these are
    label: str  # the model
    kind: str  # one of KINDS
    count: int
    interval: datetime.timedelta  # what the count covers: since the backup before
    # The history, each count scaled to `interval` when the intervals differed.
    median: float
    mad: float
    usual_low: float
    usual_high: float
    history: int  # how many earlier intervals the history holds

    @property
    def text(self) -> str:
        return f"{_what(self.label, self.kind, self.count)} {_span(self.interval)}; {self.usually}"

    @property
    def usually(self) -> str:
        low, high = _number(self.usual_low), _number(self.usual_high)
        return f"usually {low}" if low == high else f"usually {low}-{high}"


@dataclass(frozen=True)
class _Interval:
    backup_id: str
    seconds: float
    counts: dict


def _interval(backup: Backup) -> _Interval | None:
    """The backup's counts and the seconds they cover; None when it has none usable."""
    counts = backup.change_counts or {}
    try:
        since = datetime.datetime.fromisoformat(counts[SINCE])
    except (KeyError, TypeError, ValueError):
        return None
    seconds = (backup.created_at - since).total_seconds()
    if seconds <= 0:
        return None
    return _Interval(str(backup.id), seconds, counts)


def _scheduled():
    return Backup.objects.filter(type=Backup.Type.SCHEDULED, status=Backup.Status.COMPLETE)


def newest_scheduled_backup() -> Backup | None:
    return _scheduled().order_by("-created_at").first()


def _history(newest: Backup, size: int) -> list[_Interval]:
    earlier = (
        _scheduled()
        .filter(created_at__lt=newest.created_at)
        .order_by("-created_at")
        .only("id", "created_at", "change_counts")
    )
    history = []
    # Backups without counts (the first one, or one whose counting failed) are skipped,
    # not counted as quiet intervals.
    for backup in earlier.iterator(chunk_size=size):
        interval = _interval(backup)
        if interval is not None:
            history.append(interval)
            if len(history) == size:
                break
    return history


def _count(counts: dict, label: str, kind: str) -> int | None:
    entry = counts.get(label)
    value = entry.get(kind) if isinstance(entry, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _percentile(ordered: list[float], percent: int) -> float:
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def detect(backup: Backup | None = None) -> list[Anomaly]:
    """The anomalies in the change counts of `backup` (default: the newest scheduled backup).

    Per model and kind, the count is held against the same count of the previous
    ANOMALY_HISTORY scheduled backups that have counts (at least ANOMALY_MIN_HISTORY of
    them, else nothing is said). Where the intervals differ, each earlier count is first
    scaled to the newest interval's length (a rate per hour, times that length). The count
    is an anomaly when it is above median + ANOMALY_MAD_FACTOR x MAD and above median +
    ANOMALY_FLOOR: the MAD measures the usual spread, the floor keeps a model that hardly
    ever changes (MAD 0) from alarming at its first few changes.
    """
    newest = backup if backup is not None else newest_scheduled_backup()
    current = _interval(newest) if newest is not None else None
    if current is None:
        return []
    minimum = int(setting("ANOMALY_MIN_HISTORY"))
    factor, floor = float(setting("ANOMALY_MAD_FACTOR")), float(setting("ANOMALY_FLOOR"))
    history = _history(newest, int(setting("ANOMALY_HISTORY")))
    if len(history) < minimum:
        return []
    found = []
    for label in sorted(key for key in current.counts if not key.startswith("_")):
        for kind in KINDS:
            count = _count(current.counts, label, kind)
            if count is None:
                continue
            values = []
            for earlier in history:
                value = _count(earlier.counts, label, kind)
                if value is None:
                    continue
                ratio = current.seconds / earlier.seconds
                values.append(value if abs(ratio - 1) <= SAME_INTERVAL else value * ratio)
            if len(values) < minimum:
                continue
            median = statistics.median(values)
            mad = statistics.median(abs(value - median) for value in values)
            if count > median + factor * mad and count > median + floor:
                ordered = sorted(values)
                found.append(
                    Anomaly(
                        backup_id=current.backup_id,
                        label=label,
                        kind=kind,
                        count=count,
                        interval=datetime.timedelta(seconds=current.seconds),
                        median=median,
                        mad=mad,
                        usual_low=_percentile(ordered, USUAL_LOW_PERCENTILE),
                        usual_high=_percentile(ordered, USUAL_HIGH_PERCENTILE),
                        history=len(values),
                    )
                )
    return found


# --- plain words ----------------------------------------------------------------------


def _nouns(label: str) -> tuple[str, str]:
    try:
        meta = apps.get_model(label)._meta
    except (LookupError, ValueError):
        return label, label
    return str(meta.verbose_name), str(meta.verbose_name_plural)


def _what(label: str, kind: str, count: int) -> str:
    singular, plural = _nouns(label)
    noun = singular if count == 1 else plural
    if kind == ROLE_CHANGES:
        return f"{count} {noun} changed role"
    if kind == PASSWORD_CHANGES:
        hashes = "password hash" if count == 1 else "password hashes"
        return f"{count} {noun} had their {hashes} changed"
    return f"{count} {noun} {kind}"


def _span(interval: datetime.timedelta) -> str:
    minutes = interval.total_seconds() / 60
    if abs(minutes - 60) <= 60 * SAME_INTERVAL:
        return "in the last hour"
    if minutes < 60:
        return f"in the last {max(1, round(minutes))} minutes"
    hours = minutes / 60
    if abs(hours - 24) <= 24 * SAME_INTERVAL:
        return "in the last day"
    if hours < 48:
        return f"in the last {round(hours)} hours"
    return f"in the last {round(hours / 24)} days"


def _number(value: float) -> str:
    # Scaled history values are rarely whole; a person reads "1.5", not "1.4999999".
    rounded = round(value, 1)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:g}"
