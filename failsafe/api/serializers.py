"""The API's JSON, in snake_case: request bodies and query strings are validated here, and
results are rendered here, by serializers that read the result objects' attributes. The
same serializers describe the responses in the OpenAPI schema.
"""

from rest_framework import serializers

from ..models import AuditEvent, Backup, Drill
from ..snapshot import iso

# Secrets are hashed with argon2, which takes any length; the cap only keeps a hostile body
# from costing a long hash.
SECRET_MAX_LENGTH = 1024
LOGIN_PASSWORD_MAX_LENGTH = 4096
REASON_MAX_LENGTH = 1000


def secret_field(*, max_length: int = SECRET_MAX_LENGTH, **kwargs) -> serializers.CharField:
    # Secrets are taken as typed: trimming would turn " pass " into another password.
    return serializers.CharField(
        max_length=max_length,
        trim_whitespace=False,
        write_only=True,
        style={"input_type": "password"},
        **kwargs,
    )


class BlankAsNullField(serializers.CharField):
    """A text column where blank means "none": rendered as null."""

    def __init__(self, **kwargs):
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def to_representation(self, value):
        return str(value) if value else None


class UtcDateTimeField(serializers.DateTimeField):
    """A moment in UTC with a Z, as every other door writes it, whatever TIME_ZONE says."""

    def __init__(self, *, timespec: str = "auto", **kwargs):
        self.timespec = timespec
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value):
        return iso(value, timespec=self.timespec)


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What was refused, and what to do about it.")


# --- authentication ------------------------------------------------------------------


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = secret_field(max_length=LOGIN_PASSWORD_MAX_LENGTH)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="Send it as `Authorization: Token <token>`. It is shown only once."
    )
    expiry = serializers.DateTimeField(allow_null=True, help_text="When the token stops working.")


# --- status --------------------------------------------------------------------------


class LockoutSerializer(serializers.Serializer):
    username = serializers.CharField()
    action = serializers.CharField()
    failures = serializers.IntegerField()
    locked_until = UtcDateTimeField(timespec="seconds")
    minutes_left = serializers.IntegerField()


class ReplicaLagSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The replica's name, as failsafe_replicate takes it.")
    where = serializers.CharField(help_text="Its storage URL (never with a credential).")
    up_to_date = serializers.BooleanField()
    last_replicated_backup_id = serializers.CharField(source="last_backup_id", allow_null=True)
    last_replicated_backup_at = UtcDateTimeField(source="last_backup_at", allow_null=True)
    last_verified_at = UtcDateTimeField(allow_null=True)
    backups_behind = serializers.IntegerField(
        source="behind", help_text="Complete backups it does not hold (pending or failed)."
    )
    lag_seconds = serializers.FloatField(
        allow_null=True,
        help_text="From its newest copy to the newest backup; null when it holds none.",
    )
    failing_backups = serializers.SerializerMethodField()

    def get_failing_backups(self, entry) -> list[dict]:
        return [{"backup_id": backup_id, "error": error} for backup_id, error in entry.failing]


class HealthCheckSerializer(serializers.Serializer):
    name = serializers.CharField(
        help_text="last_backup, last_drill, keyset, audit_chain or replicas."
    )
    ok = serializers.BooleanField()
    message = serializers.CharField(help_text="Why, in one line.")


class HealthSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="Whether every check passes (/health/ is 200).")
    checks = HealthCheckSerializer(many=True)


class VerifiedRestoreSerializer(serializers.Serializer):
    backup_id = serializers.UUIDField(
        help_text="The last backup a restore drill proved restorable."
    )
    drill_id = serializers.IntegerField()
    drilled_at = UtcDateTimeField(help_text="When that drill finished.")
    age_seconds = serializers.IntegerField(help_text="How long ago, in seconds.")
    rows_checked = serializers.IntegerField()


