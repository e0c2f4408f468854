"""What the operations return: plain data, with the wording the seed gives each outcome.

Doors render these (failsafe.render for the seed's JSON and the commands' text, the API's
serializers, the admin's templates); nothing here knows any of those shapes.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field, fields

from .. import keys, recovery
from ..archives import GarbageReport
from ..investigate import Investigation
from ..lockout import Lockout
from ..models import Backup
from ..restore import RestorePlan
from ..retention import Plan as RetentionPlan

STATUS_OPERATIONAL = "Operational"
STATUS_NO_PASSWORD = "Failsafe password not set"
STATUS_DEGRADED = "Degraded"


@dataclass
class Status:
    failsafe_password_set: bool
    total_backups: int
    safe_backups: int
    last_safe_backup_id: str | None
    last_backup_at: datetime.datetime | None
    lockouts: list[Lockout] = field(default_factory=list)
    # What puts backups or the audit trail at risk, one line each; any makes it Degraded.
    problems: list[str] = field(default_factory=list)
    # How far behind each replica of the store is (replicas.ReplicaLag).
    replicas: list = field(default_factory=list)
    # The newest complete backup (the original module's `LastBackup`).
    last_backup: Backup | None = None
    # What /health/ answers (services.monitoring.health): the checks and whether all pass.
    health: HealthReport | None = None
    # The last backup a restore drill proved restorable (services.drills), None before one.
    last_verified_restore: VerifiedRestore | None = None

    @property
    def system_status(self) -> str:
        if self.problems:
            return STATUS_DEGRADED
        return STATUS_OPERATIONAL if self.failsafe_password_set else STATUS_NO_PASSWORD


@dataclass(frozen=True)
class VerifiedRestore:
    """The newest backup a restore drill restored into a scratch database and found whole:
    the last proven restorable backup, and how long ago it was proven."""

    backup_id: str
    drill_id: int
    drilled_at: datetime.datetime
    age_seconds: int
    rows_checked: int


@dataclass(frozen=True)
class CheckResult:
    """One health check's verdict: its name ("last_backup", ...), and why, in one line."""

    name: str
    ok: bool
    message: str


@dataclass
class HealthReport:
    """What /health/ answers: every check, healthy only when all of them pass."""

    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failing(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.ok]


@dataclass(frozen=True)
class ReplicaMetrics:
    """One replica in numbers: seconds between the newest backup and its newest copy
    (0 when it holds the newest, infinite when it holds none while backups exist), and how
    many complete backups it lacks and how many of those failed to copy."""

    name: str
    lag_seconds: float
    behind: int
    failed: int


@dataclass
class MetricsData:
    """What /metrics exposes; a moment is None when there is none yet."""

    # The newest complete backup other than a pre-restore one (what "overdue" measures),
    # and the newest safe one: when each was taken.
    last_backup_at: datetime.datetime | None
    last_safe_backup_at: datetime.datetime | None
    # Complete backups per type (every type present, 0 included), and failed backups.
    backups: dict[str, int]
    backup_failures: int
    # The newest finished restore drill: when it ended and whether it passed; and when the
    # drill of the last proven restorable backup ended (drills.last_verified_restore).
    last_drill_at: datetime.datetime | None
    last_drill_passed: bool
    last_verified_restore_at: datetime.datetime | None
    # Accounts locked out after wrong passkeys or failsafe passwords, right now.
    locked_accounts: int
    replicas: list[ReplicaMetrics] = field(default_factory=list)
    health: HealthReport = field(default_factory=HealthReport)


@dataclass
class PasswordResult:
    replaced: bool
    timestamp: datetime.datetime
    note: str = (
        "Password hashed (argon2) and stored securely. "
        "Use 'help_failsafe -start <passkey>' to trigger emergency backup."
    )

    @property
    def message(self) -> str:
        if self.replaced:
            return "Failsafe password changed successfully"
        return "Failsafe password set successfully"


@dataclass
class TriggerResult:
    backup: Backup
    investigation: Investigation
    message: str = "Emergency failsafe backup created"

    @property
    def next_steps(self) -> list[str]:
        """The original module's four steps, with the ids filled in."""
        safe = self.investigation.last_safe_backup
        return [
            "Review the comparison results",
            "Investigate identified issues",
            f"If safe, mark this backup as safe: failsafe marksafe {self.backup.id}",
            f"If corrupted, restore from last safe backup: failsafe restore {safe}"
            if safe
            else "If corrupted, there is no safe backup to restore yet: "
            "mark a known-good backup as safe first",
        ]


