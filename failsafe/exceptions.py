"""Every refusal of the failsafe engine; messages are one line, meant for the user."""

from django.core.exceptions import PermissionDenied, SuspiciousOperation

from licensing.exceptions import LicensingError


class FailsafeError(Exception):
    """Base of every failsafe refusal."""


class NotSuperAdmin(FailsafeError, PermissionDenied):
    """The acting user is not an active SuperAdmin."""


class InvalidBackupId(FailsafeError):
    """The backup id is not a UUID."""


class BackupNotFound(FailsafeError):
    """No backup has that id."""


class BackupNotUsable(FailsafeError):
    """The backup exists but did not complete, so it has no trustworthy archive."""


class ArchiveCorrupt(FailsafeError, SuspiciousOperation):
    """The archive is missing, tampered with, truncated or cannot be decrypted or decoded."""


class SchemaMismatch(FailsafeError):
    """The archive was captured under migrations other than the ones applied now."""


class CascadeRefused(FailsafeError):
    """Restoring would delete data outside the captured models."""


class LockedOut(FailsafeError, PermissionDenied):
    """Too many wrong secrets: attempts are refused until the cool-off ends."""


class OperationInProgress(FailsafeError):
    """Another backup or restore holds the operation lock."""


class RestoreVerificationFailed(FailsafeError):
    """After restoring, the database did not match the backup; everything was rolled back."""



# What every door catches from the services: their refusals, each with a one-line message
# for the user. Anything else is a failure of the failsafe itself.
REFUSALS = (FailsafeError, LicensingError, PermissionDenied)