class StatusSerializer(serializers.Serializer):
    failsafe_password_set = serializers.BooleanField()
    total_backups = serializers.IntegerField(help_text="Complete backups.")
    safe_backups = serializers.IntegerField()
    last_safe_backup_id = serializers.UUIDField(allow_null=True)
    last_backup_at = UtcDateTimeField(allow_null=True)
    system_status = serializers.CharField(
        help_text="Operational, Failsafe password not set, or Degraded (see problems)."
    )
    problems = serializers.ListField(
        child=serializers.CharField(),
        help_text="Why the status is Degraded, one line each: no keyset, a key backups need, "
        "a broken audit chain, a failed last backup. Empty otherwise.",
    )
    lockouts = LockoutSerializer(many=True, help_text="Your own lockouts in force.")
    replicas = ReplicaLagSerializer(many=True, help_text="How far behind each replica is.")
    health = HealthSerializer(
        allow_null=True, help_text="What /health/ checks: each check, and whether all pass."
    )
    last_verified_restore = VerifiedRestoreSerializer(
        allow_null=True,
        help_text="The last proven restorable backup (its newest passed restore drill, with "
        "no failed one since); null before any drill passed.",
    )


# --- backups -------------------------------------------------------------------------


class BackupReplicaSerializer(serializers.Serializer):
    replica = serializers.CharField()
    status = serializers.CharField(help_text="PENDING, REPLICATED or FAILED.")
    verified_at = UtcDateTimeField(
        allow_null=True, help_text="When the copy was last read back and found to match."
    )
    error = BlankAsNullField(help_text="Why the last copy failed.")


class BackupSerializer(serializers.ModelSerializer):
    created_by = BlankAsNullField(source="created_by_username")
    marked_safe_by = BlankAsNullField(source="marked_safe_by_username")
    total_users = serializers.IntegerField(
        source="state.TotalUsers", allow_null=True, read_only=True
    )
    active_sessions = serializers.IntegerField(
        source="state.ActiveSessions", allow_null=True, read_only=True
    )
    total_licenses = serializers.IntegerField(
        source="state.TotalLicenses", allow_null=True, read_only=True
    )
    model_counts = serializers.DictField(
        child=serializers.IntegerField(),
        source="state.SystemMetrics.ModelCounts",
        allow_null=True,
        read_only=True,
        help_text="Rows captured per model label.",
    )
    database_vendor = serializers.CharField(
        source="state.SystemMetrics.DatabaseVendor", allow_null=True, read_only=True
    )
    django_version = serializers.CharField(
        source="state.SystemMetrics.DjangoVersion", allow_null=True, read_only=True
    )
    archive_sha256 = BlankAsNullField()
    error = BlankAsNullField()
    replicas = BackupReplicaSerializer(
        many=True, read_only=True, help_text="Where the backup stands on each replica."
    )
    pinned = serializers.BooleanField(
        read_only=True, help_text="Retention never forgets a pinned backup."
    )
    reviewed_at = UtcDateTimeField(
        allow_null=True,
        help_text="When a person acknowledged this emergency backup (null: not yet).",
    )
    reviewed_by = BlankAsNullField(source="reviewed_by_username")

    class Meta:
        model = Backup
        fields = [
            "id",
            "type",
            "reason",
            "status",
            "created_at",
            "finished_at",
            "created_by",
            "is_safe",
            "marked_safe_at",
            "marked_safe_by",
            "total_users",
            "active_sessions",
            "total_licenses",
            "archive_size",
            "bytes_written",
            "archive_sha256",
            "model_counts",
            "database_vendor",
            "django_version",
            "audit_head_seq",
            "error",
            "replicas",
            "pinned",
            "reviewed_at",
            "reviewed_by",
        ]
        read_only_fields = fields


class BackupFilterSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=Backup.Type.choices, required=False)
    safe = serializers.BooleanField(required=False, help_text="true: safe backups only.")


class BackupCreateSerializer(serializers.Serializer):
    type = serializers.ChoiceField(
        choices=[Backup.Type.MANUAL, Backup.Type.SCHEDULED], default=Backup.Type.MANUAL
    )
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH, allow_blank=True, default="")


# --- restore drills ------------------------------------------------------------------


class DrillModelSerializer(serializers.Serializer):
    expected = serializers.IntegerField(help_text="Rows the archive holds.")
    found = serializers.IntegerField(help_text="Rows read back from the scratch database.")
    differences = serializers.IntegerField()
    examples = serializers.ListField(
        child=serializers.CharField(),
        help_text="Records that differ, by name, with the columns (never the values).",
    )


