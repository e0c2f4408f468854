from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from .models import User
from .permissions import is_superadmin


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "role", "is_active", "must_change_password", "last_login")
    list_filter = ("role", "is_active", "must_change_password")
    readonly_fields = ("is_staff", "is_superuser", "last_login", "date_joined")
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        (
            "Role",
            {"fields": ("role", "must_change_password", "is_active", "is_staff", "is_superuser")},
        ),
        ("Permissions", {"fields": ("groups", "user_permissions")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "role", "password1", "password2")}),
    )


class SuperAdminOnlyMixin:
    """For a ModelAdmin (another app's, too): its pages are for active SuperAdmins only,
    whatever Django permissions a staff account holds; a SuperAdmin keeps the rights the
    admin class gives."""

    def has_module_permission(self, request):
        return is_superadmin(request.user) and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return is_superadmin(request.user) and super().has_view_permission(request, obj)

    def has_add_permission(self, request, *args, **kwargs):
        return is_superadmin(request.user) and super().has_add_permission(
            request, *args, **kwargs
        )

    def has_change_permission(self, request, obj=None):
        return is_superadmin(request.user) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return is_superadmin(request.user) and super().has_delete_permission(request, obj)


class SuperAdminReadOnlyAdmin(admin.ModelAdmin):
    """Visible to SuperAdmins only, and never added, changed or deleted through the admin."""

    def has_module_permission(self, request):
        return is_superadmin(request.user)

    def has_view_permission(self, request, obj=None):
        return is_superadmin(request.user)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