@dataclass(frozen=True)
class Verification:
    """What the check after a restore found: identical, or the differences it named."""

    identical: bool
    differences: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    backup: Backup
    plan: RestorePlan
    dry_run: bool
    pre_restore_backup: Backup | None = None
    sessions_flushed: int = 0
    tokens_revoked: int = 0
    # When the restore committed (None for a dry run).
    restored_at: datetime.datetime | None = None

    @property
    def verification(self) -> Verification | None:
        """None for a dry run. A restore returns only after the engine found the database
        identical to the archive; anything else raised and rolled back."""
        return None if self.dry_run else Verification(identical=True)

    @property
    def selective(self) -> bool:
        return self.plan.selective

    @property
    def contained_accounts(self) -> list[str]:
        """The usernames of the accounts whose password, role, active flag or groups the
        restore changes (changed, for a real one): their sessions and API tokens end."""
        return [account.username for account in self.plan.accounts]

    @property
    def own_account_warning(self) -> str:
        """Said in the plan when the restore changes the acting SuperAdmin's own account."""
        if not self.plan.own_account:
            return ""
        return (
            "This restore changes your own account ("
            + ", ".join(self.plan.own_account)
            + "): your sessions end and you log in with the restored password"
        )

    @property
    def message(self) -> str:
        if self.dry_run:
            return "Dry run: nothing was changed"
        if self.plan.selective:
            return "Selected records restored"
        return "Backup restoration completed"

    @property
    def next_steps(self) -> list[str]:
        if self.dry_run:
            return []
        # The original module's three steps, then what only a real restore adds.
        steps = [
            "Verify system integrity",
            "Review restored data",
            "Create new safe backup if system is stable",
        ]
        if not self.plan.selective:
            steps.append("Everyone must log in again: all sessions and API tokens were ended")
        elif self.plan.accounts:
            steps.append(
                "The accounts listed must log in again: their sessions and API tokens were ended"
            )
        if self.plan.password_reset:
            steps.append("The accounts listed must change their password at their next login")
        return steps


@dataclass
class VerifyResult:
    backup: Backup
    ok: bool
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""


@dataclass
class RepairResult:
    """What a repair found and did; `results` are the backups as verified afterwards."""

    results: list[VerifyResult]
    # Chunks of the failing backups found missing or unreadable...
    damaged_chunks: int = 0
    # ...of those, how many were rewritten, and from which sources ("live data").
    rewritten_chunks: int = 0
    rewritten_from: list[str] = field(default_factory=list)
    # Per backup id: how many of its chunks stay damaged (their rows are no longer live).
    lost_chunks: dict[str, int] = field(default_factory=dict)

    @property
    def still_damaged(self) -> list[VerifyResult]:
        return [result for result in self.results if not result.ok]

    @property
    def message(self) -> str:
        if not self.damaged_chunks and not self.still_damaged:
            return "Every backup verified: nothing to repair"
        rewritten = f"{self.rewritten_chunks} of {self.damaged_chunks} damaged chunks rewritten"
        if self.rewritten_from:
            rewritten += " from " + ", ".join(self.rewritten_from)
        if not self.still_damaged:
            return f"{rewritten}; every backup verifies now"
        return f"{rewritten}; {len(self.still_damaged)} backups stay damaged"


@dataclass
class DeleteResult:
    backup_id: str
    backup_type: str
    was_safe: bool
    # Parts it shared with other backups stay until failsafe_gc finds nobody needs them.
    left_shared_parts: bool
    message: str = "Backup deleted"
    # On each replica: its manifest deleted, or kept by its retention (replicas.ReplicaCleanup).
    replicas: list = field(default_factory=list)

    @property
    def note(self) -> str | None:
        if not self.left_shared_parts:
            return None
        return (
            "Chunks it shared with other backups are kept; "
            "run failsafe_gc to free the space of the others"
        )


# --- key material (services/keys.py) ---------------------------------------------