class DrillSerializer(serializers.ModelSerializer):
    backup_id = serializers.UUIDField(
        allow_null=True, read_only=True, help_text="null once the backup is deleted."
    )
    started_by = BlankAsNullField(source="started_by_username")
    started_at = UtcDateTimeField()
    finished_at = UtcDateTimeField(allow_null=True)
    scratch_database = BlankAsNullField(
        help_text="Where it was restored: a temporary SQLite file, or the PostgreSQL database "
        "it created and dropped."
    )
    models_checked = serializers.DictField(
        child=DrillModelSerializer(), read_only=True, help_text="Per captured model label."
    )
    error = BlankAsNullField(help_text="Why it failed, in one line.")

    class Meta:
        model = Drill
        fields = [
            "id",
            "backup_id",
            "backup_label",
            "outcome",
            "started_at",
            "finished_at",
            "started_by",
            "scratch_database",
            "rows_checked",
            "models_checked",
            "error",
        ]
        read_only_fields = fields


class DrillRequestSerializer(serializers.Serializer):
    backup_id = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="The backup to drill (a full id or a unique prefix); default: the newest "
        "safe backup.",
    )


class PinRequestSerializer(serializers.Serializer):
    pinned = serializers.BooleanField(
        default=True, help_text="true: pin (retention never forgets it); false: unpin."
    )
    failsafe_password = secret_field(
        required=False,
        allow_blank=True,
        help_text="Required to unpin: unpinning lets retention delete the backup.",
    )


class AcknowledgeRequestSerializer(serializers.Serializer):
    failsafe_password = secret_field(
        required=False,
        allow_blank=True,
        help_text="Required: once acknowledged, retention may delete the emergency backup.",
    )


# --- retention -------------------------------------------------------------------------


class RetentionPolicySerializer(serializers.Serializer):
    keep_last = serializers.IntegerField()
    keep_hourly = serializers.IntegerField()
    keep_daily = serializers.IntegerField()
    keep_weekly = serializers.IntegerField()
    keep_monthly = serializers.IntegerField()
    keep_yearly = serializers.IntegerField(help_text="0: rule off; -1: every bucket.")
    keep_safe = serializers.IntegerField(help_text="The newest safe backups always kept.")
    keep_pre_restore_days = serializers.IntegerField()
    time_zone = serializers.CharField(help_text="The zone hours, days, ... are counted in.")
    description = serializers.CharField(source="describe")


class RetentionDecisionSerializer(serializers.Serializer):
    backup_id = serializers.UUIDField(source="backup.id")
    created_at = UtcDateTimeField(source="backup.created_at")
    type = serializers.CharField(source="backup.type")
    status = serializers.CharField(source="backup.status")
    is_safe = serializers.BooleanField(source="backup.is_safe")
    pinned = serializers.BooleanField(source="backup.pinned")
    reviewed_at = UtcDateTimeField(source="backup.reviewed_at", allow_null=True)
    decision = serializers.CharField(source="action", help_text="keep or forget.")
    reasons = serializers.ListField(
        child=serializers.CharField(),
        help_text='The rules that decided it, e.g. "daily 2026-12-01", "safe (newest 3)".',
    )


class RetentionPlanSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    message = serializers.CharField(source="summary")
    policy = RetentionPolicySerializer(source="plan.policy")
    keep = serializers.IntegerField(source="kept")
    forget = serializers.IntegerField(source="to_forget")
    backups = RetentionDecisionSerializer(
        source="plan.decisions", many=True, help_text="Every backup, newest first."
    )


# --- comparison and investigation ----------------------------------------------------


class RecordListSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="All of them, even beyond the records named.")
    records = serializers.ListField(child=serializers.CharField())


class FieldChangesField(serializers.DictField):
    """A modified record's changed columns, keyed by column name."""

    child = serializers.JSONField()

    def to_representation(self, changes):
        return {
            change.name: "changed" if change.secret else {"from": change.old, "to": change.new}
            for change in changes
        }


class ModifiedRecordSerializer(serializers.Serializer):
    record = serializers.CharField()
    fields = FieldChangesField(
        help_text='Per field: {"from": old, "to": new}, or a note for secret columns. A '
        'relation is keyed by its field ("owner") and valued by the natural keys of the '
        "records it points at (null: none).",
    )


class ConsequenceSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="The relation that lost what it pointed at.")
    target = serializers.CharField(help_text="The model label of the removed records.")
    count = serializers.IntegerField()
    records = serializers.ListField(child=serializers.CharField())
    summary = serializers.CharField(
        help_text='One line, e.g. "12 licenses lost their owner when their users were deleted".'
    )


class ModifiedListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    records = ModifiedRecordSerializer(many=True)


class ModelDifferenceSerializer(serializers.Serializer):
    added = RecordListSerializer()
    removed = RecordListSerializer()
    modified = ModifiedListSerializer()
    truncated = serializers.BooleanField()
    consequences = ConsequenceSerializer(
        many=True,
        help_text="Records changed only because what a relation of theirs pointed at was "
        "removed; they are listed under modified too.",
    )


class ComparisonSerializer(serializers.Serializer):
    has_safe_backup = serializers.BooleanField()
    safe_backup_id = serializers.CharField(allow_null=True)
    message = serializers.CharField()
    issues = serializers.ListField(child=serializers.CharField())
    changes = serializers.ListField(child=serializers.CharField())
    details = serializers.DictField(
        child=ModelDifferenceSerializer(), help_text="Record-level detail per model label."
    )
    baseline = serializers.CharField(
        source="baseline_label",
        allow_null=True,
        help_text='The side changes read from: "backup <id>" or "live now".',
    )
    current = serializers.CharField(
        source="current_label", allow_null=True, help_text="The side changes read to."
    )


class HintSerializer(serializers.Serializer):
    when = UtcDateTimeField()
    source = serializers.CharField()
    action = serializers.CharField()
    target = serializers.CharField()
    outcome = serializers.CharField(
        help_text="SUCCESS, DENIED or FAILED for an audit event; added, changed or deleted "
        "for an admin log entry."
    )


class NoRecordedActorSerializer(serializers.Serializer):
    count = serializers.IntegerField(
        help_text="Changed records no admin log entry, restore or audit event accounts for."
    )
    records = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Their natural keys, per model label.",
    )
    not_checked = serializers.IntegerField(
        help_text="Changed records the comparison did not name, so not looked up."
    )
    summary = serializers.CharField(help_text="One line; empty when every change has an actor.")


class JournalEntrySerializer(serializers.Serializer):
    when = UtcDateTimeField()
    who = serializers.CharField(
        help_text='The Django user of the request that made it, else "database role <role>".'
    )
    database_role = serializers.CharField()
    user = serializers.CharField(source="username", allow_blank=True)
    operation = serializers.ChoiceField(choices=["insert", "update", "delete"])
    columns = serializers.ListField(
        child=serializers.CharField(), help_text="The fields an update changed (never values)."
    )
    what = serializers.CharField()
    target = serializers.CharField(help_text='"<model label> <natural key>".')


class JournalSerializer(serializers.Serializer):
    entries = serializers.ListField(child=JournalEntrySerializer())
    omitted = serializers.IntegerField()
    problem = serializers.CharField(
        allow_blank=True, help_text="Why the journal could not be read; empty when it was."
    )


class RootCauseSerializer(serializers.Serializer):
    since = UtcDateTimeField()
    by_actor = serializers.DictField(
        child=serializers.ListField(child=HintSerializer()),
        help_text="Only events that touched a record the comparison names as changed.",
    )
    omitted = serializers.DictField(child=serializers.IntegerField())
    no_recorded_actor = NoRecordedActorSerializer()
    journal = JournalSerializer(
        allow_null=True,
        help_text="The change journal's entries on the changed records (PostgreSQL, raw SQL "
        "included); null where the database has no journal (SQLite).",
    )


class InvestigationSerializer(serializers.Serializer):
    status = serializers.CharField()
    last_safe_backup = serializers.CharField(allow_null=True)
    comparison = ComparisonSerializer()
    recommendations = serializers.ListField(child=serializers.CharField())
    root_cause = RootCauseSerializer()


class CompareQuerySerializer(serializers.Serializer):
    against = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="A backup id, or `live`; by default the last safe backup.",
    )


# --- trigger -------------------------------------------------------------------------


class TriggerRequestSerializer(serializers.Serializer):
    passkey = secret_field(help_text="The server license passkey.")
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH, allow_blank=True, default="")


