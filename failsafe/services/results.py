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

    @property
    def system_status(self) -> str:
        if self.problems:
            return STATUS_DEGRADED
        return STATUS_OPERATIONAL if self.failsafe_password_set else STATUS_NO_PASSWORD


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
    def message(self) -> str:
        return "Dry run: nothing was changed" if self.dry_run else "Backup restoration completed"

    @property
    def next_steps(self) -> list[str]:
        if self.dry_run:
            return []
        # The original module's three steps, then what only a real restore adds.
        return [
            "Verify system integrity",
            "Review restored data",
            "Create new safe backup if system is stable",
            "Everyone must log in again: all sessions and API tokens were ended",
        ]


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
