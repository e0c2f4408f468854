"""Which backups retention keeps and why: restic's `forget` policy, planned here, applied by
services.retention.prune.

The grandfather-father-son rules work as restic's --keep-* options do. Complete backups are
walked newest first; `keep_last` keeps the N newest; each bucket rule (hourly, daily, weekly,
monthly, yearly, in the server's TIME_ZONE) keeps the newest backup of each of the N most
recent buckets that hold a backup, and, while it has buckets to spare when the walk reaches
the oldest backup, that one too (restic's way of keeping the longest history the counts
allow). 0 turns a rule off, -1 keeps every bucket; with every rule off nothing is forgotten.

Only COMPLETE backups fill buckets: a failed backup has no archive to restore from and must
never take the place of one that has. Besides the rules, these are never forgotten:

- a RUNNING backup (it is still being written);
- the newest KEEP_SAFE safe backups (at least the newest one, whatever KEEP_SAFE says: without
  a safe backup there is nothing to compare with or restore to); older safe backups are
  kept when a rule keeps them, like any other;
- a pinned backup;
- an EMERGENCY backup nobody has reviewed yet (not marked safe, not acknowledged);
- a PRE_RESTORE backup younger than KEEP_PRE_RESTORE_DAYS;
- a FAILED backup newer than the newest complete one: it is how the status page tells that
  backups are failing, and it goes once a backup has completed after it.

This module only plans; it reads no storage and writes nothing.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.utils import timezone

from .conf import DEFAULTS, setting
from .exceptions import InvalidRetentionPolicy
from .models import Backup

# A count that keeps every bucket (restic's "unlimited").
EVERY = -1

KEEP = "keep"
FORGET = "forget"

REASON_RUNNING = "running"
REASON_PINNED = "pinned"
REASON_UNREVIEWED = "emergency, not reviewed"
REASON_FAILED_LATEST = "failed, no backup completed since"
REASON_FAILED = "failed, a later backup completed"
REASON_NO_RULE = "no rule keeps it"
REASON_EMPTY_POLICY = "every retention rule is off"


@dataclass(frozen=True)
class _Rule:
    """One --keep-* rule: its setting, and the bucket a backup (local time, index) falls in."""

    name: str
    bucket: Callable[[datetime.datetime, int], str]
    # The reason a backup kept by it shows, from the count and the bucket.
    reason: Callable[[int, str], str]


def _iso_week(local: datetime.datetime) -> str:
    year, week, _ = local.isocalendar()
    return f"{year}-W{week:02d}"


def _count_word(count: int) -> str:
    return "all" if count == EVERY else str(count)


RULES = (
    _Rule("keep_last", lambda local, index: str(index), lambda n, _: f"last {_count_word(n)}"),
    _Rule("keep_hourly", lambda local, _: f"{local:%Y-%m-%d %H}h", lambda _, b: f"hourly {b}"),
    _Rule("keep_daily", lambda local, _: f"{local:%Y-%m-%d}", lambda _, b: f"daily {b}"),
    _Rule(
        "keep_weekly",
        lambda local, _: _iso_week(local),
        lambda _, b: f"weekly {b}",
    ),
    _Rule("keep_monthly", lambda local, _: f"{local:%Y-%m}", lambda _, b: f"monthly {b}"),
    _Rule("keep_yearly", lambda local, _: f"{local:%Y}", lambda _, b: f"yearly {b}"),
)
RULE_NAMES = tuple(rule.name for rule in RULES)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < EVERY:
        raise InvalidRetentionPolicy(
            f"Retention setting {name} must be a whole number, 0 (off) or more, or -1 "
            f"(every one); it is {str(value)[:40]!r}"
        )
    return value


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_safe: int = 3
    keep_pre_restore_days: int = 30
    # The IANA name of the zone buckets are counted in (settings.TIME_ZONE).
    time_zone: str = "UTC"

    @classmethod
    def configured(cls) -> Policy:
        """FAILSAFE["RETENTION"] (keys left out take their defaults), KEEP_SAFE,
        KEEP_PRE_RESTORE_DAYS and TIME_ZONE, as set now; InvalidRetentionPolicy if not valid."""
        configured = setting("RETENTION")
        if not isinstance(configured, dict):
            raise InvalidRetentionPolicy(
                'FAILSAFE["RETENTION"] must be a dict of keep_* counts, e.g. {"keep_daily": 14}'
            )
        unknown = sorted(set(configured) - set(RULE_NAMES))
        if unknown:
            raise InvalidRetentionPolicy(
                f'FAILSAFE["RETENTION"] has unknown keys {", ".join(map(str, unknown))[:200]}; '
                f"it takes {', '.join(RULE_NAMES)}"
            )
        counts = {**DEFAULTS["RETENTION"], **configured}
        return cls(
            **{name: _count(counts[name], name) for name in RULE_NAMES},
            keep_safe=_count(setting("KEEP_SAFE"), "KEEP_SAFE"),
            keep_pre_restore_days=_count(setting("KEEP_PRE_RESTORE_DAYS"), "KEEP_PRE_RESTORE_DAYS"),
            time_zone=timezone.get_default_timezone_name(),
        )

    def count(self, rule: str) -> int:
        return getattr(self, rule)

    @property
    def is_empty(self) -> bool:
        """Every bucket rule off: restic then forgets nothing, and neither do we."""
        return all(self.count(name) == 0 for name in RULE_NAMES)

    @property
    def safe_reason(self) -> str:
        return f"safe (newest {_count_word(self.keep_safe_at_least_one)})"

    @property
    def keep_safe_at_least_one(self) -> int:
        return self.keep_safe if self.keep_safe == EVERY else max(1, self.keep_safe)

    @property
    def pre_restore_reason(self) -> str:
        if self.keep_pre_restore_days == EVERY:
            return "pre-restore"
        return f"pre-restore younger than {self.keep_pre_restore_days} days"

    def describe(self) -> str:
        """One line, as restic says it: "keep 24 last, 48 hourly, ... backups"."""
        rules = [
            f"{_count_word(self.count(name))} {name.removeprefix('keep_')}"
            for name in RULE_NAMES
            if self.count(name)
        ]
        kept = f"keep {', '.join(rules)} backups" if rules else "no rule: keep every backup"
        pre_restore = (
            "every pre-restore backup"
            if self.keep_pre_restore_days == EVERY
            else f"pre-restore backups younger than {self.keep_pre_restore_days} days"
        )
        return (
            f"{kept} (buckets in {self.time_zone}); always kept: the newest "
            f"{_count_word(self.keep_safe_at_least_one)} safe backups, pinned, running and "
            f"unreviewed emergency ones, and {pre_restore}"
        )


@dataclass
class Decision:
    """One backup: kept or forgotten, and the rules that decided it (all that matched)."""

    backup: Backup
    keep: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        return KEEP if self.keep else FORGET


@dataclass
class Plan:
    policy: Policy
    # When it was planned: pre-restore backups are aged from here.
    planned_at: datetime.datetime
    # Every backup, newest first.
    decisions: list[Decision] = field(default_factory=list)

    @property
    def kept(self) -> list[Decision]:
        return [decision for decision in self.decisions if decision.keep]

    @property
    def forgotten(self) -> list[Decision]:
        return [decision for decision in self.decisions if not decision.keep]


def newest_first(backups: Iterable[Backup]) -> list[Backup]:
    # The id breaks ties, so that the same rows always give the same plan.
    return sorted(backups, key=lambda backup: (backup.created_at, str(backup.pk)), reverse=True)


def plan(
    backups: Iterable[Backup], *, policy: Policy | None = None, now: datetime.datetime | None = None
) -> Plan:
    """Decide, for every backup given, whether retention keeps or forgets it, and why."""
    policy = policy or Policy.configured()
    now = now or timezone.now()
    ordered = newest_first(backups)
    reasons: dict = {backup.pk: [] for backup in ordered}
    for backup in ordered:
        reasons[backup.pk] += _protections(backup, policy, now)

    complete = [backup for backup in ordered if backup.status == Backup.Status.COMPLETE]
    safe = [backup for backup in complete if backup.is_safe]
    if policy.keep_safe_at_least_one != EVERY:
        safe = safe[: policy.keep_safe_at_least_one]
    for backup in safe:
        reasons[backup.pk].insert(0, policy.safe_reason)

    if policy.is_empty:
        for backup in complete:
            reasons[backup.pk].append(REASON_EMPTY_POLICY)
    else:
        for backup, matched in _bucket_rules(complete, policy):
            reasons[backup.pk] += matched

    newest_complete = complete[0].created_at if complete else None
    decisions = []
    for backup in ordered:
        kept_by = reasons[backup.pk]
        if kept_by:
            decisions.append(Decision(backup, keep=True, reasons=kept_by))
        elif backup.status == Backup.Status.FAILED:
            if newest_complete is None or backup.created_at > newest_complete:
                decisions.append(Decision(backup, keep=True, reasons=[REASON_FAILED_LATEST]))
            else:
                decisions.append(Decision(backup, keep=False, reasons=[REASON_FAILED]))
        else:
            decisions.append(Decision(backup, keep=False, reasons=[REASON_NO_RULE]))
    return Plan(policy=policy, planned_at=now, decisions=decisions)


def _protections(backup: Backup, policy: Policy, now: datetime.datetime) -> list[str]:
    """The reasons never to forget a backup that no count limits (safe ones are counted)."""
    found = []
    if backup.status == Backup.Status.RUNNING:
        found.append(REASON_RUNNING)
    if backup.pinned:
        found.append(REASON_PINNED)
    if backup.type == Backup.Type.EMERGENCY and backup.reviewed_at is None and not backup.is_safe:
        found.append(REASON_UNREVIEWED)
    if backup.type == Backup.Type.PRE_RESTORE and (
        policy.keep_pre_restore_days == EVERY
        or now - backup.created_at < datetime.timedelta(days=policy.keep_pre_restore_days)
    ):
        found.append(policy.pre_restore_reason)
    return found


def _bucket_rules(complete: list[Backup], policy: Policy):
    """(backup, reasons) for each complete backup (newest first) some rule keeps."""
    zone = zoneinfo.ZoneInfo(policy.time_zone)
    left = {rule.name: policy.count(rule.name) for rule in RULES}
    last_bucket: dict[str, str | None] = {rule.name: None for rule in RULES}
    oldest = len(complete) - 1
    for index, backup in enumerate(complete):
        local = backup.created_at.astimezone(zone)
        matched = []
        for rule in RULES:
            if left[rule.name] == 0:
                continue
            bucket = rule.bucket(local, index)
            new_bucket = bucket != last_bucket[rule.name]
            if not new_bucket and index != oldest:
                continue
            reason = rule.reason(policy.count(rule.name), bucket)
            matched.append(reason if new_bucket else f"{reason} (oldest)")
            last_bucket[rule.name] = bucket
            if left[rule.name] > 0:
                left[rule.name] -= 1
        if matched:
            yield backup, matched
