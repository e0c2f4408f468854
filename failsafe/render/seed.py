"""The seed's PascalCase JSON: the one place its field names are written.

Every function takes a result object (a services result, an engine result, a model
instance) and returns plain JSON-ready data. The terminal language answers with these, and
each `manage.py failsafe_* --json` prints them.
"""

from __future__ import annotations

from ..snapshot import iso

MARKED_SAFE = "Backup marked as safe environment"
BACKUP_CREATED = "Backup created"
HELP_TITLE = "RaOS Failsafe commands (SuperAdmin only)"


def refusal(message: str, *, error: str | None = None, action: str | None = None) -> dict:
    """A refusal as the original module writes it (`Success`, `Message`, and `Action` where
    it says what to do), with our own one line in `Error` too."""
    refused = {"Success": False, "Message": message, "Error": error or message}
    if action:
        refused["Action"] = action
    return refused


def help(commands: list[tuple[str, str]]) -> dict:
    return {
        "Success": True,
        "Message": HELP_TITLE,
        "Commands": [{"Command": usage, "Description": text} for usage, text in commands],
    }


# --- status and password -------------------------------------------------------------


def lockout(entry) -> dict:
    return {
        "Username": entry.username,
        "Action": entry.action,
        "Failures": entry.failures,
        "LockedUntil": iso(entry.locked_until, timespec="seconds"),
        "MinutesLeft": entry.minutes_left,
    }


def status(result) -> dict:
    return {
        "FailsafePasswordSet": result.failsafe_password_set,
        "TotalBackups": result.total_backups,
        "SafeBackups": result.safe_backups,
        "LastSafeBackupId": result.last_safe_backup_id,
        "LastBackupAtUtc": iso(result.last_backup_at),
        "LastBackup": _last_backup(result.last_backup),
        "SystemStatus": result.system_status,
        "Problems": list(result.problems),
        "Lockouts": [lockout(entry) for entry in result.lockouts],
        "Replicas": [replica_lag(entry) for entry in result.replicas],
        "Health": health(result.health) if result.health is not None else None,
        "LastVerifiedRestore": verified_restore(result.last_verified_restore),
    }


def verified_restore(proof) -> dict | None:
    """The last backup a restore drill proved restorable (services.VerifiedRestore)."""
    if proof is None:
        return None
    return {
        "BackupId": proof.backup_id,
        "DrillId": proof.drill_id,
        "DrilledAtUtc": iso(proof.drilled_at),
        "AgeSeconds": proof.age_seconds,
        "RowsChecked": proof.rows_checked,
    }


def drill(record) -> dict:
    """A restore drill (models.Drill): `Success` says whether the backup restored whole."""
    return {
        "Success": record.passed,
        "Message": record.summary,
        "DrillId": record.pk,
        "BackupId": str(record.backup_id) if record.backup_id else None,
        "BackupLabel": record.backup_label,
        "Outcome": record.outcome,
        "StartedAtUtc": iso(record.started_at),
        "FinishedAtUtc": iso(record.finished_at),
        "StartedBy": record.started_by_username or None,
        "ScratchDatabase": record.scratch_database or None,
        "RowsChecked": record.rows_checked,
        "Models": [
            {
                "Model": label,
                "Expected": check.get("expected"),
                "Found": check.get("found"),
                "Differences": check.get("differences"),
                "Examples": check.get("examples", []),
            }
            for label, check in (record.models_checked or {}).items()
        ],
        "Error": record.error or None,
    }


def health(report) -> dict:
    """What /health/ checks (services.monitoring.health), as the status carries it."""
    return {
        "Ok": report.ok,
        "Checks": [
            {"Name": check.name, "Ok": check.ok, "Message": check.message}
            for check in report.checks
        ],
    }


def _last_backup(record) -> dict | None:
    """The original module's `LastBackup`: the newest backup with its whole state."""
    if record is None:
        return None
    return {
        "Id": str(record.id),
        "Type": record.type,
        "Reason": record.reason,
        "CreatedAtUtc": iso(record.created_at),
        "IsSafe": record.is_safe,
        "State": record.state,
    }


