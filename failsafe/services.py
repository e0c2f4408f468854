"""The failsafe's one entry point: every door (commands, API, admin, terminal) calls these.

Each operation checks the actor, does its work, and writes one audit event whatever the
outcome. The audit event is written outside the operation's own transaction, so a refused
or failed operation is on record even when its writes roll back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from accounts.models import Role
from accounts.permissions import is_superadmin
from licensing import services as licensing
from licensing.exceptions import LicensingError

from . import audit, capture, lockout, oplock, presenters
from . import restore as restore_engine
from .archive import chunked, get_store, shared_chunks
from .archive.garbage import GarbageReport
from .compare import ComparisonResult, Snapshot, live_snapshot
from .compare import compare as compare_snapshots
from .conf import setting
from .exceptions import (
    ArchiveCorrupt,
    BackupNotFound,
    BackupNotUsable,
    FailsafeError,
    InvalidBackupId,
    NotSuperAdmin,
)
from .investigate import Investigation, investigate
from .models import AuditEvent, Backup
from .progress import Progress, reporting, stage

SOURCES = {choice for choice, _ in AuditEvent.Source.choices}
ACTION_TRIGGER = "failsafe.trigger"
ACTION_RESTORE = "failsafe.restore"
ACTION_SET_PASSWORD = "failsafe.setpassword"
ACTION_DELETE = "failsafe.delete"
ACTION_GC = "failsafe.gc"


@dataclass(frozen=True)
class Actor:
    """Who is acting, and through which door."""

    user: object
    source: str = AuditEvent.Source.CLI
    ip: str | None = None

    @property
    def username(self) -> str:
        return getattr(self.user, "username", "") or ""


def resolve_superadmin(username: str | None = None):
    """The acting SuperAdmin for a command: the one named, or the only one there is."""
    User = get_user_model()
    if username:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise NotSuperAdmin(f"No such user: {username}")
        return user
    superadmins = list(User.objects.filter(role=Role.SUPERADMIN, is_active=True)[:2])
    if len(superadmins) != 1:
        raise NotSuperAdmin(
            "No SuperAdmin exists: run manage.py raos_bootstrap --superadmin NAME"
            if not superadmins
            else "Several SuperAdmins exist: name the acting one with --user USERNAME"
        )
    return superadmins[0]


@contextmanager
def _audited(actor: Actor, action: str, target: str = "") -> Iterator[dict]:
    """Yield a dict of details to fill in; record the outcome when the block ends."""
    details: dict = {}
    try:
        yield details
    except (PermissionDenied, LicensingError) as exc:
        # Denials (wrong secret, lockout, wrong role, missing password) and licensing refusals.
        outcome = AuditEvent.Outcome.DENIED
        _record(actor, action, target, outcome, {**details, "reason": str(exc)})
        raise
    except Exception as exc:
        _record(actor, action, target, AuditEvent.Outcome.FAILED, {**details, "error": str(exc)})
        raise
    _record(actor, action, target, AuditEvent.Outcome.SUCCESS, details)


def _record(actor: Actor, action: str, target: str, outcome: str, details: dict) -> None:
    audit.record(
        action=action,
        outcome=outcome,
        source=actor.source,
        actor=actor.user,
        target=target,
        details=details,
        ip=actor.ip,
    )


def _require_superadmin(actor: Actor) -> None:
    if not is_superadmin(actor.user):
        raise NotSuperAdmin("SuperAdmin only")


def _secret_attempt(actor: Actor, action: str):
    """Guard one check of a secret with the lockout (see failsafe.lockout.attempt)."""
    return lockout.attempt(username=actor.username, action=action)


def parse_backup_id(value) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise InvalidBackupId(f"Invalid backup id: {str(value)[:64]!r}") from None


def get_backup(backup_id) -> Backup:
    pk = parse_backup_id(backup_id)
    try:
        return Backup.objects.get(pk=pk)
    except Backup.DoesNotExist:
        raise BackupNotFound(f"Backup not found: {pk}") from None


def _usable_backup(backup_id) -> Backup:
    backup = get_backup(backup_id)
    if not backup.is_complete:
        raise BackupNotUsable(f"Backup {backup.id} is {backup.status.lower()}: it has no archive")
    return backup


def last_safe_backup() -> Backup | None:
    return (
        Backup.objects.filter(is_safe=True, status=Backup.Status.COMPLETE)
        .order_by("-created_at")
        .first()
    )


# --- status and password -------------------------------------------------------------


@dataclass
class Status:
    failsafe_password_set: bool
    total_backups: int
    safe_backups: int
    last_safe_backup_id: str | None
    last_backup_at: str | None
    lockouts: list[dict] = field(default_factory=list)

    @property
    def system_status(self) -> str:
        return "Operational" if self.failsafe_password_set else "Failsafe password not set"

    def to_seed_json(self) -> dict:
        return {
            "FailsafePasswordSet": self.failsafe_password_set,
            "TotalBackups": self.total_backups,
            "SafeBackups": self.safe_backups,
            "LastSafeBackupId": self.last_safe_backup_id,
            "LastBackupAtUtc": self.last_backup_at,
            "SystemStatus": self.system_status,
            "Lockouts": self.lockouts,
        }


def status(*, actor: Actor) -> Status:
    with _audited(actor, "failsafe.status"):
        _require_superadmin(actor)
        complete = Backup.objects.filter(status=Backup.Status.COMPLETE)
        safe = last_safe_backup()
        newest = complete.order_by("-created_at").first()
        return Status(
            failsafe_password_set=licensing.failsafe_password_is_set(),
            total_backups=complete.count(),
            safe_backups=complete.filter(is_safe=True).count(),
            last_safe_backup_id=str(safe.id) if safe else None,
            last_backup_at=presenters.iso(newest.created_at) if newest else None,
            lockouts=lockout.lockout_status(username=actor.username),
        )


@dataclass
class PasswordResult:
    replaced: bool
    timestamp: str

    def to_seed_json(self) -> dict:
        return {
            "Success": True,
            "Message": "Failsafe password changed successfully"
            if self.replaced
            else "Failsafe password set successfully",
            "Timestamp": self.timestamp,
            "Note": "Password encrypted and stored securely",
        }


def set_failsafe_password(
    *, actor: Actor, password: str, current_password: str | None = None
) -> PasswordResult:
    with _audited(actor, ACTION_SET_PASSWORD) as details:
        _require_superadmin(actor)
        changing = licensing.failsafe_password_is_set()
        details["change"] = changing
        # Changing it checks the current password: that is a guess, and guesses are limited.
        guard = _secret_attempt(actor, ACTION_SET_PASSWORD) if changing else nullcontext()
        with guard:
            replaced = licensing.set_failsafe_password(
                password=password, user=actor.user, current_password=current_password
            )
        return PasswordResult(replaced=replaced, timestamp=presenters.iso(timezone.now()))


# --- backups -------------------------------------------------------------------------


def list_backups(*, actor: Actor, backup_type: str | None = None, safe: bool | None = None):
    with _audited(actor, "failsafe.backups"):
        _require_superadmin(actor)
        backups = Backup.objects.order_by("-created_at")
        if backup_type:
            backups = backups.filter(type=backup_type.upper())
        if safe is not None:
            backups = backups.filter(is_safe=safe)
        return backups


def create_backup(
    *,
    actor: Actor,
    backup_type: str = Backup.Type.MANUAL,
    reason: str = "",
    progress: Progress | None = None,
) -> Backup:
    with _audited(actor, "failsafe.backup") as details, reporting(progress):
        _require_superadmin(actor)
        if backup_type not in (Backup.Type.MANUAL, Backup.Type.SCHEDULED):
            raise FailsafeError(f"Backup type must be MANUAL or SCHEDULED, not {backup_type!r}")
        backup = _take_backup(actor=actor, backup_type=backup_type, reason=reason)
        details.update(backup_id=str(backup.id), type=backup.type)
        return backup


def _take_backup(*, actor: Actor, backup_type: str, reason: str) -> Backup:
    """Capture the live state into a new archive; a failure leaves a FAILED row, no archive."""
    holder = f"{backup_type.lower()} backup by {actor.username or 'system'}"
    with oplock.operation_lock(holder=holder, reentrant=True):
        backup = Backup.objects.create(
            type=backup_type,
            reason=reason,
            created_by_id=getattr(actor.user, "pk", None),
            created_by_username=actor.username,
        )
        previous = _latest_chunked_backup()
        try:
            with capture.consistent_read():
                state = capture.system_state()
                head_seq, head_hash = audit.head()
                label = f"{Backup.Type(backup_type).label} backup"
                with stage(label, _rows_counted(state)):
                    info = get_store().write(
                        backup_id=str(backup.id),
                        meta={
                            "backup_id": str(backup.id),
                            "type": backup.type,
                            "created_at": presenters.iso(backup.created_at),
                            "state": state,
                        },
                        sections=capture.live_sections(),
                        # Sizes of the chunks it shares with this backup, without asking
                        # the storage for each one.
                        previous=_archive_args(previous) if previous else None,
                    )
        except Exception as exc:
            backup.status = Backup.Status.FAILED
            backup.error = str(exc)[:2000]
            backup.finished_at = timezone.now()
            backup.save(update_fields=["status", "error", "finished_at"])
            raise
        backup.state = state
        backup.archive_name = info.name
        backup.archive_size = info.size
        backup.bytes_written = info.bytes_written
        backup.archive_sha256 = info.sha256
        backup.format_version = info.format_version
        backup.key_id = info.key_id
        backup.audit_head_seq = head_seq or None
        backup.audit_head_hash = head_hash if head_seq else ""
        backup.status = Backup.Status.COMPLETE
        backup.finished_at = timezone.now()
        backup.save()
        return backup


def _rows_counted(state: dict) -> int | None:
    """The captured rows a SystemState counted: what one pass over its backup reads."""
    counts = (state.get("SystemMetrics") or {}).get("ModelCounts")
    return sum(counts.values()) if counts else None


def _latest_chunked_backup() -> Backup | None:
    return (
        Backup.objects.filter(status=Backup.Status.COMPLETE, format_version=chunked.FORMAT_VERSION)
        .order_by("-created_at")
        .first()
    )


def mark_safe(*, actor: Actor, backup_id) -> Backup:
    with _audited(actor, "failsafe.marksafe", target=str(backup_id)[:64]):
        _require_superadmin(actor)
        backup = _usable_backup(backup_id)
        # A backup that cannot be read back is no baseline: check it before trusting it.
        _verify_archive(backup)
        with transaction.atomic():
            backup = Backup.objects.select_for_update().get(pk=backup.pk)
            if not backup.is_safe:
                backup.is_safe = True
                backup.marked_safe_at = timezone.now()
                backup.marked_safe_by_username = actor.username
                backup.save(update_fields=["is_safe", "marked_safe_at", "marked_safe_by_username"])
        return backup


# --- reading archives ----------------------------------------------------------------


def _archive_args(backup: Backup) -> dict:
    return {
        "name": backup.archive_name,
        "sha256": backup.archive_sha256,
        "backup_id": str(backup.id),
    }


def _verify_archive(backup: Backup, *, checked_chunks: set[bytes] | None = None) -> dict[str, int]:
    with stage(f"Verify backup {str(backup.id)[:8]}", _rows_counted(backup.state)):
        return get_store().verify(**_archive_args(backup), checked_chunks=checked_chunks)


@contextmanager
def backup_snapshot(backup: Backup) -> Iterator[Snapshot]:
    with get_store().open(**_archive_args(backup)) as reader:
        yield Snapshot(str(backup.id), reader.meta.get("state", backup.state), reader.sections())


@contextmanager
def _snapshot_of(backup: Backup | None) -> Iterator[Snapshot]:
    if backup is None:
        with live_snapshot() as snapshot:
            yield snapshot
    else:
        with backup_snapshot(backup) as snapshot:
            yield snapshot


@contextmanager
def _backup_snapshots(baseline: Backup, current: Backup) -> Iterator[tuple[Snapshot, Snapshot]]:
    """Both backups as snapshots that leave out the chunks they share.

    A shared chunk holds the same rows on both sides, which compare to no difference; the
    counts and states come from the manifests, so the result is the same as reading every
    row, for a fraction of the work when the backups differ by little. Only chunked
    (format 2) backups share chunks; otherwise every row is read.
    """
    store = get_store()
    with (
        store.open(**_archive_args(baseline)) as old_reader,
        store.open(**_archive_args(current)) as new_reader,
    ):
        shared = shared_chunks(old_reader, new_reader)
        yield (
            Snapshot(
                str(baseline.id),
                old_reader.meta.get("state", baseline.state),
                old_reader.sections(skip_chunks=shared),
            ),
            Snapshot(
                str(current.id),
                new_reader.meta.get("state", current.state),
                new_reader.sections(skip_chunks=shared),
            ),
        )


def _compare_with_baseline(*, baseline: Backup | None, current: Backup | None) -> ComparisonResult:
    """Compare `current` (None: live) against `baseline`; an unreadable baseline is an issue."""
    if baseline is None:
        return ComparisonResult.no_safe_backup()
    try:
        with stage("Compare", _rows_archived(baseline, current)):
            if current is None:
                with _snapshot_of(baseline) as old, _snapshot_of(None) as new:
                    return compare_snapshots(
                        baseline=old, current=new, baseline_backup_id=str(baseline.id)
                    )
            with _backup_snapshots(baseline, current) as (old, new):
                return compare_snapshots(
                    baseline=old, current=new, baseline_backup_id=str(baseline.id)
                )
    except ArchiveCorrupt as exc:
        if current is not None and str(current.id) in str(exc):
            raise
        return ComparisonResult.unreadable_baseline(str(baseline.id), str(exc))


def _rows_archived(*backups: Backup | None) -> int | None:
    """Rows a compare reads from archives (the live side is not counted): the backups'."""
    counts = [_rows_counted(backup.state) for backup in backups if backup is not None]
    return None if None in counts else sum(counts)