class TriggerResultSerializer(serializers.Serializer):
    backup_id = serializers.UUIDField(source="backup.id")
    created_at = UtcDateTimeField(source="backup.created_at")
    message = serializers.CharField()
    investigation = InvestigationSerializer()
    next_steps = serializers.ListField(child=serializers.CharField())


class MarkSafeRequestSerializer(serializers.Serializer):
    failsafe_password = secret_field(
        required=False,
        allow_blank=True,
        help_text="Required: marking safe changes what is trusted.",
    )
    accept_issues = serializers.BooleanField(
        default=False,
        help_text="Mark it safe although its comparison with the last safe backup has issues.",
    )


# --- restore -------------------------------------------------------------------------


class RestoreRequestSerializer(serializers.Serializer):
    failsafe_password = secret_field(
        required=False, allow_blank=True, help_text="Required unless dry_run is true."
    )
    dry_run = serializers.BooleanField(
        default=False, help_text="Show what the restore would change, and change nothing."
    )
    allow_cascade = serializers.BooleanField(
        default=False, help_text="Also delete rows outside the backup that depend on deleted ones."
    )
    without_pre_restore_backup = serializers.BooleanField(
        default=False,
        help_text="Restore although the backup of the current state cannot be written; "
        "keeps no copy of it. Needs `confirm`.",
    )
    confirm = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        default="",
        help_text="With without_pre_restore_backup: the backup id, typed to confirm.",
    )
    only = serializers.ListField(
        child=serializers.CharField(max_length=10_000),
        required=False,
        max_length=1000,
        help_text='Restore only these records: items "model.label:key,key" (natural keys, '
        '"#42" for a primary key), e.g. ["accounts.user:alice,bob"]. Everything else stays.',
    )
    damage = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=10,
        help_text="Restore only the damage: the records the comparison of the backup with the "
        'live data names as these kinds ("removed", "modified", "added"); [] means removed '
        "and modified.",
    )
    undo_actor = serializers.CharField(
        required=False,
        max_length=150,
        help_text="Restore only the records this user changed since `since`, as the audit "
        "trail, the admin log and (PostgreSQL) the change journal record it.",
    )
    since = serializers.CharField(
        required=False,
        max_length=100,
        help_text='With undo_actor: an ISO time, e.g. "2026-12-03T14:00:00Z" (UTC without an '
        "offset); not in the future.",
    )
    at = serializers.CharField(
        required=False,
        max_length=100,
        help_text="With only, PostgreSQL: restore those records as the change journal had them "
        'at this ISO time (e.g. "2026-12-03T14:00:00Z"), after the backup and not in the '
        "future; a record the journal did not change since the backup gets the backup's row.",
    )
    accept_conflicts = serializers.BooleanField(
        default=False,
        help_text="Restore selected records even if they changed again after the damage.",
    )
    force_password_reset = serializers.BooleanField(
        default=False,
        help_text="The accounts whose password, role, active flag or groups the restore "
        "changes must change their password at their next login.",
    )


class ModelPlanSerializer(serializers.Serializer):
    model = serializers.CharField(source="label")
    insert = serializers.IntegerField()
    update = serializers.IntegerField()
    delete = serializers.IntegerField()
    sample_insert = serializers.ListField(child=serializers.CharField())
    sample_update = serializers.ListField(child=serializers.CharField())
    sample_delete = serializers.ListField(child=serializers.CharField())


class CascadeSerializer(serializers.Serializer):
    model = serializers.CharField()
    count = serializers.IntegerField()
    examples = serializers.ListField(child=serializers.CharField())


class RestoreRecordSerializer(serializers.Serializer):
    model = serializers.CharField(source="label")
    record = serializers.CharField(help_text="Its natural key.")
    action = serializers.ChoiceField(choices=["insert", "update", "delete", "unchanged"])
    columns = serializers.ListField(child=serializers.CharField())
    selected_by = serializers.CharField(
        required=False,
        help_text="Selected by actor and time (undo_actor) only: the actor whose log entries "
        "named it.",
    )
    entries = serializers.IntegerField(
        required=False,
        help_text="Selected by actor and time (undo_actor) only: how many log entries named it.",
    )
    source = serializers.CharField(
        required=False,
        help_text="Restored to a moment (at) only: whether its state comes from the change "
        "journal at that moment or, the journal having no entry on it since the backup, from "
        "the backup.",
    )

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if not instance.selected_by:  # selected by key or by the damage
            del data["selected_by"], data["entries"]
        if not instance.source:
            del data["source"]
        return data


