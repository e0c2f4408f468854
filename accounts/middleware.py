from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

PASSWORD_CHANGE_REQUIRED = "Password change required before anything else."

# The pages a flagged user may still reach: both password-change pages (raos/urls.py routes
# the admin's to accounts' view, which clears the flag) and the ways out.
_ALLOWED_URL_NAMES = (
    "accounts:password_change",
    "admin:password_change",
    "accounts:logout",
    "admin:logout",
)


class ForcePasswordChangeMiddleware:
    """A user flagged `must_change_password` sees the password-change page and nothing else."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.must_change_password:
            allowed = {reverse(name) for name in _ALLOWED_URL_NAMES}
            static_prefix = "/" + settings.STATIC_URL.lstrip("/")
            if request.path not in allowed and not request.path.startswith(static_prefix):
                if request.path.startswith("/api/"):
                    return JsonResponse({"detail": PASSWORD_CHANGE_REQUIRED}, status=403)
                return redirect("accounts:password_change")
        return self.get_response(request)
