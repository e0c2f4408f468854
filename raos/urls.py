from django.contrib import admin
from django.urls import include, path

from accounts.views import PasswordChangeView
from failsafe import monitoring

admin.site.site_header = "RaOS Failsafe"
admin.site.site_title = "RaOS Failsafe"
admin.site.index_title = "Administration"

handler400 = "raos.errors.bad_request"
handler403 = "raos.errors.permission_denied"
handler500 = "raos.errors.server_error"

urlpatterns = [
    # The admin's own password-change page clears `must_change_password` too.
    path("admin/password_change/", PasswordChangeView.as_view(), name="admin_password_change"),
    path("admin/", admin.site.urls),
    path("api/", include("failsafe.api.urls")),
    # For monitors: a bearer token or an allow-listed address (MONITORING_TOKEN/_ALLOW).
    path("health/", monitoring.HealthView.as_view(), name="health"),
    path("metrics", monitoring.metrics, name="metrics"),
    path("", include("failsafe.urls")),
    path("", include("accounts.urls")),
]
