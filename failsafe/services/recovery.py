"""Rebuilding the catalog of backups from a storage alone: the primary store or a replica.

Recovery adds Backup rows, safe marks with them, so it changes what the failsafe trusts: a
SuperAdmin needs the failsafe password for it, like a restore (a dry run only reads). On a
new installation (empty database, no SuperAdmin, no failsafe password) it is the step after
the key import, and is allowed from the command line alone, audited as the system, under
the same rule as the import (services.keys.key_import_actor): a forged backup cannot be
slipped in that way, because only archives sealed under the imported keys are accepted.
"""

from __future__ import annotations

from licensing import services as licensing

from .. import recovery
from ..exceptions import NotSuperAdmin
from ..progress import Progress, reporting
from .guards import Actor, audited, require_failsafe_password, require_superadmin
from .keys import _SHELL_SOURCES, _superadmins_exist, key_import_actor
from .results import RecoveryResult

ACTION_RECOVER = "failsafe.recover"


def recovery_actor(username: str | None = None) -> Actor:
    """Who runs `failsafe_recover`: as for the key import, the SuperAdmin named or the only
    one, or the system itself on a new installation that has no SuperAdmin yet."""
    return key_import_actor(username)


def _require_recoverer(actor: Actor, password: str | None, *, dry_run: bool) -> None:
    if actor.user is None:
        if actor.source not in _SHELL_SOURCES:
            raise NotSuperAdmin("SuperAdmin only")
        if _superadmins_exist():
            raise NotSuperAdmin("A SuperAdmin exists: recover as one (--user USERNAME)")
    else:
        require_superadmin(actor)
    if not dry_run and licensing.failsafe_password_is_set():
        require_failsafe_password(actor, ACTION_RECOVER, password)


def recover(
    *,
    actor: Actor,
    source: str,
    dry_run: bool = False,
    password: str | None = None,
    progress: Progress | None = None,
) -> RecoveryResult:
    """Adds the Backup rows the database lacks from the backups the storage at `source` (a
    storage URL) holds, after checking each through; see failsafe.recovery.recover."""
    where = recovery.describe_source(source)
    with audited(actor, ACTION_RECOVER, target=where[:255]) as details, reporting(progress):
        details["dry_run"] = dry_run
        _require_recoverer(actor, password, dry_run=dry_run)
        report = recovery.recover(url=source, dry_run=dry_run)
        details.update(
            found=report.found,
            added=[str(backup.id) for backup in report.added][:100],
            present=len(report.present),
            conflicts=[conflict.backup_id for conflict in report.conflicts][:100],
            damaged=[damage.name for damage in report.damaged][:100],
            files_copied=report.files_copied,
        )
        return RecoveryResult(report=report, without_superadmin=not _superadmins_exist())
