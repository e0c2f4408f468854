"""One DRF exception handler: failsafe and licensing refusals become {"detail": ...}."""

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from licensing.exceptions import (
    FailsafePasswordNotSet,
    InvalidFailsafePassword,
    InvalidPasskey,
    LicensingError,
    PasskeyNotIssued,
    WeakFailsafePassword,
)

from .. import exceptions as fs
from ..render.text import one_line

STATUS_BY_ERROR = [
    (fs.LockedOut, status.HTTP_429_TOO_MANY_REQUESTS),
    (fs.NotSuperAdmin, status.HTTP_403_FORBIDDEN),
    (InvalidPasskey, status.HTTP_403_FORBIDDEN),
    (InvalidFailsafePassword, status.HTTP_403_FORBIDDEN),
    (fs.InvalidBackupId, status.HTTP_404_NOT_FOUND),
    (fs.BackupNotFound, status.HTTP_404_NOT_FOUND),
    (fs.OperationInProgress, status.HTTP_409_CONFLICT),
    (fs.BackupNotUsable, status.HTTP_409_CONFLICT),
    (fs.CascadeRefused, status.HTTP_409_CONFLICT),
    (fs.SchemaMismatch, status.HTTP_409_CONFLICT),
    (FailsafePasswordNotSet, status.HTTP_409_CONFLICT),
    (PasskeyNotIssued, status.HTTP_409_CONFLICT),
    (fs.ArchiveCorrupt, status.HTTP_422_UNPROCESSABLE_ENTITY),
    (fs.RestoreVerificationFailed, status.HTTP_500_INTERNAL_SERVER_ERROR),
    (WeakFailsafePassword, status.HTTP_400_BAD_REQUEST),
    (fs.FailsafeError, status.HTTP_400_BAD_REQUEST),
    (LicensingError, status.HTTP_400_BAD_REQUEST),
]


def status_for(exc: Exception) -> int | None:
    for error_class, code in STATUS_BY_ERROR:
        if isinstance(exc, error_class):
            return code
    return None


def exception_handler(exc, context):
    code = status_for(exc)
    if code is not None:
        return Response({"detail": one_line(exc)}, status=code)
    return drf_exception_handler(exc, context)
