import uuid

from django.core.exceptions import PermissionDenied
from django.db import models
from django.utils import timezone

# Failsafe rows name people by id and username, never by foreign key: a restore may delete
# the user who took a backup, and deleting a user must never delete an audit event.


class Backup(models.Model):
    class Type(models.TextChoices):
        EMERGENCY = "EMERGENCY", "Emergency"
        SCHEDULED = "SCHEDULED", "Scheduled"
        MANUAL = "MANUAL", "Manual"
        PRE_RESTORE = "PRE_RESTORE", "Pre-restore"

    class Status(models.TextChoices):
        RUNNING = "RUNNING", "Running"
        COMPLETE = "COMPLETE", "Complete"
        FAILED = "FAILED", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=16, choices=Type.choices)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by_id = models.BigIntegerField(null=True, blank=True)
    created_by_username = models.CharField(max_length=150, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    error = models.TextField(blank=True)

    is_safe = models.BooleanField(default=False, db_index=True)
    marked_safe_at = models.DateTimeField(null=True, blank=True)
    marked_safe_by_username = models.CharField(max_length=150, blank=True)

    # The captured SystemState, in the seed's shape (Timestamp, TotalUsers, ...).
    state = models.JSONField(default=dict, blank=True)

    # Format 2: the manifest. archive_size counts it and every chunk it names, shared with
    # other backups or not; bytes_written is what this backup added to the storage.
    archive_name = models.CharField(max_length=255, blank=True)
    archive_size = models.BigIntegerField(default=0)
    bytes_written = models.BigIntegerField(default=0)
    archive_sha256 = models.CharField(max_length=64, blank=True)
    format_version = models.PositiveSmallIntegerField(default=0)
    key_id = models.BigIntegerField(null=True, blank=True)

    # The audit chain's head when this backup was taken: truncation below it is detectable.
    audit_head_seq = models.BigIntegerField(null=True, blank=True)
    audit_head_hash = models.CharField(max_length=64, blank=True)

    # Retention (failsafe.retention) never forgets a pinned backup.
    pinned = models.BooleanField(default=False)
    # An EMERGENCY backup is kept until a person has looked at it: marked it safe, or
    # acknowledged it (failsafe_prune --acknowledge / the admin).
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by_username = models.CharField(max_length=150, blank=True)
    # Per captured model, what changed since the previous complete backup, as counts
    # ({"accounts.user": {"added": 3, "removed": 0, "modified": 1, "role_changes": 0,
    # "password_changes": 1}, ...}) with "_since" (the previous backup's time) and
    # "_previous" (its id): what the anomaly rule learns each model's usual churn from.
    change_counts = models.JSONField(default=dict, blank=True)
    # The investigation made when this backup was taken by a trigger (a person's or the drift
    # watch's), as plain data (investigate.Investigation.to_data): readable later.
    investigation = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self):
        return f"{self.get_type_display()} backup {self.id} ({self.created_at:%Y-%m-%d %H:%M:%S})"

    @property
    def is_complete(self) -> bool:
        return self.status == self.Status.COMPLETE


class AuditEventQuerySet(models.QuerySet):
    def delete(self):
        raise AuditEvent.Immutable("An audit event cannot be deleted")


class AuditEvent(models.Model):
    """One link of the append-only, HMAC-chained audit trail.

    Rows are only ever inserted, by `failsafe.audit.record`. The ORM refuses to change or
    delete one; someone who bypasses it (raw SQL, `.update()`) breaks the chain, and
    `failsafe.audit.verify_chain` says where.
    """

    class Immutable(PermissionDenied):
        """Something tried to change or delete an audit event."""

    class Source(models.TextChoices):
        CLI = "cli", "Command line"
        API = "api", "API"
        ADMIN = "admin", "Admin"
        TERMINAL = "terminal", "Terminal"
        SYSTEM = "system", "System"

    class Outcome(models.TextChoices):
        SUCCESS = "SUCCESS", "Success"
        DENIED = "DENIED", "Denied"
        FAILED = "FAILED", "Failed"

    seq = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_username = models.CharField(max_length=150, blank=True, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]

    def __str__(self):
        return f"#{self.seq} {self.action} {self.outcome} by {self.actor_username or '-'}"

    def save(self, **kwargs):
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields"):
            raise self.Immutable("An audit event cannot be changed")
        # Always an INSERT: with a pk already set Django would otherwise try an UPDATE first.
        kwargs["force_insert"] = True
        super().save(**kwargs)

    def delete(self, *args, **kwargs):
        raise self.Immutable("An audit event cannot be deleted")


class SecretAttemptCounter(models.Model):
    """Wrong passkeys or failsafe passwords per account and action, for the lockout."""

    username = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    failures = models.PositiveIntegerField(default=0)
    window_started_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["username", "action"], name="one_counter_per_action"),
        ]

    def __str__(self):
        return f"{self.username}/{self.action}: {self.failures}"


class OperationLock(models.Model):
    """The row that serializes backups and restores across processes."""

    name = models.CharField(max_length=32, primary_key=True)
    holder = models.CharField(max_length=255, blank=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name}: {self.holder or 'free'}"


