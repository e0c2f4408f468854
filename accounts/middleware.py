from django.shortcuts import redirect
from django.urls import reverse


class ForcePasswordChangeMiddleware:
    """A user flagged `must_change_password` sees the password-change page and nothing else."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.must_change_password:
            allowed = {
                reverse("accounts:password_change"),
                reverse("accounts:logout"),
                reverse("admin:logout"),
            }
            static_prefix = "/static/"
            if request.path not in allowed and not request.path.startswith(static_prefix):
                if request.path.startswith("/api/"):
                    from django.http import JsonResponse

                    return JsonResponse(
                        {"detail": "Password change required before anything else."}, status=403
                    )
                return redirect("accounts:password_change")
        return self.get_response(request)