def password(result) -> dict:
    return {
        "Success": True,
        "Message": result.message,
        "Timestamp": iso(result.timestamp),
        "Note": result.note,
    }


def lifted_message(lifted: int) -> str:
    return f"{lifted} lockout(s) lifted"


def unlocked(lifted: int) -> dict:
    return {"Success": True, "Message": lifted_message(lifted), "Lifted": lifted}


# --- key material ----------------------------------------------------------------------


def key_use(use) -> dict:
    return {"KeyId": use.key_id, "Held": use.held, "Primary": use.primary, "Backups": use.backups}


def keys_status(result) -> dict:
    return {
        "Keyset": result.keyset_source,
        "KeysetError": result.keyset_error or None,
        "PrimaryKeyId": result.primary_key_id,
        "Keys": [key_use(use) for use in result.keys],
        "MissingKeyIds": [use.key_id for use in result.missing],
        "BackupsWithoutKeyId": result.backups_without_key_id,
        "AuditKey": result.audit_key_source,
        "ChunkKey": result.chunk_key_source,
        "ImportedChunkKeyIds": list(result.imported_chunk_key_ids),
    }


def keys_rotated(result) -> dict:
    return {
        "Success": True,
        "Message": result.message,
        "PrimaryKeyId": result.primary_key_id,
        "PreviousPrimaryKeyId": result.previous_primary_key_id,
        "KeyIds": list(result.key_ids),
        "Note": result.note,
    }


def keys_exported(result) -> dict:
    return {
        "Success": True,
        "Message": result.message,
        "File": result.path,
        "KeyIds": list(result.key_ids),
        "PrimaryKeyId": result.primary_key_id,
        "Note": result.note,
    }


def keys_imported(result) -> dict:
    installed = result.installed
    return {
        "Success": True,
        "Message": result.message,
        "Keyset": installed.keyset_file,
        "KeysetCreated": installed.keyset_created,
        "AddedKeyIds": list(installed.added_key_ids),
        "AuditKeyInstalled": installed.audit_key_installed,
        "AuditKeyKept": installed.audit_key_kept or None,
        "ChunkKeysInstalled": list(installed.chunk_keys_installed),
        "KeyIds": list(result.key_ids),
        "ExportedAtUtc": result.exported_at or None,
        "StillMissing": [
            {"KeyId": key_id, "Backups": backups}
            for key_id, backups in sorted(result.still_missing.items())
        ],
    }


# --- backups -------------------------------------------------------------------------


def backup(record) -> dict:
    state = record.state or {}
    return {
        "Id": str(record.id),
        "Type": record.type,
        "Reason": record.reason,
        "CreatedAtUtc": iso(record.created_at),
        "CreatedBy": record.created_by_username or None,
        "Status": record.status,
        "IsSafe": record.is_safe,
        "MarkedSafeAtUtc": iso(record.marked_safe_at),
        "State": {
            "Timestamp": state.get("Timestamp"),
            "TotalUsers": state.get("TotalUsers"),
            "ActiveSessions": state.get("ActiveSessions"),
            "TotalLicenses": state.get("TotalLicenses"),
        },
        "ArchiveSize": record.archive_size,
        "Error": record.error or None,
    }


def backup_list(backups, *, last_safe_id: str | None = None) -> dict:
    return {
        "TotalBackups": len(backups),
        "Backups": [
            {**backup(b), "IsLastSafe": last_safe_id is not None and str(b.id) == last_safe_id}
            for b in backups
        ],
    }


def backup_created(record) -> dict:
    return {
        "Success": True,
        "Message": BACKUP_CREATED,
        "BackupId": str(record.id),
        "Timestamp": iso(record.created_at),
        "State": record.state,
    }


def marked_safe(record) -> dict:
    return {
        "Success": True,
        "Message": MARKED_SAFE,
        "BackupId": str(record.id),
        "Timestamp": iso(record.marked_safe_at),
    }