@dataclass(frozen=True)
class KeyUse:
    """One key id: whether the keyset holds it, and how many backups were written under it."""

    key_id: int
    backups: int
    held: bool
    primary: bool = False


@dataclass
class KeysStatus:
    keyset_source: str | None
    # Why there is no usable keyset ("" when there is one).
    keyset_error: str
    primary_key_id: int | None
    keys: list[KeyUse]
    audit_key_source: str
    chunk_key_source: str
    imported_chunk_key_ids: list[int] = field(default_factory=list)
    # Complete backups whose row names no key id (written before rows recorded it).
    backups_without_key_id: int = 0

    @property
    def missing(self) -> list[KeyUse]:
        return [use for use in self.keys if not use.held]


@dataclass
class RotationResult:
    previous_primary_key_id: int
    primary_key_id: int
    key_ids: tuple[int, ...]
    message: str = "Archive keyset rotated: new backups use the new key, old keys are kept"
    note: str = (
        "Export the key material again (manage.py failsafe_keys export): "
        "a recovery file made before this rotation lacks the new key"
    )


@dataclass
class ExportResult:
    path: str
    key_ids: tuple[int, ...]
    primary_key_id: int
    message: str = "Key material exported"
    note: str = (
        "Keep the file offline, apart from the backups, and the passphrase apart from the "
        "file: together they open every backup"
    )


@dataclass
class ImportResult:
    installed: keys.InstalledKeys
    key_ids: tuple[int, ...]
    exported_at: str
    # Key id -> backups that still need a key the keyset does not hold.
    still_missing: dict[int, int] = field(default_factory=dict)

    @property
    def message(self) -> str:
        if self.installed.changed:
            return "Key material imported"
        return "Key material already in place: nothing was changed"


# --- replicas (services/replication.py) --------------------------------------------


@dataclass
class ReplicationResult:
    """What a catch-up did: per replica, the rows of the backups it tried to copy."""

    rows: list = field(default_factory=list)  # models.BackupReplica, replica by replica
    replicas: list[str] = field(default_factory=list)
    # (replica, why) of each replica that failed as a whole: unreachable, refused, ...
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.problems

    @property
    def replicated(self) -> list:
        return [row for row in self.rows if row.status == "REPLICATED"]

    @property
    def failed(self) -> list:
        return [row for row in self.rows if row.status == "FAILED"]

    @property
    def message(self) -> str:
        if not self.replicas:
            return "No replicas are configured (FAILSAFE_REPLICAS, FAILSAFE['REPLICA_ALIASES'])"
        if not self.rows:
            if self.problems:
                return f"{len(self.problems)} of {len(self.replicas)} replicas failed"
            return "Every replica holds every backup already"
        copied = f"{len(self.replicated)} of {len(self.rows)} backup copies replicated"
        return copied if not self.failed else f"{copied}; {len(self.failed)} failed"


@dataclass
class ReplicaVerifyResult:
    """A verification of one replica's copies."""

    replica: str
    where: str
    results: list[VerifyResult] = field(default_factory=list)


# --- recovery (services/recovery.py) -----------------------------------------------


@dataclass
class RecoveryResult:
    """What a recovery found in a storage, added to the database, and found damaged."""

    report: recovery.RecoveryReport
    # No SuperAdmin exists yet (a new installation): one is needed to restore.
    without_superadmin: bool = False

    @property
    def message(self) -> str:
        report = self.report
        found = f"{report.found} intact backup(s) in {report.source}"
        if report.dry_run:
            return (
                f"Dry run, nothing was changed: {found}; {len(report.added)} would be added, "
                f"{len(report.present)} already present"
            )
        return (
            f"Recovered {found}: {len(report.added)} added, {len(report.present)} already present"
        )

    @property
    def next_steps(self) -> list[str]:
        report = self.report
        steps = []
        if report.damaged:
            steps.append(
                "Damaged items were left out: recover them from another replica "
                "(manage.py failsafe_recover --from URL)"
            )
        last_safe = report.last_safe
        if report.dry_run or last_safe is None:
            return steps
        if self.without_superadmin:
            steps.append(
                "No SuperAdmin exists yet: create a temporary one and set a failsafe password "
                "(manage.py raos_bootstrap --superadmin recovery; manage.py failsafe_setpassword)"
            )
        steps.append(f"Restore the last safe backup: manage.py failsafe_restore {last_safe.id}")
        return steps


