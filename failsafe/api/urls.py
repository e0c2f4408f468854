from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views

app_name = "api"

# Backup ids are matched as any string so that a malformed one gets the API's JSON 404
# (from the service) rather than Django's HTML page for an unknown URL.
urlpatterns = [
    path("", views.ApiRootView.as_view(), name="root"),
    path("auth/token/", views.TokenLoginView.as_view(), name="token"),
    path("auth/logout/", views.TokenLogoutView.as_view(), name="logout"),
    path("auth/logoutall/", views.TokenLogoutAllView.as_view(), name="logoutall"),
    path("failsafe/status/", views.StatusView.as_view(), name="status"),
    path("failsafe/backups/", views.BackupListView.as_view(), name="backups"),
    path("failsafe/backups/<str:backup_id>/", views.BackupDetailView.as_view(), name="backup"),
    path(
        "failsafe/backups/<str:backup_id>/mark-safe/",
        views.MarkSafeView.as_view(),
        name="backup-mark-safe",
    ),
    path(
        "failsafe/backups/<str:backup_id>/compare/",
        views.CompareView.as_view(),
        name="backup-compare",
    ),
    path(
        "failsafe/backups/<str:backup_id>/investigation/",
        views.InvestigationView.as_view(),
        name="backup-investigation",
    ),
    path(
        "failsafe/backups/<str:backup_id>/restore/",
        views.RestoreView.as_view(),
        name="backup-restore",
    ),
    path(
        "failsafe/backups/<str:backup_id>/pin/",
        views.PinView.as_view(),
        name="backup-pin",
    ),
    path(
        "failsafe/backups/<str:backup_id>/acknowledge/",
        views.AcknowledgeView.as_view(),
        name="backup-acknowledge",
    ),
    path("failsafe/retention/", views.RetentionView.as_view(), name="retention"),
    path("failsafe/trigger/", views.TriggerView.as_view(), name="trigger"),
    path("failsafe/password/", views.PasswordView.as_view(), name="password"),
    path("failsafe/audit/", views.AuditView.as_view(), name="audit"),
    path("failsafe/drills/", views.DrillListView.as_view(), name="drills"),
    path("failsafe/terminal/", views.TerminalView.as_view(), name="terminal"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    # Last: any other /api/ address is a JSON 404, not Django's HTML page (and not a
    # slash-appending redirect, which a POST cannot follow).
    re_path(r"", views.not_found),
]