def compare(
    *, actor: Actor, backup_id=None, against=None, progress: Progress | None = None
) -> ComparisonResult:
    """Compare a backup (default: the live database) against another or the last safe one."""
    target = f"{backup_id or 'live'} against {against or 'last safe'}"
    with _audited(actor, "failsafe.compare", target=target[:255]) as details, reporting(progress):
        _require_superadmin(actor)
        current = None if backup_id in (None, "", "live") else _usable_backup(backup_id)
        if against in (None, ""):
            baseline = last_safe_backup()
        elif against == "live":
            baseline = None
            if current is None:
                raise FailsafeError("Comparing the live database against itself shows nothing")
        else:
            baseline = _usable_backup(against)
        if against == "live":
            with (
                stage("Compare", _rows_archived(current)),
                _snapshot_of(None) as old,
                _snapshot_of(current) as new,
            ):
                result = compare_snapshots(baseline=old, current=new, baseline_backup_id=None)
        else:
            result = _compare_with_baseline(baseline=baseline, current=current)
        details.update(issues=len(result.issues), changes=len(result.changes))
        return result


# --- the emergency trigger ------------------------------------------------------------


@dataclass
class TriggerResult:
    backup: Backup
    investigation: Investigation

    def to_seed_json(self) -> dict:
        return {
            "Success": True,
            "Message": "Emergency failsafe backup created",
            "BackupId": str(self.backup.id),
            "Timestamp": presenters.iso(self.backup.created_at),
            "Investigation": self.investigation.to_seed_json(),
            "NextSteps": [
                "Review the comparison results",
                "Investigate identified issues",
                "Restore from backup if needed",
            ],
        }