@dataclass
class CollectionReport(GarbageReport):
    """The garbage collection on the primary, and on each replica (replicas.ReplicaCleanup:
    deleted, kept for its Object Lock, or not reached)."""

    replicas: list = field(default_factory=list)

    @classmethod
    def of(cls, report: GarbageReport, *, replicas: list) -> CollectionReport:
        return cls(
            **{each.name: getattr(report, each.name) for each in fields(GarbageReport)},
            replicas=replicas,
        )


# --- retention (services/retention.py) ---------------------------------------------


@dataclass
class PruneResult:
    """A retention run: every backup kept or forgotten and why (retention.Plan), what was
    forgotten for real, and the chunks collected afterwards."""

    plan: RetentionPlan
    dry_run: bool
    # Backups whose row and manifest were deleted (0 on a dry run).
    forgotten: int = 0
    # Planned to go but changed while pruning (pinned, marked safe, acknowledged): kept, and
    # planned again on the next run.
    skipped: int = 0
    # Per replica: manifests deleted, or kept by its Object Lock (replicas.ReplicaCleanup).
    replicas: list = field(default_factory=list)
    # The collection of unreferenced chunks after forgetting (None on a dry run)...
    garbage: CollectionReport | None = None
    # ...or why it could not run (the backups stay forgotten; failsafe_gc collects later).
    garbage_error: str = ""

    @property
    def kept(self) -> int:
        return len(self.plan.kept)

    @property
    def to_forget(self) -> int:
        return len(self.plan.forgotten)

    @property
    def summary(self) -> str:
        if self.dry_run:
            return (
                f"Dry run, nothing was changed: {self.kept} backups would be kept, "
                f"{self.to_forget} forgotten"
            )
        line = f"Retention: {self.kept} backups kept, {self.forgotten} forgotten"
        if self.skipped:
            line += f" ({self.skipped} changed while pruning, kept)"
        if self.garbage is not None:
            line += (
                f"; {self.garbage.deleted} unused chunks deleted "
                f"({self.garbage.bytes_freed} bytes freed)"
            )
        elif self.garbage_error:
            line += f"; chunks not collected: {self.garbage_error}"
        return line


# --- notifications (services/notifications.py) -------------------------------------


@dataclass(frozen=True)
class ReplicaAlarm:
    """A replica failing or lagging (or the replica settings unusable), in one line."""

    replica: str
    message: str


@dataclass
class OverdueResult:
    """One overdue check: whether backups are late, which replicas fail or lag, and the
    notifications that said so (each sent, or held back as a repeat within the hour)."""

    # How often scheduled backups run (None: no schedule is on, so nothing can be late).
    interval: datetime.timedelta | None
    # schedules.Overdue when no backup succeeded in time, else None.
    overdue: object | None = None
    replicas_checked: int = 0
    replicas: list[ReplicaAlarm] = field(default_factory=list)
    notifications: list = field(default_factory=list)  # models.Notification

    @property
    def summary(self) -> str:
        if self.overdue is not None:
            parts = [f"Backups are overdue: {self.overdue.message}"]
        elif self.interval is None:
            parts = ["No scheduled backup is on, so backups cannot be overdue"]
        else:
            parts = ["Backups are on time"]
        parts += [alarm.message for alarm in self.replicas]
        if self.replicas_checked and not self.replicas:
            parts.append(f"all {self.replicas_checked} replicas are in sync")
        outcomes = [notification.outcome for notification in self.notifications]
        told = [
            f"{outcomes.count(outcome)} {words}" for outcome, words in _TOLD if outcome in outcomes
        ]
        if told:
            parts.append("notifications: " + ", ".join(told))
        return "; ".join(parts)


# How an overdue check's summary counts its notifications (models.Notification.Outcome).
_TOLD = [
    ("SENT", "sent"),
    ("PARTIAL", "sent to some channels"),
    ("FAILED", "failed"),
    ("SUPPRESSED", "held back as repeats within the hour"),
    ("NO_CHANNEL", "not sent: no channel is configured"),
]


# --- schedules (services/scheduling.py) --------------------------------------------


