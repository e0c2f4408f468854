"""One DRF exception handler: every failure becomes {"detail": ...} with its status code.

Failsafe and licensing refusals map to the codes below; DRF's own errors keep theirs; a body
too large is 413, JSON nested too deeply 400; anything else (a full disk, a database or
storage error) is 507 or 503 with its one line, and its traceback goes to the log only.
"""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
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

logger = logging.getLogger(__name__)

STATUS_BY_ERROR = [
    (fs.LockedOut, status.HTTP_429_TOO_MANY_REQUESTS),
    (fs.NotSuperAdmin, status.HTTP_403_FORBIDDEN),
    (InvalidPasskey, status.HTTP_403_FORBIDDEN),
    (InvalidFailsafePassword, status.HTTP_403_FORBIDDEN),
    (fs.InvalidBackupId, status.HTTP_404_NOT_FOUND),
    (fs.BackupNotFound, status.HTTP_404_NOT_FOUND),
    (fs.InvestigationNotFound, status.HTTP_404_NOT_FOUND),
    (fs.OperationInProgress, status.HTTP_409_CONFLICT),
    (fs.BackupNotUsable, status.HTTP_409_CONFLICT),
    (fs.CascadeRefused, status.HTTP_409_CONFLICT),
    (fs.RestoreConflict, status.HTTP_409_CONFLICT),
    (fs.UnacceptedIssues, status.HTTP_409_CONFLICT),
    (fs.SchemaMismatch, status.HTTP_409_CONFLICT),
    (FailsafePasswordNotSet, status.HTTP_409_CONFLICT),
    (PasskeyNotIssued, status.HTTP_409_CONFLICT),
    (fs.ArchiveCorrupt, status.HTTP_422_UNPROCESSABLE_ENTITY),
    (fs.RestoreVerificationFailed, status.HTTP_500_INTERNAL_SERVER_ERROR),
    (fs.InvalidRetentionPolicy, status.HTTP_500_INTERNAL_SERVER_ERROR),
    (fs.StorageFull, status.HTTP_507_INSUFFICIENT_STORAGE),
    (fs.ServerFailure, status.HTTP_503_SERVICE_UNAVAILABLE),
    (fs.ConfirmationRequired, status.HTTP_400_BAD_REQUEST),
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
        return Response({"detail": one_line(exc, door="api")}, status=code)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"Request body too large: the limit is {limit} bytes"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, RecursionError):
        return Response(
            {"detail": "Malformed request: JSON nested too deeply"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    logger.error("API request failed", exc_info=exc)
    refusal = fs.as_refusal(exc, doing="The request")
    return Response({"detail": one_line(refusal)}, status=status_for(refusal))