class AccountChangeSerializer(serializers.Serializer):
    username = serializers.CharField()
    changes = serializers.ListField(
        child=serializers.CharField(),
        help_text='"restored", "deleted", or the columns changed (password, role, is_active, '
        "groups, ...).",
    )


class RestorePlanSerializer(serializers.Serializer):
    is_noop = serializers.BooleanField()
    models = ModelPlanSerializer(many=True)
    cascades = CascadeSerializer(many=True)
    selective = serializers.BooleanField()
    records = RestoreRecordSerializer(many=True, help_text="A selective restore's records.")
    conflicts = serializers.ListField(child=serializers.CharField())
    accounts = AccountChangeSerializer(
        many=True, help_text="Accounts whose sessions and API tokens the restore ends."
    )
    accounts_unlisted = serializers.IntegerField(
        help_text="How many more accounts it changes: a full restore lists DETAIL_LIMIT."
    )
    own_account = serializers.ListField(
        child=serializers.CharField(),
        help_text="What the restore changes of the acting SuperAdmin's own account.",
    )


class VerificationSerializer(serializers.Serializer):
    identical = serializers.BooleanField()
    differences = serializers.ListField(child=serializers.CharField())


class RestoreResultSerializer(serializers.Serializer):
    backup_id = serializers.UUIDField(source="backup.id")
    dry_run = serializers.BooleanField()
    message = serializers.CharField()
    pre_restore_backup_id = serializers.UUIDField(source="pre_restore_backup.id", allow_null=True)
    plan = RestorePlanSerializer()
    verification = VerificationSerializer(allow_null=True, help_text="null for a dry run.")
    sessions_flushed = serializers.IntegerField()
    tokens_revoked = serializers.IntegerField(help_text="API tokens revoked, this one included.")
    contained_accounts = serializers.ListField(
        child=serializers.CharField(),
        help_text="Usernames whose password, role, active flag or groups the restore changed: "
        "their sessions and API tokens ended.",
    )
    password_reset = serializers.BooleanField(
        source="plan.password_reset",
        help_text="Whether those accounts must change their password at their next login.",
    )
    next_steps = serializers.ListField(child=serializers.CharField())


# --- failsafe password ---------------------------------------------------------------


class PasswordRequestSerializer(serializers.Serializer):
    password = secret_field(help_text="The new failsafe password.")
    current_password = secret_field(
        required=False,
        allow_blank=True,
        help_text="Required to change a failsafe password that is already set.",
    )


class PasswordResultSerializer(serializers.Serializer):
    replaced = serializers.BooleanField(help_text="true when an older password was replaced.")
    message = serializers.CharField()
    timestamp = UtcDateTimeField()


# --- audit ---------------------------------------------------------------------------


class AuditFilterSerializer(serializers.Serializer):
    action = serializers.CharField(max_length=64, required=False, help_text="failsafe.trigger")
    outcome = serializers.ChoiceField(choices=AuditEvent.Outcome.choices, required=False)
    actor = serializers.CharField(max_length=150, required=False, help_text="A username.")
    source = serializers.ChoiceField(choices=AuditEvent.Source.choices, required=False)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = BlankAsNullField(source="actor_username")

    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "created_at",
            "actor",
            "source",
            "action",
            "target",
            "outcome",
            "details",
            "ip_address",
        ]
        read_only_fields = fields


# --- terminal ------------------------------------------------------------------------


class TerminalRequestSerializer(serializers.Serializer):
    # No length limit here: an oversized line gets the terminal's own message.
    command = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        default="",
        help_text='One line of the failsafe\'s terminal language, e.g. "failsafe status".',
    )
    failsafe_password = secret_field(
        required=False, allow_blank=True, help_text="For `failsafe restore <id>`."
    )
    password = secret_field(
        required=False,
        allow_blank=True,
        help_text="For `failsafe setpassword` without the password on the line.",
    )
    current_password = secret_field(
        required=False,
        allow_blank=True,
        help_text="For `failsafe setpassword` when a failsafe password is already set.",
    )
    passkey = secret_field(
        required=False,
        allow_blank=True,
        help_text="For `help_failsafe -start` without the passkey on the line.",
    )
