"""The project's error pages: JSON under /api/, Django's own pages everywhere else.

DRF's exception handler (failsafe.api.errors) answers for what its views raise; these answer
for what happens before a view runs (a body too large, a bad Host header) and for a crash
that escaped everything, so no API client ever receives an HTML page.
"""

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.shortcuts import render
from django.views import defaults

API_PREFIX = "/api/"


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request, exception):
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse({"detail": "Request body too large"}, status=413)
    return JsonResponse({"detail": "Malformed request"}, status=400)


def permission_denied(request, exception):
    """A signed-in user without the role a page needs learns why, and what to do."""
    if _is_api(request):
        return JsonResponse({"detail": str(exception) or "Permission denied"}, status=403)
    return render(
        request,
        "403.html",
        {"reason": str(exception) or "You do not have permission to open this page."},
        status=403,
    )


def server_error(request):
    if not _is_api(request):
        return defaults.server_error(request)
    return JsonResponse(
        {"detail": "The server failed to answer; the failure is logged. Try again later"},
        status=503,
    )