class VerifiedChunk(models.Model):
    """The chunk index: a stored chunk file as last found good (or written) by a backup or
    a verification. archives.DatabaseChunkIndex reads and writes it for the store; see
    failsafe/archive/healing.py for why it is a table and what a backup trusts it for."""

    # The chunk's name: 64 lowercase hex digits, as in the storage.
    chunk_id = models.CharField(max_length=64, primary_key=True)
    # SHA-256 of the stored (encrypted) bytes found good: never anything about the rows.
    sha256 = models.CharField(max_length=64)
    # The file's size, inode and times then, where the storage has them cheaply ("" else).
    stamp = models.CharField(max_length=128, blank=True)
    verified_at = models.DateTimeField()

    def __str__(self):
        return f"chunk {self.chunk_id[:12]} verified {self.verified_at:%Y-%m-%d %H:%M:%S}"


class BackupReplica(models.Model):
    """Where one backup stands on one replica of the store (failsafe.replicas).

    A replica is named as the settings name it (FAILSAFE_REPLICAS, or a STORAGES alias), so
    a row outlives a change of the replica's credentials but not of its name.
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        REPLICATED = "REPLICATED", "Replicated"
        FAILED = "FAILED", "Failed"

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="replicas")
    replica = models.CharField(max_length=200, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Why the last attempt failed, one line, never a credential.
    error = models.TextField(blank=True)
    # When the copy was last read back from the replica and found to match.
    verified_at = models.DateTimeField(null=True, blank=True)
    attempted_at = models.DateTimeField(default=timezone.now)
    chunks_copied = models.PositiveIntegerField(default=0)
    bytes_copied = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["replica"]
        constraints = [
            models.UniqueConstraint(fields=["backup", "replica"], name="one_row_per_replica"),
        ]

    def __str__(self):
        return f"backup {self.backup_id} on {self.replica}: {self.status}"


class Drill(models.Model):
    """One restore drill: a backup restored into a scratch database and checked row by row."""

    class Outcome(models.TextChoices):
        RUNNING = "RUNNING", "Running"
        PASSED = "PASSED", "Passed"
        FAILED = "FAILED", "Failed"

    # The drilled backup; the drill's record outlives the backup (retention may forget it).
    backup = models.ForeignKey(
        Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="drills"
    )
    backup_label = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    # Where it was restored: "sqlite (temporary file)" or the PostgreSQL database's name.
    scratch_database = models.CharField(max_length=255, blank=True)
    rows_checked = models.BigIntegerField(default=0)
    # Per captured model: rows expected (from the archive) and found, and what differed.
    models_checked = models.JSONField(default=dict, blank=True)
    # Why it failed, one line.
    error = models.TextField(blank=True)
    started_by_username = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self):
        return f"drill of {self.backup_label or self.backup_id}: {self.outcome}"

    @property
    def passed(self) -> bool:
        return self.outcome == self.Outcome.PASSED

    @property
    def summary(self) -> str:
        """The drill in one line (what the scheduled task reports)."""
        backup = f"backup {(self.backup_label or str(self.backup_id or '?'))[:8]}"
        if self.outcome == self.Outcome.PASSED:
            return (
                f"Restore drill of {backup} passed: {self.rows_checked} rows of "
                f"{len(self.models_checked or {})} models restored and checked "
                f"({self.scratch_database})"
            )
        if self.outcome == self.Outcome.FAILED:
            return f"Restore drill of {backup} failed: {self.error}"
        return f"Restore drill of {backup} is running"


class Notification(models.Model):
    """One event the failsafe told someone about (or held back as a repeat), and how each
    channel took it. Never a secret in any field."""

    class Outcome(models.TextChoices):
        SENT = "SENT", "Sent"
        PARTIAL = "PARTIAL", "Sent to some channels"
        FAILED = "FAILED", "Failed"
        SUPPRESSED = "SUPPRESSED", "Repeat, not sent"
        NO_CHANNEL = "NO_CHANNEL", "No channel configured"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The kind of event: "emergency", "anomaly", "backup_failed", "backup_overdue",
    # "drill_failed", "replica", "lockout", "restore", "test".
    event = models.CharField(max_length=32, db_index=True)
    # What makes two events "the same" for the once-an-hour rule.
    key = models.CharField(max_length=255, db_index=True)
    subject = models.CharField(max_length=255)
    body = models.TextField(blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    # One entry per channel: {"channel": "email"|"webhook", "to": ..., "ok": bool, "error": ""}.
    deliveries = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.event}: {self.subject} ({self.outcome})"


class WatchRun(models.Model):
    """One pass of the drift watch: what it found against the last safe backup."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    baseline_backup_id = models.UUIDField(null=True, blank=True)
    # The issue texts the comparison found, and those no earlier watch had seen.
    issues = models.JSONField(default=list, blank=True)
    new_issues = models.JSONField(default=list, blank=True)
    # Anomalies (failsafe.anomaly) found in the newest change counts, in plain words.
    anomalies = models.JSONField(default=list, blank=True)
    emergency_backup = models.ForeignKey(
        Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self):
        return f"drift watch {self.created_at:%Y-%m-%d %H:%M:%S}: {len(self.new_issues)} new"