def verification(results) -> dict:
    return {
        "Valid": all(r.ok for r in results),
        "Checked": len(results),
        "Backups": [
            {
                "BackupId": str(r.backup.id),
                "Valid": r.ok,
                "Counts": r.counts,
                "Error": r.error or None,
            }
            for r in results
        ],
    }


def repair(result) -> dict:
    """The verification after a repair, and what the repair did."""
    return {
        **verification(result.results),
        "Repair": {
            "Message": result.message,
            "DamagedChunks": result.damaged_chunks,
            "RewrittenChunks": result.rewritten_chunks,
            "RewrittenFrom": list(result.rewritten_from),
            "StillDamaged": [
                {
                    "BackupId": str(r.backup.id),
                    "LostChunks": result.lost_chunks.get(str(r.backup.id), 0),
                    "Error": r.error,
                }
                for r in result.still_damaged
            ],
        },
    }


def deleted(result) -> dict:
    return {
        "Success": True,
        "Message": result.message,
        "BackupId": result.backup_id,
        "Type": result.backup_type,
        "WasSafe": result.was_safe,
        "Note": result.note,
        "Replicas": [replica_cleanup(entry) for entry in result.replicas],
    }


def garbage(report) -> dict:
    return {
        "Success": True,
        "DryRun": report.dry_run,
        "GraceSeconds": report.grace_seconds,
        "ManifestsRead": report.manifests,
        "ChunksFound": report.chunks,
        "ChunksReferenced": report.referenced,
        "ChunksDeleted": report.deleted,
        "BytesFreed": report.bytes_freed,
        "ChunksKeptRecent": report.kept_recent,
        "TemporaryFilesDeleted": report.temp_files_deleted,
        "ChunksMissing": report.missing,
        "MissingManifests": report.missing_manifests,
        "OrphanManifests": report.orphan_manifests,
        "Replicas": [replica_cleanup(entry) for entry in getattr(report, "replicas", ())],
    }


# --- comparison and investigation ----------------------------------------------------


def _field_change(change):
    return "changed" if change.secret else {"From": change.old, "To": change.new}


def model_difference(difference) -> dict:
    return {
        "Added": {"Count": difference.added.count, "Records": list(difference.added.records)},
        "Removed": {
            "Count": difference.removed.count,
            "Records": list(difference.removed.records),
        },
        "Modified": {
            "Count": difference.modified.count,
            "Records": [
                {
                    "Record": record.record,
                    "Fields": {change.name: _field_change(change) for change in record.fields},
                }
                for record in difference.modified.records
            ],
        },
        "Truncated": difference.truncated,
        # What followed a removal, one line each ("12 licenses lost their owner when their
        # users were deleted"); the records stay listed under Modified too.
        "Consequences": [
            {
                "Field": consequence.field,
                "Target": consequence.target,
                "Count": consequence.count,
                "Records": list(consequence.records),
                "Summary": consequence.summary,
            }
            for consequence in difference.consequences
        ],
    }


def comparison(result) -> dict:
    return {
        "HasSafeBackup": result.has_safe_backup,
        "SafeBackupId": result.safe_backup_id,
        "SafeBackupTimestamp": iso(result.safe_backup_created_at),
        "Message": result.message,
        "Issues": list(result.issues),
        "Changes": list(result.changes),
        "Details": {label: model_difference(d) for label, d in result.details.items()},
        # Which way the changes read: from this side...
        "Baseline": result.baseline_label,
        # ...to this one.
        "Current": result.current_label,
    }


def hint(entry) -> dict:
    return {
        "When": iso(entry.when),
        "Source": entry.source,
        "Action": entry.action,
        "Target": entry.target,
        "Outcome": entry.outcome,
    }


def no_recorded_actor(unattributed) -> dict:
    return {
        "Count": unattributed.count,
        "Records": {label: list(names) for label, names in unattributed.records.items()},
        "NotChecked": unattributed.not_checked,
        "Summary": unattributed.summary,
    }


def journal_entry(entry) -> dict:
    return {
        "When": iso(entry.when),
        "Who": entry.who,
        "DatabaseRole": entry.database_role,
        "User": entry.username or None,
        "Operation": entry.operation,
        "Columns": list(entry.columns),
        "What": entry.what,
        "Target": entry.target,
    }


