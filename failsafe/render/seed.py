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
    }


def root_cause(cause) -> dict:
    return {
        "Since": iso(cause.since),
        "ByActor": {actor: [hint(h) for h in hints] for actor, hints in cause.by_actor.items()},
        "Omitted": dict(cause.omitted),
    }


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


def restore_plan(plan) -> dict:
    return {
        "IsNoop": plan.is_noop,
        "Models": [model_plan(m) for m in plan.models],
        "Cascades": [cascade(hit) for hit in plan.cascades],
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
