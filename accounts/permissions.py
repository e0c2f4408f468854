"""The "SuperAdmin only" rule, shared by every failsafe door."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from .models import Role


def is_superadmin(user) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and getattr(user, "role", None) == Role.SUPERADMIN
    )


class IsSuperAdmin(BasePermission):
    """DRF: refuses everyone but an active SuperAdmin.

    Anonymous callers get 401 only if an authenticator offers a challenge; with session
    authentication alone DRF answers 403 to them as to the other roles.
    """

    message = "SuperAdmin only."

    def has_permission(self, request, view):
        return is_superadmin(request.user)


def superadmin_required(view_func):
    """Function views: anonymous visitors go to the login page, other roles get 403."""

    @wraps(view_func)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_superadmin(request.user):
            raise PermissionDenied("SuperAdmin only.")
        return view_func(request, *args, **kwargs)

    return wrapper