def root_cause(cause) -> dict:
    rendered = {
        "Since": iso(cause.since),
        "ByActor": {actor: [hint(h) for h in hints] for actor, hints in cause.by_actor.items()},
        "Omitted": dict(cause.omitted),
        "NoRecordedActor": no_recorded_actor(cause.no_recorded_actor),
    }
    # Only where there is a change journal (PostgreSQL): elsewhere nothing is said of one.
    if cause.journal is not None:
        rendered["Journal"] = {
            "Entries": [journal_entry(entry) for entry in cause.journal.entries],
            "Omitted": cause.journal.omitted,
            "Problem": cause.journal.problem or None,
        }
    return rendered


def investigation(report) -> dict:
    return {
        "Status": report.status,
        "LastSafeBackup": report.last_safe_backup,
        "Comparison": comparison(report.comparison),
        "Recommendations": list(report.recommendations),
        "RootCause": root_cause(report.root_cause),
    }


def trigger(result) -> dict:
    return {
        "Success": True,
        "Message": result.message,
        "BackupId": str(result.backup.id),
        "Timestamp": iso(result.backup.created_at),
        "Investigation": investigation(result.investigation),
        "NextSteps": list(result.next_steps),
    }


# --- restore -------------------------------------------------------------------------


def model_plan(plan) -> dict:
    return {
        "Model": plan.label,
        "Insert": plan.insert,
        "Update": plan.update,
        "Delete": plan.delete,
        "SampleInsert": plan.sample_insert,
        "SampleUpdate": plan.sample_update,
        "SampleDelete": plan.sample_delete,
    }


def cascade(hit) -> dict:
    return {"Model": hit.model, "Count": hit.count, "Examples": hit.examples}


def restore_record(record) -> dict:
    return {
        "Model": record.label,
        "Record": record.record,
        "Action": record.action,
        "Columns": list(record.columns),
        "SelectedBy": record.selected_by or None,
        "LogEntries": record.entries if record.selected_by else None,
        # With --at: whether its state comes from the change journal or the backup.
        "Source": record.source or None,
    }


def restore_plan(plan) -> dict:
    return {
        "IsNoop": plan.is_noop,
        "Models": [model_plan(m) for m in plan.models],
        "Cascades": [cascade(hit) for hit in plan.cascades],
        "Selective": plan.selective,
        "Records": [restore_record(r) for r in plan.records],
        "Conflicts": list(plan.conflicts),
        "Accounts": [{"Username": a.username, "Changes": list(a.changes)} for a in plan.accounts],
        "AccountsNotListed": plan.accounts_unlisted,
        "OwnAccount": list(plan.own_account),
    }


def restore(result) -> dict:
    return {
        "Success": True,
        "Message": result.message,
        "BackupId": str(result.backup.id),
        "BackupTimestamp": iso(result.backup.created_at),
        "RestoreTimestamp": iso(result.restored_at),
        "State": result.backup.state,
        "DryRun": result.dry_run,
        "PreRestoreBackupId": str(result.pre_restore_backup.id)
        if result.pre_restore_backup
        else None,
        "Plan": restore_plan(result.plan),
        "Verification": None
        if result.verification is None
        else {
            "Identical": result.verification.identical,
            "Differences": list(result.verification.differences),
        },
        "SessionsFlushed": result.sessions_flushed,
        "TokensRevoked": result.tokens_revoked,
        "ContainedAccounts": result.contained_accounts,
        "PasswordReset": result.plan.password_reset,
        "NextSteps": list(result.next_steps),
    }


# --- audit ---------------------------------------------------------------------------


def audit_event(event) -> dict:
    return {
        "Seq": event.seq,
        "When": iso(event.created_at),
        "Actor": event.actor_username or None,
        "Source": event.source,
        "Action": event.action,
        "Target": event.target,
        "Outcome": event.outcome,
        "Details": event.details,
        "Ip": event.ip_address,
    }


