from django.conf import settings
from rest_framework.permissions import BasePermission

from accounts.middleware import PASSWORD_CHANGE_REQUIRED


class PasswordChangeNotRequired(BasePermission):
    """Refuses a user flagged `must_change_password`, whatever the way they authenticated.

    accounts' middleware stops session users, but it runs before DRF has read the token, so
    a token holder flagged after the token was issued is stopped here.
    """

    message = PASSWORD_CHANGE_REQUIRED

    def has_permission(self, request, view):
        return not getattr(request.user, "must_change_password", False)


class SchemaAccess(BasePermission):
    """The OpenAPI schema and its browsable docs: for signed-in users, unless the
    API_SCHEMA_PUBLIC setting opens them (they describe the API, they hold no data)."""

    def has_permission(self, request, view):
        if getattr(settings, "API_SCHEMA_PUBLIC", False):
            return True
        return bool(request.user and request.user.is_authenticated)