def trigger(
    *, actor: Actor, passkey: str, reason: str = "", progress: Progress | None = None
) -> TriggerResult:
    """Take an emergency backup and investigate it against the last safe backup.

    It runs exactly when things are broken, so a missing or unreadable baseline becomes an
    issue in the report instead of a failure.
    """
    with _audited(actor, ACTION_TRIGGER) as details, reporting(progress):
        _require_superadmin(actor)
        licensing.require_failsafe_password_set()
        with _secret_attempt(actor, ACTION_TRIGGER):
            licensing.require_valid_passkey(passkey)
        backup = _take_backup(
            actor=actor, backup_type=Backup.Type.EMERGENCY, reason=reason or "Emergency trigger"
        )
        safe_backup = last_safe_backup()
        comparison = _compare_with_baseline(baseline=safe_backup, current=backup)
        report = investigate(comparison=comparison, safe_backup=safe_backup)
        details.update(backup_id=str(backup.id), issues=comparison.issues[:20])
        return TriggerResult(backup=backup, investigation=report)


# --- restore -------------------------------------------------------------------------


@dataclass
class RestoreResult:
    backup: Backup
    plan: restore_engine.RestorePlan
    dry_run: bool
    pre_restore_backup: Backup | None = None
    sessions_flushed: int = 0

    @property
    def verified(self) -> bool:
        # A restore returns only after the engine found the database identical to the
        # archive; anything else raised and rolled back.
        return not self.dry_run

    def to_seed_json(self) -> dict:
        message = "Dry run: nothing was changed" if self.dry_run else "Backup restoration completed"
        return {
            "Success": True,
            "Message": message,
            "BackupId": str(self.backup.id),
            "DryRun": self.dry_run,
            "PreRestoreBackupId": str(self.pre_restore_backup.id)
            if self.pre_restore_backup
            else None,
            "Plan": self.plan.to_seed_json(),
            "Verification": None
            if self.dry_run
            else {"Identical": self.verified, "Differences": []},
            "SessionsFlushed": self.sessions_flushed,
            "NextSteps": []
            if self.dry_run
            else [
                "Verify system functionality",
                "Check user accounts and licenses",
                "Everyone must log in again: all sessions were ended",
                "Create a new safe backup if the system is stable",
            ],
        }


