"""How results look: the seed's PascalCase JSON pieces and the human text of the commands."""

import datetime

from .models import AuditEvent, Backup


def iso(moment) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def backup_json(backup: Backup) -> dict:
    state = backup.state or {}
    return {
        "Id": str(backup.id),
        "Type": backup.type,
        "Reason": backup.reason,
        "CreatedAtUtc": iso(backup.created_at),
        "CreatedBy": backup.created_by_username or None,
        "Status": backup.status,
        "IsSafe": backup.is_safe,
        "MarkedSafeAtUtc": iso(backup.marked_safe_at),
        "State": {
            "Timestamp": state.get("Timestamp"),
            "TotalUsers": state.get("TotalUsers"),
            "ActiveSessions": state.get("ActiveSessions"),
            "TotalLicenses": state.get("TotalLicenses"),
        },
        "ArchiveSize": backup.archive_size,
        "Error": backup.error or None,
    }


def backup_list(backups) -> dict:
    return {"TotalBackups": len(backups), "Backups": [backup_json(b) for b in backups]}


def backup_line(backup: Backup) -> str:
    state = backup.state or {}
    safe = "SAFE" if backup.is_safe else "    "
    return (
        f"{backup.id}  {backup.type:<11} {safe} {backup.status:<8} "
        f"{backup.created_at:%Y-%m-%d %H:%M:%S}  users={state.get('TotalUsers', '-')} "
        f"licenses={state.get('TotalLicenses', '-')} sessions={state.get('ActiveSessions', '-')}"
        + (f"  {backup.reason}" if backup.reason else "")
    )


def _bullets(title: str, items) -> list[str]:
    if not items:
        return []
    return [title] + [f"  - {item}" for item in items]


def comparison_text(comparison: dict) -> str:
    lines = [comparison["Message"]]
    if comparison.get("SafeBackupId"):
        lines.append(f"Baseline: {comparison['SafeBackupId']}")
    lines += _bullets("Issues:", comparison.get("Issues"))
    lines += _bullets("Changes:", comparison.get("Changes"))
    return "\n".join(lines)


def trigger_text(payload: dict) -> str:
    investigation = payload["Investigation"]
    lines = [
        f"{payload['Message']}: {payload['BackupId']} at {payload['Timestamp']}",
        comparison_text(investigation["Comparison"]),
    ]
    lines += _bullets("Recommendations:", investigation.get("Recommendations"))
    return "\n".join(lines)


def restore_text(payload: dict) -> str:
    plan = payload["Plan"]
    lines = [payload["Message"] + f" (backup {payload['BackupId']})"]
    for model in plan.get("Models", []):
        lines.append(
            f"  {model['Model']}: {model['Insert']} to insert, {model['Update']} to update, "
            f"{model['Delete']} to delete"
        )
    lines += _bullets(
        "Would also delete outside the backup:",
        [f"{c['Count']} {c['Model']}" for c in plan.get("Cascades", [])],
    )
    if payload.get("PreRestoreBackupId"):
        lines.append(f"Pre-restore backup: {payload['PreRestoreBackupId']}")
    verification = payload.get("Verification")
    if verification:
        lines.append(
            "Verified: the database is identical to the backup"
            if verification["Identical"]
            else "NOT identical: " + "; ".join(verification["Differences"])
        )
    lines += _bullets("Next steps:", payload.get("NextSteps"))
    return "\n".join(lines)


def audit_event(event: AuditEvent) -> dict:
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


def audit_line(event: AuditEvent) -> str:
    return (
        f"#{event.seq:<6} {event.created_at:%Y-%m-%d %H:%M:%S} {event.outcome:<7} "
        f"{event.action:<24} {event.actor_username or '-':<16} {event.source:<8} {event.target}"
    )
