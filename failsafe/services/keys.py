"""The key material: which keys the backups need, a new keyset on the first run, rotation,
and the recovery file (export and import) that lets a new installation open old backups.

A keyset is never created while backups exist: a new key opens none of them, and the only
way back is the key material they were written under (the recovery file). Rotation, export
and import change or reveal what protects every backup, so they need the failsafe password
like a restore. On a new installation (empty database, no SuperAdmin and no failsafe password
yet) the import is the first step of a recovery: it is then allowed from the command line
alone, audited as the system.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db.models import Count

from accounts.models import Role
from licensing import services as licensing

from .. import audit, keys
from ..exceptions import FailsafeError, NotSuperAdmin
from ..models import AuditEvent, Backup
from .guards import (
    Actor,
    audited,
    require_failsafe_password,
    require_superadmin,
    resolve_superadmin,
)
from .results import ExportResult, ImportResult, KeysStatus, KeyUse, RotationResult

ACTION_KEYS_STATUS = "failsafe.keys.status"
ACTION_CREATE_KEYSET = "failsafe.keys.create"
ACTION_ROTATE_KEYS = "failsafe.keys.rotate"
ACTION_EXPORT_KEYS = "failsafe.keys.export"
ACTION_IMPORT_KEYS = "failsafe.keys.import"

SYSTEM = Actor.system()
# Only the command line may act without a SuperAdmin, and only before one exists.
_SHELL_SOURCES = (AuditEvent.Source.CLI, AuditEvent.Source.SYSTEM)


# --- what the backups need ---------------------------------------------------------------


def _archived_backups():
    return Backup.objects.filter(status=Backup.Status.COMPLETE).exclude(archive_name="")


def backups_per_key() -> dict[int, int]:
    """Key id -> how many complete backups were encrypted under it (their rows say)."""
    rows = (
        _archived_backups()
        .exclude(key_id=None)
        .values("key_id")
        .annotate(backups=Count("id"))
        .order_by("key_id")
    )
    return {row["key_id"]: row["backups"] for row in rows}


def _id_list(key_ids) -> str:
    return ", ".join(str(key_id) for key_id in sorted(key_ids))


def _missing_key_problem(key_id: int, backups: int) -> str:
    return f"The keyset lacks key {key_id}, which {backups} backup(s) need: {keys.IMPORT_ADVICE}"


def keyset_problems() -> list[str]:
    """What stops the keyset from opening every backup or taking a new one, one line each."""
    needed = backups_per_key()
    try:
        held = set(keys.keyset_info().key_ids)
    except FailsafeError as exc:
        if not needed:
            return [str(exc)]
        return [
            f"No usable failsafe keyset, and {sum(needed.values())} backup(s) need key(s) "
            f"{_id_list(needed)}: {keys.IMPORT_ADVICE}"
        ]
    return [
        _missing_key_problem(key_id, backups)
        for key_id, backups in needed.items()
        if key_id not in held
    ]


def check_keyset_creatable() -> None:
    """Refuses, naming the key ids, to create a keyset while backups need the missing one.

    Creating one would look like a repair and open nothing: every backup needs the keys it
    was written under.
    """
    if not keys.keyset_file_missing():
        return
    archived = _archived_backups().count()
    if not archived:
        return
    needed = backups_per_key()
    which = f"key(s) {_id_list(needed)}" if needed else "the keys that encrypted them"
    raise FailsafeError(
        f"No failsafe keyset at {keys.keyset_file()}, but {archived} backup(s) need {which}; "
        f"a new keyset would open none of them. Refused: {keys.IMPORT_ADVICE} first. "
        "Nothing was changed"
    )


def prepare_keyset() -> str | None:
    """The first run's keyset: created when none is configured and no backup needs one.

    Returns the new file's path, or None when a keyset is already configured. Raises
    FailsafeError (check_keyset_creatable) when backups need the missing keyset.
    """
    check_keyset_creatable()
    if not keys.keyset_file_missing():
        return None
    with audited(SYSTEM, ACTION_CREATE_KEYSET) as details:
        check_keyset_creatable()
        created = keys.ensure_keyset_file()
        details["file"] = created
        if created:
            details["primary"] = keys.primary_key_id()
        return created


# --- the operations -----------------------------------------------------------------------


def key_status(*, actor: Actor) -> KeysStatus:
    with audited(actor, ACTION_KEYS_STATUS):
        require_superadmin(actor)
        needed = backups_per_key()
        try:
            info = keys.keyset_info()
        except FailsafeError as exc:
            info, error = None, str(exc)
        else:
            error = ""
        held = set(info.key_ids) if info else set()
        uses = [
            KeyUse(
                key_id=key_id,
                backups=needed.get(key_id, 0),
                held=key_id in held,
                primary=info is not None and key_id == info.primary_key_id,
            )
            for key_id in sorted(held | set(needed))
        ]
        chunk_source, imported_chunk_ids = keys.chunk_key_source()
        return KeysStatus(
            keyset_source=info.source if info else None,
            keyset_error=error,
            primary_key_id=info.primary_key_id if info else None,
            keys=uses,
            audit_key_source=keys.audit_key_source(),
            chunk_key_source=chunk_source,
            imported_chunk_key_ids=list(imported_chunk_ids),
            backups_without_key_id=_archived_backups().filter(key_id=None).count(),
        )


def rotate_keys(*, actor: Actor, password: str | None) -> RotationResult:
    """A new primary key for new backups; every old key stays, so old archives still open."""
    with audited(actor, ACTION_ROTATE_KEYS) as details:
        require_superadmin(actor)
        before = keys.keyset_info()
        if before.source == keys.INLINE_SOURCE:
            raise FailsafeError(keys.INLINE_ROTATION)
        require_failsafe_password(actor, ACTION_ROTATE_KEYS, password)
        new_primary = keys.rotate_keyset()
        after = keys.keyset_info()
        details.update(
            previous_primary=before.primary_key_id, primary=new_primary, held=len(after.key_ids)
        )
        return RotationResult(
            previous_primary_key_id=before.primary_key_id,
            primary_key_id=new_primary,
            key_ids=after.key_ids,
        )


def export_keys(
    *, actor: Actor, password: str | None, passphrase: str, destination: str
) -> ExportResult:
    """Writes every key (archive keyset, audit key, chunk-naming keys) to one new file,
    sealed under `passphrase` (argon2id, then AES-256-GCM). Neither secret is stored."""
    path = Path(destination)
    with audited(actor, ACTION_EXPORT_KEYS, target=str(destination)[:255]) as details:
        require_superadmin(actor)
        keys.check_passphrase(passphrase)
        if path.exists():
            raise FailsafeError(f"{path} already exists: name a new file")
        require_failsafe_password(actor, ACTION_EXPORT_KEYS, password)
        material = keys.current_key_material()
        keys.write_new_private_file(path, keys.seal(material, passphrase))
        details.update(ids=list(material.key_ids), primary=material.primary_key_id)
        return ExportResult(
            path=str(path.resolve()),
            key_ids=material.key_ids,
            primary_key_id=material.primary_key_id,
        )


def _superadmins_exist() -> bool:
    return get_user_model().objects.filter(role=Role.SUPERADMIN, is_active=True).exists()


def key_import_actor(username: str | None = None) -> Actor:
    """Who runs `failsafe_keys import`: the SuperAdmin named or the only one, or the system
    itself on a new installation that has no SuperAdmin yet."""
    if username or _superadmins_exist():
        return Actor(user=resolve_superadmin(username), source=AuditEvent.Source.CLI)
    return SYSTEM


def _require_importer(actor: Actor, password: str | None) -> None:
    if actor.user is None:
        if actor.source not in _SHELL_SOURCES:
            raise NotSuperAdmin("SuperAdmin only")
        if _superadmins_exist():
            raise NotSuperAdmin(
                "A SuperAdmin exists: import the key material as one (--user USERNAME)"
            )
    else:
        require_superadmin(actor)
    if licensing.failsafe_password_is_set():
        require_failsafe_password(actor, ACTION_IMPORT_KEYS, password)


def _read_recovery_file(source: str) -> bytes:
    try:
        with open(source, "rb") as recovery_file:
            return recovery_file.read(keys.MAX_RECOVERY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise FailsafeError(f"Cannot read {source}: no such file") from None
    except IsADirectoryError:
        raise FailsafeError(f"Cannot read {source}: it is a directory") from None
    except PermissionError:
        raise FailsafeError(f"Cannot read {source}: permission denied") from None


def _audit_trail_allows_new_key() -> bool:
    """Whether the recovery file's audit key may replace the one in use.

    Not when the trail here began under the key in use (a new installation that has
    written events already): replacing it would make all of them fail to verify. An empty
    trail, or one whose first event the key in use did not sign (the keys were lost and
    SECRET_KEY changed), takes the imported key; events written in between under the
    wrong key then show as what they are, signed by another key.
    """
    first = AuditEvent.objects.order_by("seq").first()
    return first is None or not hmac.compare_digest(audit.event_hash(first), first.hash)


def import_keys(
    *, actor: Actor, source: str, passphrase: str, password: str | None = None
) -> ImportResult:
    """Installs the key material of a recovery file, adding to what is here and replacing
    nothing; a wrong passphrase or any conflict refuses in one line and changes nothing."""
    with audited(actor, ACTION_IMPORT_KEYS, target=str(source)[:255]) as details:
        _require_importer(actor, password)
        material = keys.unseal(_read_recovery_file(source), passphrase, source=str(source))
        installed = keys.install_key_material(
            material, may_replace_audit_key=_audit_trail_allows_new_key()
        )
        needed = backups_per_key()
        missing = set(keys.missing_key_ids(needed))
        still_missing = {key_id: n for key_id, n in needed.items() if key_id in missing}
        details.update(
            ids=list(material.key_ids),
            added=installed.added_key_ids,
            created=installed.keyset_created,
            audit_installed=installed.audit_key_installed,
            chunk_naming_installed=installed.chunk_keys_installed,
            still_missing=sorted(still_missing),
        )
        return ImportResult(
            installed=installed,
            key_ids=material.key_ids,
            exported_at=material.exported_at,
            still_missing=still_missing,
        )
