"""The failsafe's one entry point: every door (commands, API, admin, terminal) calls these.

Each operation checks the actor, does its work, and writes one audit event whatever the
outcome (guards.audited). Results are plain data (results.py); each door renders them.
"""

from .administration import (
    audit_events,
    failsafe_password_is_set,
    last_audit_verification,
    set_failsafe_password,
    status,
    unlock,
    verify_audit_chain,
)
from .backups import (
    collect_garbage,
    create_backup,
    delete_backup,
    get_backup,
    last_safe_backup,
    list_backups,
    parse_backup_id,
    repair,
    verify,
)
from .comparing import compare, mark_safe, trigger
from .guards import Actor, resolve_superadmin, several_superadmins
from .keys import (
    check_keyset_creatable,
    export_keys,
    import_keys,
    key_import_actor,
    key_status,
    keyset_problems,
    prepare_keyset,
    rotate_keys,
)
from .recovery import recover, recovery_actor
from .replication import replicate, verify_replica
from .restoring import restore
from .results import (
    DeleteResult,
    ExportResult,
    ImportResult,
    KeysStatus,
    PasswordResult,
    RecoveryResult,
    RepairResult,
    ReplicationResult,
    ReplicaVerifyResult,
    RestoreResult,
    RotationResult,
    Status,
    TriggerResult,
    VerifyResult,
)

__all__ = [
    "Actor",
    "DeleteResult",
    "ExportResult",
    "ImportResult",
    "KeysStatus",
    "PasswordResult",
    "RecoveryResult",
    "RepairResult",
    "ReplicaVerifyResult",
    "ReplicationResult",
    "RestoreResult",
    "RotationResult",
    "Status",
    "TriggerResult",
    "VerifyResult",
    "audit_events",
    "check_keyset_creatable",
    "collect_garbage",
    "compare",
    "create_backup",
    "delete_backup",
    "export_keys",
    "failsafe_password_is_set",
    "get_backup",
    "import_keys",
    "key_import_actor",
    "key_status",
    "keyset_problems",
    "last_audit_verification",
    "last_safe_backup",
    "list_backups",
    "mark_safe",
    "parse_backup_id",
    "prepare_keyset",
    "recover",
    "recovery_actor",
    "repair",
    "replicate",
    "resolve_superadmin",
    "several_superadmins",
    "restore",
    "rotate_keys",
    "set_failsafe_password",
    "status",
    "trigger",
    "unlock",
    "verify",
    "verify_audit_chain",
    "verify_replica",
]