def restore(
    *,
    actor: Actor,
    backup_id,
    password: str | None = None,
    dry_run: bool = False,
    allow_cascade: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    with (
        _audited(actor, ACTION_RESTORE, target=str(backup_id)[:64]) as details,
        reporting(progress),
    ):
        details.update(dry_run=dry_run, allow_cascade=allow_cascade)
        _require_superadmin(actor)
        backup = _usable_backup(backup_id)
        if not dry_run:
            licensing.require_failsafe_password_set()
            with _secret_attempt(actor, ACTION_RESTORE):
                licensing.require_valid_failsafe_password(password)

        # Refuse a damaged or foreign-schema archive before anything is touched.
        _verify_archive(backup)
        restore_engine.check_schema(
            archived_migrations=backup.state.get("SystemMetrics", {}).get("Migrations", {})
        )

        def sections():
            return _archive_sections(backup)

        if dry_run:
            with stage("Plan restore", _rows_counted(backup.state)), sections() as stream:
                plan = restore_engine.plan_restore(sections=stream)
            details.update(changes=_plan_counts(plan))
            return RestoreResult(backup=backup, plan=plan, dry_run=True)

        with oplock.operation_lock(holder=f"restore of {backup.id} by {actor.username}"):
            pre_restore = _take_backup(
                actor=actor,
                backup_type=Backup.Type.PRE_RESTORE,
                reason=f"Automatic backup before restoring {backup.id}",
            )
            details["pre_restore_backup_id"] = str(pre_restore.id)
            # Writes, verification against the archive and the session flush happen in one
            # transaction inside the engine: any failure rolls all of it back.
            plan = restore_engine.apply_restore(
                sections_factory=sections,
                allow_cascade=allow_cascade,
                total_rows=_rows_counted(backup.state),
            )
        details.update(changes=_plan_counts(plan), sessions_flushed=plan.sessions_flushed)
        return RestoreResult(
            backup=backup,
            plan=plan,
            dry_run=False,
            pre_restore_backup=pre_restore,
            sessions_flushed=plan.sessions_flushed,
        )


def _plan_counts(plan) -> dict:
    """What the audit trail keeps of a plan: counts only, no record names."""
    return {
        m.label: {"insert": m.insert, "update": m.update, "delete": m.delete} for m in plan.models
    }


@contextmanager
def _archive_sections(backup: Backup):
    with get_store().open(**_archive_args(backup)) as reader:
        yield reader.sections()


# --- integrity -----------------------------------------------------------------------


@dataclass
class VerifyResult:
    backup: Backup
    ok: bool
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def to_seed_json(self) -> dict:
        return {
            "BackupId": str(self.backup.id),
            "Valid": self.ok,
            "Counts": self.counts,
            "Error": self.error or None,
        }


def verify(
    *,
    actor: Actor,
    backup_id=None,
    all_backups: bool = False,
    progress: Progress | None = None,
) -> list[VerifyResult]:
    target = "all" if all_backups else str(backup_id or "latest")[:64]
    with _audited(actor, "failsafe.verify", target=target) as details, reporting(progress):
        _require_superadmin(actor)
        if all_backups:
            backups = list(Backup.objects.filter(status=Backup.Status.COMPLETE))
        elif backup_id:
            backups = [_usable_backup(backup_id)]
        else:
            newest = Backup.objects.filter(status=Backup.Status.COMPLETE).first()
            if newest is None:
                raise BackupNotFound("No backups to verify yet")
            backups = [newest]
        results = []
        # Backups share most of their chunks: each is read and checked once per run.
        checked_chunks: set[bytes] = set()
        for backup in backups:
            try:
                counts = _verify_archive(backup, checked_chunks=checked_chunks)
                results.append(VerifyResult(backup, True, counts=counts))
            except ArchiveCorrupt as exc:
                results.append(VerifyResult(backup, False, error=str(exc)))
        details.update(
            checked=len(results), corrupt=[str(r.backup.id) for r in results if not r.ok]
        )
        return results


# --- storage: deleting backups and collecting their chunks ---------------------------


@dataclass
class DeleteResult:
    backup_id: str
    backup_type: str
    was_safe: bool
    format_version: int

    def to_seed_json(self) -> dict:
        return {
            "Success": True,
            "Message": "Backup deleted",
            "BackupId": self.backup_id,
            "Type": self.backup_type,
            "WasSafe": self.was_safe,
            "Note": "Chunks it shared with other backups are kept; "
            "run failsafe_gc to free the space of the others"
            if self.format_version == chunked.FORMAT_VERSION
            else None,
        }


def _refuse_deletion(backup: Backup, *, force: bool) -> None:
    if force:
        return
    if backup.status == Backup.Status.RUNNING:
        raise FailsafeError(
            f"Backup {backup.id} is still running: wait for it to finish "
            "(if the process that took it is gone, pass --force)"
        )
    if (
        backup.is_safe
        and backup.is_complete
        and not Backup.objects.filter(is_safe=True, status=Backup.Status.COMPLETE)
        .exclude(pk=backup.pk)
        .exists()
    ):
        raise FailsafeError(
            f"Backup {backup.id} is the only safe backup: without it there is nothing to "
            "compare against or restore to. Mark another backup safe first, or pass --force"
        )


def delete_backup(*, actor: Actor, backup_id, force: bool = False) -> DeleteResult:
    """Deletes a backup's row and its manifest (format 1: its archive file).

    Refuses a RUNNING backup and the only safe one unless `force`; a backup that is really
    being written is refused even then, because its writer holds the operation lock.
    The chunks stay until collect_garbage finds no other backup naming them.
    """
    with _audited(actor, ACTION_DELETE, target=str(backup_id)[:64]) as details:
        _require_superadmin(actor)
        details["force"] = force
        backup = get_backup(backup_id)
        holder = f"deletion of backup {backup.id} by {actor.username}"
        with oplock.operation_lock(holder=holder), transaction.atomic():
            backup = Backup.objects.select_for_update().get(pk=backup.pk)
            _refuse_deletion(backup, force=force)
            result = DeleteResult(
                backup_id=str(backup.id),
                backup_type=backup.type,
                was_safe=backup.is_safe,
                format_version=backup.format_version,
            )
            details.update(type=backup.type, status=backup.status, was_safe=backup.is_safe)
            # The file first: if deleting the row then fails, the row says the archive is
            # missing and the deletion can be retried; the other way round, a manifest
            # nobody lists would keep its chunks forever.
            get_store().delete(backup.archive_name)
            backup.delete()
        return result


def collect_garbage(*, actor: Actor, dry_run: bool = False) -> GarbageReport:
    """Deletes the chunks no backup's manifest names, older than GC_GRACE_SECONDS.

    Runs under the operation lock, so never while a backup is writing chunks: raises
    OperationInProgress then. Raises ArchiveCorrupt, deleting nothing, when a manifest
    cannot be read.
    """
    with _audited(actor, ACTION_GC) as details:
        _require_superadmin(actor)
        details["dry_run"] = dry_run
        with oplock.operation_lock(holder=f"garbage collection by {actor.username or 'system'}"):
            chunked_backups = Backup.objects.exclude(archive_name="").filter(
                format_version=chunked.FORMAT_VERSION
            )
            report = get_store().collect_garbage(
                manifests=[_archive_args(backup) for backup in chunked_backups],
                grace_seconds=int(setting("GC_GRACE_SECONDS")),
                dry_run=dry_run,
            )
        details.update(
            deleted=report.deleted,
            bytes_freed=report.bytes_freed,
            kept_recent=report.kept_recent,
            missing=report.missing,
        )
        return report


def verify_audit_chain(*, actor: Actor):
    with _audited(actor, "failsafe.audit.verify") as details:
        _require_superadmin(actor)
        result = audit.verify_chain()
        details.update(ok=result.ok, checked=result.checked)
        return result


def audit_events(*, actor: Actor):
    with _audited(actor, "failsafe.audit"):
        _require_superadmin(actor)
        return AuditEvent.objects.order_by("-seq")


def unlock(*, actor: Actor, account: str | None = None) -> int:
    with _audited(actor, "failsafe.unlock", target=account or "all") as details:
        _require_superadmin(actor)
        lifted = lockout.unlock(username=account)
        details["lifted"] = lifted
        return lifted
