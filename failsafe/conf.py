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
}


def setting(name: str):
    configured = getattr(settings, "FAILSAFE", {}) or {}
    if name in configured:
        return configured[name]
    return DEFAULTS[name]
