"""Every refusal of the failsafe engine; messages are one line, meant for the user."""

import errno

from django.core.exceptions import PermissionDenied, SuspiciousOperation

from licensing.exceptions import LicensingError


class FailsafeError(Exception):
    """Base of every failsafe refusal.

    Its message is written for the command line. `remedies` maps each command-line option
    the message names to what the other doors call it ("api", "admin"), so every door's
    one line names its own way to go on (`one_line(exc, door=...)`).
    """

    remedies: dict[str, dict[str, str]] = {}


class NotSuperAdmin(FailsafeError, PermissionDenied):
    """The acting user is not an active SuperAdmin."""


class InvalidBackupId(FailsafeError):
    """The backup id is neither a full backup id as listed nor a prefix of one."""


class AmbiguousBackupId(InvalidBackupId):
    """A backup id prefix that names more than one backup."""


class BackupNotFound(FailsafeError):
    """No backup has that id."""


class NoSafeBackupYet(BackupNotFound):
    """A scheduled operation needs a safe backup and none is marked: nothing to do yet."""


class BackupNotUsable(FailsafeError):
    """The backup exists but did not complete, so it has no trustworthy archive."""


class ArchiveCorrupt(FailsafeError, SuspiciousOperation):
    """The archive is missing, tampered with, truncated or cannot be decrypted or decoded."""


class SchemaMismatch(FailsafeError):
    """The archive was captured under migrations other than the ones applied now."""


class UnacceptedIssues(FailsafeError):
    """Marking safe a backup whose comparison with the safe baseline has issues, unaccepted."""

    def __init__(self, message: str, *, issues: list[str] | None = None):
        super().__init__(message)
        self.issues = list(issues or [])

    remedies = {
        "--accept-issues": {
            "api": '"accept_issues": true',
            "admin": 'the box "Mark it safe even if its comparison … has issues"',
        }
    }


class CascadeRefused(FailsafeError):
    """Restoring would delete data outside the captured models."""

    remedies = {
        "--allow-cascade": {
            "api": '"allow_cascade": true',
            "admin": 'the box "Also delete the records listed above outside the backup"',
        }
    }


class InvalidSelection(FailsafeError):
    """A selective restore names an unknown model or record, nothing at all, or records whose
    restoring would leave a reference dangling."""


class RestoreConflict(FailsafeError):
    """A selective restore meets a unique value held by another record, or (unaccepted) a
    selected record changed again after the damage."""

    remedies = {
        "--accept-conflicts": {
            "api": '"accept_conflicts": true',
            "admin": 'the box "Restore the selected records despite the conflicts"',
        }
    }


class LockedOut(FailsafeError, PermissionDenied):
    """Too many wrong secrets: attempts are refused until the cool-off ends."""


class OperationInProgress(FailsafeError):
    """Another backup or restore holds the operation lock."""


class ServerFailure(FailsafeError):
    """Something below the failsafe's own checks failed: the disk, the database, a storage."""


class StorageFull(ServerFailure):
    """The storage the failsafe writes to has no space left."""


class ConfirmationRequired(FailsafeError):
    """A dangerous option was given without the typed confirmation it needs."""


class InvalidRetentionPolicy(FailsafeError):
    """FAILSAFE["RETENTION"], KEEP_SAFE or KEEP_PRE_RESTORE_DAYS is not a valid setting."""


class RestoreVerificationFailed(FailsafeError):
    """After restoring, the database did not match the backup; everything was rolled back."""


class InvalidStorageUrl(FailsafeError):
    """A storage URL (a replica's) is malformed, of an unknown kind, or carries a secret."""


class StorageUnreachable(FailsafeError):
    """A storage does not answer: host down, credentials refused, bucket or directory missing."""


class InvestigationNotFound(FailsafeError):
    """The backup keeps no investigation: it was not taken by a trigger or the drift watch."""



# What every door catches from the services: their refusals, each with a one-line message
# for the user. Anything else is a failure of the failsafe itself.
REFUSALS = (FailsafeError, LicensingError, PermissionDenied)


def one_line(exc: BaseException, *, door: str = "cli") -> str:
    """A refusal as the one line every door shows: the exception's words, whitespace folded,
    with the command-line options it names in the words of `door` ("cli", "api", "admin")."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    for option, by_door in getattr(exc, "remedies", {}).items():
        if door in by_door:
            text = text.replace(option, by_door[door])
    return text


def as_refusal(exc: Exception, doing: str) -> Exception:
    """`exc` as one of REFUSALS, so every door shows a failure outside the failsafe's own
    checks (a full disk, a storage or database error) as its one line: refusals as they are,
    anything else as StorageFull or ServerFailure naming what was being done."""
    if isinstance(exc, REFUSALS):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return StorageFull(f"{doing} failed: no space left on the device it writes to")
    return ServerFailure(f"{doing} failed: {exc.__class__.__name__}: {one_line(exc)}")