def audit_events(events) -> dict:
    return {"Events": [audit_event(e) for e in events]}


def audit_chain(result) -> dict:
    return {
        "Valid": result.ok,
        "Checked": result.checked,
        "FirstBrokenSeq": result.first_broken_seq,
        "Reason": result.reason or None,
        "AnchoredThrough": result.anchored_seq or None,
        "Unanchored": result.unanchored,
        "DeletedAfter": result.deleted_after,
        "Wiped": result.wiped,
        "UnreadableAnchors": result.unreadable_anchors,
    }


# --- replicas ------------------------------------------------------------------------


def replica_lag(entry) -> dict:
    return {
        "Name": entry.name,
        "Where": entry.where,
        "UpToDate": entry.up_to_date,
        "LastReplicatedBackupId": entry.last_backup_id,
        "LastReplicatedBackupAtUtc": iso(entry.last_backup_at),
        "LastVerifiedAtUtc": iso(entry.last_verified_at),
        "BackupsBehind": entry.behind,
        "LagSeconds": entry.lag_seconds,
        "FailingBackups": [
            {"BackupId": backup_id, "Error": error} for backup_id, error in entry.failing
        ],
    }


def backup_replica(row) -> dict:
    return {
        "Replica": row.replica,
        "BackupId": str(row.backup_id),
        "Status": row.status,
        "VerifiedAtUtc": iso(row.verified_at),
        "ChunksCopied": row.chunks_copied,
        "BytesCopied": row.bytes_copied,
        "Error": row.error or None,
    }


def replication(result) -> dict:
    return {
        "Success": result.ok,
        "Message": result.message,
        "Replicas": list(result.replicas),
        "Copies": [backup_replica(row) for row in result.rows],
        "FailedReplicas": [
            {"Replica": name, "Error": problem} for name, problem in result.problems
        ],
    }


def replica_verification(result) -> dict:
    return {**verification(result.results), "Replica": result.replica, "Where": result.where}


def replica_cleanup(entry) -> dict:
    return {
        "Replica": entry.name,
        "Deleted": entry.deleted,
        "KeptLocked": list(entry.locked),
        "Error": entry.error or None,
    }


# --- recovery ------------------------------------------------------------------------


def recovery(result) -> dict:
    report = result.report
    last_safe = report.last_safe
    return {
        "Success": True,
        "Message": result.message,
        "DryRun": report.dry_run,
        "Source": report.source,
        "CopiedInto": report.copied_into or None,
        "FilesCopied": report.files_copied,
        "BytesCopied": report.bytes_copied,
        "Found": report.found,
        "Added": [backup(record) for record in report.added],
        "AlreadyPresent": [str(record.id) for record in report.present],
        "Conflicts": [
            {"BackupId": conflict.backup_id, "DiffersIn": conflict.fields}
            for conflict in report.conflicts
        ],
        "Damaged": [
            {"Name": damage.name, "BackupId": damage.backup_id or None, "Problem": damage.problem}
            for damage in report.damaged
        ],
        "AuditAnchors": {"Count": report.anchors, "HighestSeq": report.highest_anchor or None},
        "LastSafeBackupId": str(last_safe.id) if last_safe else None,
        "NextSteps": result.next_steps,
    }


# --- retention -----------------------------------------------------------------------


def pin_message(record) -> str:
    if record.pinned:
        return "Backup pinned: retention never forgets it"
    return "Backup unpinned: retention keeps it only while a rule does"


ACKNOWLEDGED = "Emergency backup acknowledged: retention keeps it only while a rule does"


def retention_policy(policy) -> dict:
    return {
        "KeepLast": policy.keep_last,
        "KeepHourly": policy.keep_hourly,
        "KeepDaily": policy.keep_daily,
        "KeepWeekly": policy.keep_weekly,
        "KeepMonthly": policy.keep_monthly,
        "KeepYearly": policy.keep_yearly,
        "KeepSafe": policy.keep_safe,
        "KeepPreRestoreDays": policy.keep_pre_restore_days,
        "TimeZone": policy.time_zone,
        "Description": policy.describe(),
    }


