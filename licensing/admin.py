from django.contrib import admin

from accounts.admin import SuperAdminReadOnlyAdmin

from .models import License, ServerLicense


@admin.register(License)
class LicenseAdmin(admin.ModelAdmin):
    list_display = (
        "key",
        "owner",
        "license_type",
        "status",
        "max_users",
        "issued_at",
        "expires_at",
    )
    list_filter = ("status", "license_type")
    search_fields = ("key", "instance_name", "owner__username")
    readonly_fields = ("key",)
    raw_id_fields = ("owner",)


@admin.register(ServerLicense)
class ServerLicenseAdmin(SuperAdminReadOnlyAdmin):
    """Shows whether the secrets are set and when; never the hashes, and only to SuperAdmins."""

    list_display = ("__str__", "passkey_status", "failsafe_password_status")
    fields = (
        "passkey_status",
        "failsafe_password_status",
        "failsafe_password_set_by",
        "created_at",
    )
    readonly_fields = fields

    @admin.display(description="Server license passkey")
    def passkey_status(self, obj):
        if not obj.passkey_is_set:
            return "not set"
        return f"set ({obj.passkey_set_at:%Y-%m-%d %H:%M:%S} UTC)"

    @admin.display(description="Failsafe password")
    def failsafe_password_status(self, obj):
        if not obj.failsafe_password_is_set:
            return "not set"
        return f"set ({obj.failsafe_password_set_at:%Y-%m-%d %H:%M:%S} UTC)"
