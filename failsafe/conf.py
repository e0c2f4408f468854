"""Failsafe tunables: `settings.FAILSAFE` over these defaults, read when needed."""

from django.conf import settings

DEFAULTS = {
    # Models whose rows a snapshot holds and a restore brings back, in dependency order
    # (a model before the models that point at it).
    "CAPTURE": ["auth.Group", "accounts.User", "licensing.License"],
    # Wrong passkeys / failsafe passwords allowed in WINDOW seconds before a COOLOFF lockout.
    "LOCKOUT_THRESHOLD": 5,
    "LOCKOUT_WINDOW": 15 * 60,
    "LOCKOUT_COOLOFF": 15 * 60,
    # A backup/restore lock older than this, or whose process is gone, is taken over.
    "OPERATION_LOCK_STALE_AFTER": 60 * 60,
    # Compare: this many licenses revoked or suspended at once is alarming...
    "BULK_LICENSE_STATUS_THRESHOLD": 3,
    # ...and so is this many password hashes changed at once.
    "BULK_PASSWORD_CHANGE_THRESHOLD": 5,
    # How many records each list of the record-level detail names at most.
    "DETAIL_LIMIT": 100,
    # Rows fetched from the database per round trip while streaming.
    "FETCH_SIZE": 2000,
    # The garbage collector keeps unreferenced chunks younger than this, in case a backup
    # whose lock was taken over as stale is still writing them.
    "GC_GRACE_SECONDS": 60 * 60,
    # A backup reuses a stored chunk unread only if it was verified (read and found good,
    # or written) less than this long ago and its file has not changed since; otherwise it
    # reads the chunk again and rewrites it if it is damaged. 0: read every reused chunk.
    "CHUNK_REVERIFY_SECONDS": 24 * 60 * 60,
    # Replicas of the store that are Django STORAGES aliases (besides settings.FAILSAFE_REPLICAS,
    # storage URLs); each is named by its alias.
    "REPLICA_ALIASES": [],
    # Object Lock on S3 replicas: None, "GOVERNANCE" or "COMPLIANCE"; every object written
    # to such a replica is retained (cannot be deleted or overwritten) for REPLICA_LOCK_DAYS.
    "REPLICA_LOCK_MODE": None,
    "REPLICA_LOCK_DAYS": 30,
    # --- Operations (issue 11) ---
    # Retention, grandfather-father-son as restic's `forget`: the newest keep_last backups, and
    # the newest backup of each of the last keep_hourly hours, keep_daily days, ... Safe
    # backups (the newest KEEP_SAFE and any pinned), unreviewed EMERGENCY backups and
    # PRE_RESTORE backups younger than KEEP_PRE_RESTORE_DAYS are never forgotten.
    "RETENTION": {
        "keep_last": 24,
        "keep_hourly": 48,
        "keep_daily": 14,
        "keep_weekly": 8,
        "keep_monthly": 12,
        "keep_yearly": 3,
    },
    "KEEP_SAFE": 3,
    "KEEP_PRE_RESTORE_DAYS": 30,
    # Anomaly detection over each model's change counts: the last ANOMALY_HISTORY intervals
    # (at least ANOMALY_MIN_HISTORY of them) give a median and a MAD; a count above
    # median + ANOMALY_MAD_FACTOR x MAD, and above median + ANOMALY_FLOOR, is an anomaly.
    "ANOMALY_HISTORY": 48,
    "ANOMALY_MIN_HISTORY": 6,
    "ANOMALY_MAD_FACTOR": 5,
    "ANOMALY_FLOOR": 10,
    # Notifications: extra e-mail recipients (SuperAdmins with an address always get them)
    # and JSON webhooks, each a URL or {"url": ..., "secret_env": "NAME"} (the HMAC key is read
    # from that environment variable, never from settings files). The same event is sent at
    # most once per NOTIFY_REPEAT_SECONDS.
    "NOTIFY_EMAILS": [],
    "NOTIFY_WEBHOOKS": [],
    "NOTIFY_REPEAT_SECONDS": 60 * 60,
    "NOTIFY_TIMEOUT_SECONDS": 10,
    # A backup is overdue when none succeeded in OVERDUE_FACTOR x the scheduled backup's
    # interval; a drill older than DRILL_MAX_AGE_SECONDS makes /health/ fail.
    "OVERDUE_FACTOR": 2,
    "DRILL_MAX_AGE_SECONDS": 2 * 24 * 60 * 60,
}


def setting(name: str):
    configured = getattr(settings, "FAILSAFE", {}) or {}
    if name in configured:
        return configured[name]
    return DEFAULTS[name]