@dataclass
class CatchUpResult:
    """Replication catch-up: what each replica was sent (`replication`), then a random
    sample of its chunks read back (`samples`, replicas.SampleOutcome, one per replica)."""

    replication: ReplicationResult
    samples: list = field(default_factory=list)

    @property
    def damaged(self) -> list[tuple[str, str, str]]:
        """(replica, backup id, why) of each copy a sample found damaged."""
        return [
            (sample.replica, backup_id, why)
            for sample in self.samples
            for backup_id, why in sample.damaged
        ]

    @property
    def problems(self) -> list[tuple[str, str]]:
        """(replica, why) of each replica that could not be copied to or read back."""
        return self.replication.problems + [
            (sample.replica, sample.problem) for sample in self.samples if sample.problem
        ]

    @property
    def ok(self) -> bool:
        return not self.replication.failed and not self.problems and not self.damaged

    @property
    def summary(self) -> str:
        if not self.replication.replicas:
            return self.replication.message
        checked = sum(sample.chunks for sample in self.samples)
        line = f"{self.replication.message}; {checked} sampled chunks read back intact"
        if self.damaged:
            line += (
                f"; {len(self.damaged)} copies found damaged, replaced at the next catch-up "
                f"(first: replica {self.damaged[0][0]}, {self.damaged[0][2]})"
            )
        if self.problems:
            name, why = self.problems[0]
            line += f"; replica {name} failed: {why}"
        return line


@dataclass(frozen=True)
class TaskOutcome:
    """One schedule failsafe_run_due ran: its result's summary, or the refusal's one line."""

    name: str  # the schedule's name, as the admin lists it
    task: str  # the task it runs ("failsafe.scheduled_backup", ...)
    ok: bool
    message: str
    started_at: datetime.datetime
    seconds: float


@dataclass
class RunDueResult:
    """A run of the due schedules: which ran and how, out of how many were looked at."""

    checked: int
    outcomes: list[TaskOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def failed(self) -> list[TaskOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]

    @property
    def summary(self) -> str:
        if not self.outcomes:
            return f"Nothing was due ({self.checked} schedules checked)"
        count = len(self.outcomes)
        ran = f"{count} due schedule{'' if count == 1 else 's'} ran"
        return f"{ran}; {len(self.failed)} failed" if self.failed else ran


# --- drift watch (services/watching.py) --------------------------------------------


@dataclass
class WatchResult:
    """One pass of the drift watch, as its WatchRun row records it, and what it did."""

    # Without a safe backup there is nothing to compare with: nothing else was done.
    has_safe_backup: bool
    baseline_backup_id: str | None = None
    # The issue texts of the comparison of the live data with the safe backup, and those the
    # previous watch had not seen.
    issues: list[str] = field(default_factory=list)
    new_issues: list[str] = field(default_factory=list)
    # The anomalies (failsafe.anomaly) of the newest scheduled backup's change counts, and
    # those the previous watch had not reported.
    anomalies: list[str] = field(default_factory=list)
    new_anomalies: list[str] = field(default_factory=list)
    # The EMERGENCY backup a new issue made it take, and its investigation (kept with it).
    emergency_backup: Backup | None = None
    investigation: Investigation | None = None
    notifications: list = field(default_factory=list)  # models.Notification

    @property
    def summary(self) -> str:
        if not self.has_safe_backup:
            return (
                "Drift watch: no safe backup to compare the live data with, nothing watched "
                "(mark a known-good backup safe: manage.py failsafe_marksafe BACKUP_ID)"
            )
        against = f"against safe backup {self.baseline_backup_id}"
        if self.new_issues:
            count = len(self.new_issues)
            line = f"Drift watch: {count} new issue{'' if count == 1 else 's'} {against}"
            line += f" ({self.new_issues[0]}"
            line += f" and {count - 1} more)" if count > 1 else ")"
            if self.emergency_backup is not None:
                line += f"; emergency backup {self.emergency_backup.id} taken"
        elif self.issues:
            count = len(self.issues)
            line = f"Drift watch: {count} issue{'' if count == 1 else 's'} {against}, none new"
        else:
            line = f"Drift watch: no issues {against}"
        if self.anomalies:
            count, new = len(self.anomalies), len(self.new_anomalies)
            line += f"; {count} anomal{'y' if count == 1 else 'ies'} ({self.anomalies[0]})"
            line += f", {new} new" if new != count else ""
        return line