def retention_decision(decision) -> dict:
    record = decision.backup
    return {
        "BackupId": str(record.id),
        "CreatedAtUtc": iso(record.created_at),
        "Type": record.type,
        "Status": record.status,
        "IsSafe": record.is_safe,
        "Pinned": record.pinned,
        "ReviewedAtUtc": iso(record.reviewed_at),
        "Decision": decision.action,
        "Reasons": list(decision.reasons),
    }


def prune(result) -> dict:
    return {
        "Success": True,
        "Message": result.summary,
        "DryRun": result.dry_run,
        "Policy": retention_policy(result.plan.policy),
        "Keep": result.kept,
        "Forget": result.to_forget,
        "Forgotten": result.forgotten,
        "Skipped": result.skipped,
        "Backups": [retention_decision(decision) for decision in result.plan.decisions],
        "Garbage": garbage(result.garbage) if result.garbage is not None else None,
        "GarbageError": result.garbage_error or None,
        "Replicas": [replica_cleanup(entry) for entry in result.replicas],
    }


def pinned(record) -> dict:
    return {
        "Success": True,
        "Message": pin_message(record),
        "BackupId": str(record.id),
        "Pinned": record.pinned,
    }


def acknowledged(record) -> dict:
    return {
        "Success": True,
        "Message": ACKNOWLEDGED,
        "BackupId": str(record.id),
        "ReviewedAtUtc": iso(record.reviewed_at),
        "ReviewedBy": record.reviewed_by_username or None,
    }


# --- notifications ---------------------------------------------------------------------


def notification_delivery(delivery: dict) -> dict:
    return {
        "Channel": delivery.get("channel"),
        "To": delivery.get("to"),
        "Ok": bool(delivery.get("ok")),
        "Error": delivery.get("error") or None,
        "Note": delivery.get("note") or None,
    }


def notification(record) -> dict:
    return {
        "Event": record.event,
        "Subject": record.subject,
        "Outcome": record.outcome,
        "CreatedAtUtc": iso(record.created_at, timespec="seconds"),
        "Deliveries": [notification_delivery(delivery) for delivery in record.deliveries],
    }


def notification_test(record, *, undelivered: list[str]) -> dict:
    """A test message: `undelivered` (notify.undelivered) says what did not reach anyone."""
    return {
        "Success": not undelivered,
        "Message": "Test notification sent to every channel"
        if not undelivered
        else "Test notification not delivered everywhere",
        "Problems": list(undelivered),
        "Notification": notification(record),
    }


def notification_channel(channel) -> dict:
    return {
        "Kind": channel.kind,
        "To": channel.to,
        "Signed": channel.signed if channel.kind == "webhook" else None,
        "Note": channel.note or None,
        "Problem": channel.problem or None,
    }


def notification_channels(channels) -> dict:
    return {
        "Success": True,
        "Message": f"{len(channels)} notification channel{'' if len(channels) == 1 else 's'}",
        "Channels": [notification_channel(channel) for channel in channels],
    }


# --- schedules -------------------------------------------------------------------------


def task_outcome(outcome) -> dict:
    return {
        "Name": outcome.name,
        "Task": outcome.task,
        "Success": outcome.ok,
        "Message": outcome.message,
        "StartedAtUtc": iso(outcome.started_at),
        "Seconds": outcome.seconds,
    }


def run_due(result) -> dict:
    return {
        "Success": result.ok,
        "Message": result.summary,
        "Checked": result.checked,
        "Ran": [task_outcome(outcome) for outcome in result.outcomes],
    }


def schedule(state) -> dict:
    task = state.task
    return {
        "Name": task.name,
        "Task": task.task,
        "Enabled": task.enabled,
        "Schedule": str(task.scheduler),
        "LastRunAtUtc": iso(task.last_run_at),
        "TotalRunCount": task.total_run_count,
        "Due": state.due,
        "NextRunAtUtc": iso(state.next_at),
        "Note": state.why or None,
    }


def schedules(states) -> dict:
    return {"Schedules": [schedule(state) for state in states]}
