"""The failsafe in Django's admin: backups, the Failsafe page, the audit trail.

Everything here is for SuperAdmins only, whatever Django permissions a staff account holds.
Every operation goes through failsafe.services with an Actor of source "admin"; a refusal
becomes one admin error message, the service's own words. The templates read the result
objects themselves. Opening a page never runs an operation: comparing and verifying the
audit chain are buttons.

A restore ends every session, the acting SuperAdmin's included, so its result page is
rendered at once and the view leaves the (deleted) session alone: writing to it would make
Django answer 400.
"""

import json
from functools import wraps

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from accounts.admin import SuperAdminOnlyMixin, SuperAdminReadOnlyAdmin
from accounts.permissions import is_superadmin
from licensing.exceptions import LicensingError

from . import notify, services
from .exceptions import REFUSALS, BackupNotFound, InvalidBackupId, UnacceptedIssues
from .forms import (
    CompareForm,
    FailsafePasswordForm,
    MarkSafeForm,
    PasswordConfirmForm,
    RestoreForm,
    TriggerForm,
)
from .models import AuditEvent, Backup, Drill, Notification
from .render.text import one_line
from .web import request_actor

# As the API's: a reason is a label, not a document.
REASON_MAX_LENGTH = 1000


def admin_actor(request) -> services.Actor:
    return request_actor(request, AuditEvent.Source.ADMIN)


def superadmin_only(view):
    """For the custom admin views: admin_view lets any staff in, this lets SuperAdmins only."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not is_superadmin(request.user):
            raise PermissionDenied("SuperAdmin only.")
        return view(request, *args, **kwargs)

    return wrapper


# --- backups -------------------------------------------------------------------------


_REPLICA_MARK = {"PENDING": "…", "REPLICATED": "✓", "FAILED": "FAILED"}


@admin.register(Backup)
class BackupAdmin(SuperAdminReadOnlyAdmin):
    list_display = (
        "created",
        "short_id",
        "type",
        "short_reason",
        "created_by",
        "is_safe",
        "users",
        "licenses",
        "sessions",
        "size",
        "status",
        "replicated",
        "pinned",
        "reviewed",
        "drilled",
    )
    list_filter = ("type", "status", "is_safe", "pinned")
    search_fields = ("reason", "created_by_username")
    actions = [
        "mark_safe_action",
        "compare_action",
        "restore_action",
        "pin_action",
        "unpin_action",
        "acknowledge_action",
    ]
    fieldsets = (
        (None, {"fields": ("id", "type", "status", "reason", "error")}),
        ("When and by whom", {"fields": ("created_at", "finished_at", "created_by_username")}),
        ("Safe", {"fields": ("is_safe", "marked_safe_at", "marked_safe_by_username")}),
        ("Retention", {"fields": ("pinned", "reviewed_at", "reviewed_by_username")}),
        ("Restore drill", {"fields": ("last_drill",)}),
        ("Captured state", {"fields": ("captured_state",)}),
        (
            "Archive",
            {
                "classes": ("collapse",),
                "fields": (
                    "archive_name",
                    "size",
                    "archive_sha256",
                    "format_version",
                    "key_id",
                    "audit_head_seq",
                ),
            },
        ),
    )
    readonly_fields = (
        "id",
        "type",
        "status",
        "reason",
        "error",
        "created_at",
        "finished_at",
        "created_by_username",
        "is_safe",
        "marked_safe_at",
        "marked_safe_by_username",
        "pinned",
        "reviewed_at",
        "reviewed_by_username",
        "last_drill",
        "captured_state",
        "archive_name",
        "size",
        "archive_sha256",
        "format_version",
        "key_id",
        "audit_head_seq",
    )

    # The list's columns.

    @admin.display(description="Created", ordering="created_at")
    def created(self, backup):
        # To the second: backups taken minutes apart must be told apart.
        return timezone.localtime(backup.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="Id")
    def short_id(self, backup):
        # The first 8 digits name it at every door (a unique prefix); the whole id on hover,
        # and in the page's text for copying.
        full = str(backup.pk)
        return format_html('<code title="{}">{}</code>', full, full[:8])

    @admin.display(description="Reason")
    def short_reason(self, backup):
        reason = backup.reason or ""
        return reason if len(reason) <= 40 else reason[:39] + "…"

    @admin.display(description="By", ordering="created_by_username")
    def created_by(self, backup):
        return backup.created_by_username or "-"

    @admin.display(description="Users")
    def users(self, backup):
        return (backup.state or {}).get("TotalUsers", "-")

    @admin.display(description="Licenses")
    def licenses(self, backup):
        return (backup.state or {}).get("TotalLicenses", "-")

    @admin.display(description="Sessions")
    def sessions(self, backup):
        return (backup.state or {}).get("ActiveSessions", "-")

    @admin.display(description="Size", ordering="archive_size")
    def size(self, backup):
        return filesizeformat(backup.archive_size) if backup.is_complete else "-"

    @admin.display(description="Replicas")
    def replicated(self, backup):
        """Where the backup stands on each replica: "nas ✓, s3 FAILED: why" (a tooltip)."""
        rows = list(backup.replicas.all())
        if not rows:
            return "-"
        return format_html_join(
            ", ",
            '<span title="{}">{} {}</span>',
            (
                (row.error or row.get_status_display(), row.replica, _REPLICA_MARK[row.status])
                for row in rows
            ),
        )

    @admin.display(description="Reviewed")
    def reviewed(self, backup):
        """Emergency backups only: retention keeps one until a person has reviewed it."""
        if backup.type != Backup.Type.EMERGENCY:
            return "-"
        if backup.reviewed_at is not None:
            when = timezone.localtime(backup.reviewed_at).strftime("%Y-%m-%d %H:%M:%S")
            return format_html(
                '<span title="{}">✓ {}</span>', when, backup.reviewed_by_username or "-"
            )
        return "marked safe" if backup.is_safe else "NOT REVIEWED"

    def get_queryset(self, request):
        # Each backup's newest restore drill, for the Drilled column, in the list's query.
        newest_drill = Drill.objects.filter(backup=OuterRef("pk")).order_by("-started_at", "-pk")
        return (
            super()
            .get_queryset(request)
            .prefetch_related("replicas")
            .annotate(
                last_drill_outcome=Subquery(newest_drill.values("outcome")[:1]),
                last_drill_at=Subquery(newest_drill.values("started_at")[:1]),
            )
        )

    @admin.display(description="Drilled")
    def drilled(self, backup):
        """Its newest restore drill: ✓ when it restored whole, FAILED when not."""
        outcome = getattr(backup, "last_drill_outcome", None)
        if outcome is None:
            return "-"
        when = timezone.localtime(backup.last_drill_at).strftime("%Y-%m-%d %H:%M:%S")
        mark = "✓" if outcome == Drill.Outcome.PASSED else outcome
        return format_html('<span title="Restore drill of {}">{}</span>', when, mark)

    @admin.display(description="Last restore drill")
    def last_drill(self, backup):
        drill = backup.drills.order_by("-started_at", "-pk").first()
        if drill is None:
            return "Never drilled (manage.py failsafe_drill BACKUP_ID, or the daily drill)."
        url = reverse("admin:failsafe_drill_change", args=[drill.pk])
        return format_html('<a href="{}">{}</a>', url, drill.summary)

    @method_decorator(sensitive_post_parameters("failsafe_password"))
    def changelist_view(self, request, extra_context=None):
        # The actions that ask for the failsafe password (mark safe, unpin, acknowledge)
        # post it here: never into an error report.
        extra_context = dict(extra_context or {})
        if is_superadmin(request.user):
            # The last proven restorable backup, as the drills recorded it.
            extra_context["verified_restore"] = services.last_verified_restore()
        return super().changelist_view(request, extra_context)

    @admin.display(description="Captured state")
    def captured_state(self, backup):
        state = backup.state or {}
        if not state:
            return "Nothing captured (the backup did not complete)."
        metrics = state.get("SystemMetrics", {})
        rows = [
            ("Captured at", state.get("Timestamp")),
            ("Users", state.get("TotalUsers")),
            ("Licenses", state.get("TotalLicenses")),
            ("Active sessions", state.get("ActiveSessions")),
        ]
        rows += [(f"Rows of {label}", n) for label, n in metrics.get("ModelCounts", {}).items()]
        rows += [
            ("Database", metrics.get("DatabaseVendor")),
            ("Django", metrics.get("DjangoVersion")),
            ("Python", metrics.get("PythonVersion")),
        ]
        table = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html(
            '<table class="failsafe-state">{}</table>'
            "<details><summary>The whole captured state (JSON)</summary><pre>{}</pre></details>",
            table,
            json.dumps(state, indent=2, sort_keys=True),
        )

    # Actions.

    @admin.action(description="Mark as safe…")
    def mark_safe_action(self, request, queryset):
        """Marking safe changes what is trusted: a page asks for the failsafe password."""
        form = MarkSafeForm(request.POST if "apply" in request.POST else None)
        if not (form.is_bound and form.is_valid()):
            context = self._context(
                request,
                "Mark as safe?",
                backups=queryset.order_by("created_at"),
                form=form,
                action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            )
            template = "admin/failsafe/backup/mark_safe_confirm.html"
            return TemplateResponse(request, template, context)
        actor = admin_actor(request)
        marked = 0
        with_issues = []
        for backup in queryset.order_by("created_at"):
            try:
                services.mark_safe(
                    actor=actor,
                    backup_id=backup.pk,
                    password=form.cleaned_data["failsafe_password"],
                    accept_issues=form.cleaned_data["accept_issues"],
                )
            except UnacceptedIssues as exc:
                with_issues.append((backup, exc.issues))
            except REFUSALS as exc:
                self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
                if isinstance(exc, PermissionDenied | LicensingError):
                    break  # a wrong password is not tried again on the next backup
            else:
                marked += 1
        if marked:
            noun = "backup" if marked == 1 else "backups"
            self.message_user(request, f"{marked} {noun} marked as safe.", messages.SUCCESS)
        if with_issues:
            # Ask again, for these only, with their issues in front of the operator.
            context = self._context(
                request,
                "Accept these issues?",
                backups=[backup for backup, _ in with_issues],
                with_issues=with_issues,
                form=MarkSafeForm(),
                action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            )
            template = "admin/failsafe/backup/mark_safe_confirm.html"
            return TemplateResponse(request, template, context)
        return None

    @admin.action(description="Pin (retention never forgets them)")
    def pin_action(self, request, queryset):
        """Pinning only ever keeps more: no password asked."""
        actor = admin_actor(request)
        pinned = 0
        for backup in queryset.order_by("created_at"):
            try:
                services.pin(actor=actor, backup_id=backup.pk, pinned=True)
            except REFUSALS as exc:
                self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
            else:
                pinned += 1
        if pinned:
            self.message_user(
                request,
                f"{pinned} backup(s) pinned: retention never forgets them.",
                messages.SUCCESS,
            )

    @admin.action(description="Unpin…")
    def unpin_action(self, request, queryset):
        return self._with_failsafe_password(
            request,
            queryset,
            action="unpin_action",
            title="Unpin?",
            explanation=(
                "Unpinned, these backups are kept only while a retention rule keeps them: the "
                "next run may delete them. That needs the failsafe password."
            ),
            submit_label="Yes, unpin",
            operation=lambda actor, backup, password: services.pin(
                actor=actor, backup_id=backup.pk, pinned=False, password=password
            ),
            done="{count} backup(s) unpinned.",
        )

    @admin.action(description="Acknowledge emergency backup…")
    def acknowledge_action(self, request, queryset):
        return self._with_failsafe_password(
            request,
            queryset,
            action="acknowledge_action",
            title="Acknowledge these emergency backups?",
            explanation=(
                "Retention keeps an emergency backup until someone has reviewed it. "
                "Acknowledged, it is kept only while a retention rule keeps it. That needs "
                "the failsafe password."
            ),
            submit_label="Yes, I have reviewed them",
            operation=lambda actor, backup, password: services.acknowledge(
                actor=actor, backup_id=backup.pk, password=password
            ),
            done="{count} emergency backup(s) acknowledged.",
        )

    def _with_failsafe_password(
        self, request, queryset, *, action, title, explanation, submit_label, operation, done
    ):
        """Ask for the failsafe password on a page of its own, then run `operation` on each
        selected backup; a wrong password stops at the first backup."""
        form = PasswordConfirmForm(request.POST if "apply" in request.POST else None)
        if not (form.is_bound and form.is_valid()):
            context = self._context(
                request,
                title,
                backups=queryset.order_by("created_at"),
                form=form,
                action=action,
                explanation=explanation,
                submit_label=submit_label,
                action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            )
            template = "admin/failsafe/backup/password_confirm.html"
            return TemplateResponse(request, template, context)
        actor = admin_actor(request)
        count = 0
        for backup in queryset.order_by("created_at"):
            try:
                operation(actor, backup, form.cleaned_data["failsafe_password"])
            except REFUSALS as exc:
                self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
                if isinstance(exc, PermissionDenied | LicensingError):
                    break  # a wrong password is not tried again on the next backup
            else:
                count += 1
        if count:
            self.message_user(request, done.format(count=count), messages.SUCCESS)
        return None

    @admin.action(description="Compare with…")
    def compare_action(self, request, queryset):
        return self._one_backup_page(request, queryset, "compare")

    @admin.action(description="Restore…")
    def restore_action(self, request, queryset):
        return self._one_backup_page(request, queryset, "restore")

    def _one_backup_page(self, request, queryset, page):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one backup.", messages.ERROR)
            return None
        return HttpResponseRedirect(self._url(page, queryset.get().pk))

    # The pages of their own.

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(superadmin_only(view))

        return [
            path("failsafe/", wrap(self.failsafe_view), name="failsafe"),
            path("backup-now/", wrap(self.backup_now_view), name="failsafe_backup_now"),
            path(
                "<path:object_id>/compare/",
                wrap(self.compare_view),
                name="failsafe_backup_compare",
            ),
            path(
                "<path:object_id>/restore/",
                wrap(self.restore_view),
                name="failsafe_backup_restore",
            ),
            path(
                "<path:object_id>/investigation/",
                wrap(self.investigation_view),
                name="failsafe_backup_investigation",
            ),
        ] + super().get_urls()

    def _url(self, page: str, backup_id=None) -> str:
        if page == "failsafe":
            return reverse("admin:failsafe", current_app=self.admin_site.name)
        args = [backup_id] if backup_id is not None else []
        return reverse(f"admin:failsafe_backup_{page}", args=args, current_app=self.admin_site.name)

    def _context(self, request, title: str, **context) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "failsafe_url": self._url("failsafe"),
            **context,
        }

    def _backup(self, object_id) -> Backup:
        try:
            return services.get_backup(unquote(object_id))
        except (InvalidBackupId, BackupNotFound) as exc:
            raise Http404(one_line(exc)) from None

    def backup_now_view(self, request):
        """Take a MANUAL backup (POST), then show the list with it at the top."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        reason = (request.POST.get("reason") or "").strip()[:REASON_MAX_LENGTH]
        try:
            backup = services.create_backup(
                actor=admin_actor(request), reason=reason or "Taken from the admin"
            )
        except REFUSALS as exc:
            self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
        else:
            self.message_user(request, f"Backup created: {backup}.", messages.SUCCESS)
        changelist = reverse("admin:failsafe_backup_changelist", current_app=self.admin_site.name)
        return HttpResponseRedirect(changelist)

    def compare_view(self, request, object_id):
        backup = self._backup(object_id)
        form = CompareForm(request.GET if "against" in request.GET else None, backup=backup)
        comparison = None
        if form.is_bound and form.is_valid():
            against = form.cleaned_data["against"] or None
            try:
                result = services.compare(
                    actor=admin_actor(request), backup_id=backup.pk, against=against
                )
            except REFUSALS as exc:
                self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
            else:
                comparison = result
        context = self._context(
            request, f"Compare {backup}", backup=backup, form=form, comparison=comparison
        )
        return TemplateResponse(request, "admin/failsafe/backup/compare.html", context)

    def investigation_view(self, request, object_id):
        """The investigation kept with an emergency backup: stored data, shown as it is (a
        page view reads it and runs nothing, like the backup's own page)."""
        backup = self._backup(object_id)
        try:
            report = services.investigation_of(backup)
        except REFUSALS as exc:
            self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:failsafe_backup_change", args=[backup.pk]))
        context = self._context(request, f"Investigation of {backup}", backup=backup, report=report)
        return TemplateResponse(request, "admin/failsafe/backup/investigation.html", context)

    @method_decorator(sensitive_post_parameters())
    @method_decorator(sensitive_variables())
    def restore_view(self, request, object_id):
        """Restore the whole backup, or (with `only` items "label:key" from the records ticked
        on a comparison, carried as hidden fields) only those records."""
        backup = self._backup(object_id)
        actor = admin_actor(request)
        form = RestoreForm(request.POST or None)
        data = request.POST if request.method == "POST" else request.GET
        only = data.getlist("only") or None
        if form.is_bound and form.is_valid():
            try:
                result = services.restore(
                    actor=actor,
                    backup_id=backup.pk,
                    password=form.cleaned_data["failsafe_password"],
                    allow_cascade=form.cleaned_data["allow_cascade"],
                    without_pre_restore_backup=form.cleaned_data["without_pre_restore_backup"],
                    confirmation=form.cleaned_data["confirmation"],
                    only=only,
                    accept_conflicts=form.cleaned_data["accept_conflicts"],
                    force_password_reset=form.cleaned_data["force_password_reset"],
                )
            except REFUSALS as exc:
                self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
                form = RestoreForm()
            else:
                title = "Records restored" if result.selective else "Backup restored"
                context = self._context(request, title, backup=backup, result=result)
                return TemplateResponse(request, "admin/failsafe/backup/restore_done.html", context)
        try:
            preview = services.restore(actor=actor, backup_id=backup.pk, dry_run=True, only=only)
        except REFUSALS as exc:
            self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:failsafe_backup_change", args=[backup.pk]))
        if not preview.plan.cascades:
            del form.fields["allow_cascade"]
        if not preview.plan.conflicts:
            del form.fields["accept_conflicts"]
        if not preview.plan.accounts:
            del form.fields["force_password_reset"]
        title = f"Restore selected records of {backup}?" if only else f"Restore {backup}?"
        context = self._context(
            request,
            title,
            backup=backup,
            plan=preview.plan,
            preview=preview,
            form=form,
            only=only or [],
        )
        return TemplateResponse(request, "admin/failsafe/backup/restore_confirm.html", context)

    @method_decorator(sensitive_post_parameters())
    @method_decorator(sensitive_variables())
    def failsafe_view(self, request):
        """Set or change the failsafe password; trigger an emergency backup with the passkey."""
        actor = admin_actor(request)
        changing = services.failsafe_password_is_set()
        password_form = FailsafePasswordForm(changing=changing)
        trigger_form = TriggerForm()
        investigation = None
        if request.method == "POST" and "set_password" in request.POST:
            password_form = FailsafePasswordForm(request.POST, changing=changing)
            if password_form.is_valid():
                try:
                    result = services.set_failsafe_password(
                        actor=actor,
                        password=password_form.cleaned_data["password"],
                        current_password=password_form.cleaned_data.get("current_password"),
                    )
                except REFUSALS as exc:
                    self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
                else:
                    self.message_user(request, f"{result.message}.", messages.SUCCESS)
                    return HttpResponseRedirect(self._url("failsafe"))
            # The bound form keeps its errors; its password inputs render empty regardless.
        elif request.method == "POST" and "trigger" in request.POST:
            trigger_form = TriggerForm(request.POST)
            if trigger_form.is_valid():
                try:
                    triggered = services.trigger(
                        actor=actor,
                        passkey=trigger_form.cleaned_data["passkey"],
                        reason=trigger_form.cleaned_data["reason"],
                    )
                except REFUSALS as exc:
                    self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
                else:
                    investigation = triggered
                    trigger_form = TriggerForm()
        context = self._context(
            request,
            "Failsafe",
            password_set=services.failsafe_password_is_set(),
            last_safe_backup=services.last_safe_backup(),
            verified_restore=services.last_verified_restore(),
            password_form=password_form,
            trigger_form=trigger_form,
            investigation=investigation,
        )
        return TemplateResponse(request, "admin/failsafe/failsafe.html", context)


# --- restore drills --------------------------------------------------------------------


@admin.register(Drill)
class DrillAdmin(SuperAdminReadOnlyAdmin):
    list_display = (
        "started",
        "drilled_backup",
        "outcome",
        "rows_checked",
        "scratch_database",
        "started_by_username",
        "short_error",
    )
    list_filter = ("outcome",)
    search_fields = ("backup_label", "error")
    actions = None
    fields = (
        "drilled_backup",
        "outcome",
        "started_at",
        "finished_at",
        "started_by_username",
        "scratch_database",
        "rows_checked",
        "models_table",
        "error",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("backup")

    @admin.display(description="Started", ordering="started_at")
    def started(self, drill):
        return timezone.localtime(drill.started_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="Backup")
    def drilled_backup(self, drill):
        if drill.backup_id is None:
            return f"{drill.backup_label} (deleted)"
        url = reverse("admin:failsafe_backup_change", args=[drill.backup_id])
        return format_html('<a href="{}"><code>{}</code></a>', url, str(drill.backup_id))

    @admin.display(description="Error")
    def short_error(self, drill):
        error = drill.error or ""
        if len(error) <= 80:
            return error
        return format_html('<span title="{}">{}…</span>', error, error[:79])

    @admin.display(description="Rows per model")
    def models_table(self, drill):
        rows = [
            (
                label,
                check.get("expected"),
                check.get("found"),
                check.get("differences"),
                "; ".join(check.get("examples", [])),
            )
            for label, check in (drill.models_checked or {}).items()
        ]
        if not rows:
            return "No model was checked (the drill failed before it compared rows)."
        return format_html(
            '<table class="failsafe-detail"><thead><tr><th>Model</th><th>In the archive</th>'
            "<th>Read back</th><th>Differences</th><th>Which</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows
            ),
        )

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        if is_superadmin(request.user):
            extra_context["verified_restore"] = services.last_verified_restore()
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        drill_now = self.admin_site.admin_view(superadmin_only(self.drill_now_view))
        return [
            path("drill-now/", drill_now, name="failsafe_drill_now"),
        ] + super().get_urls()

    def drill_now_view(self, request):
        """Run a restore drill (POST) of the newest safe backup, or of the id given."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        backup_id = (request.POST.get("backup_id") or "").strip() or None
        try:
            drill = services.run_drill(actor=admin_actor(request), backup_id=backup_id)
        except REFUSALS as exc:
            self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
        else:
            level = messages.SUCCESS if drill.passed else messages.ERROR
            self.message_user(request, drill.summary, level)
        changelist = reverse("admin:failsafe_drill_changelist", current_app=self.admin_site.name)
        return HttpResponseRedirect(changelist)


# --- the audit trail -------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(SuperAdminReadOnlyAdmin):
    list_display = (
        "seq",
        "when",
        "actor_username",
        "source",
        "action",
        "target",
        "outcome",
        "ip_address",
    )
    list_display_links = ("seq",)
    list_filter = ("outcome", "action", "actor_username", "source")
    search_fields = ("target", "actor_username", "action")
    ordering = ("-seq",)
    actions = None
    readonly_fields = (
        "seq",
        "created_at",
        "actor_id",
        "actor_username",
        "source",
        "action",
        "target",
        "outcome",
        "details",
        "ip_address",
        "prev_hash",
        "hash",
    )
    fields = readonly_fields

    @admin.display(description="When", ordering="created_at")
    def when(self, event):
        return timezone.localtime(event.created_at).strftime("%Y-%m-%d %H:%M:%S")

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        if is_superadmin(request.user):
            # The last check, as the trail itself records it; checking again is a button.
            extra_context["last_check"] = services.last_audit_verification()
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        verify = self.admin_site.admin_view(superadmin_only(self.verify_chain_view))
        return [
            path("verify/", verify, name="failsafe_auditevent_verify"),
        ] + super().get_urls()

    def verify_chain_view(self, request):
        """Verify the whole chain now (POST), then show the list with the result."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            # The result is the newest verification event, which the list shows.
            services.verify_audit_chain(actor=admin_actor(request))
        except REFUSALS as exc:
            self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
        changelist = reverse(
            "admin:failsafe_auditevent_changelist", current_app=self.admin_site.name
        )
        return HttpResponseRedirect(changelist)


# --- notifications ---------------------------------------------------------------------


@admin.register(Notification)
class NotificationAdmin(SuperAdminReadOnlyAdmin):
    """What the failsafe told someone, and how each channel took it; above the list, where
    messages go (no secret, no URL credentials) and a button that sends a test message."""

    list_display = ("when", "event", "subject", "outcome", "channels")
    list_filter = ("outcome", "event")
    search_fields = ("subject", "body", "key")
    ordering = ("-created_at",)
    actions = None
    readonly_fields = ("created_at", "event", "key", "subject", "body", "outcome", "channels")
    fields = readonly_fields

    @admin.display(description="When", ordering="created_at")
    def when(self, notification):
        return timezone.localtime(notification.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="Channels")
    def channels(self, notification):
        if not notification.deliveries:
            return "—"
        return format_html_join(
            mark_safe("<br>"),
            '<span class="failsafe-delivery {}">{} {}: {}</span>',
            (
                (
                    "ok" if delivery.get("ok") else "failed",
                    delivery.get("channel", ""),
                    delivery.get("to", ""),
                    (delivery.get("note") or "sent")
                    if delivery.get("ok")
                    else f"FAILED: {delivery.get('error') or 'no reason recorded'}",
                )
                for delivery in notification.deliveries
            ),
        )

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        if is_superadmin(request.user):
            # The configuration only: reading it sends nothing and audits nothing.
            extra_context["notification_channels"] = services.notification_channels()
            extra_context["how_to_configure"] = notify.HOW_TO_CONFIGURE
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        send_test = self.admin_site.admin_view(superadmin_only(self.send_test_view))
        return [
            path("send-test/", send_test, name="failsafe_notification_test"),
        ] + super().get_urls()

    def send_test_view(self, request):
        """Send a test message to every channel (POST), then show the list with it on top."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            notification = services.send_test_notification(actor=admin_actor(request))
        except REFUSALS as exc:
            self.message_user(request, one_line(exc, door="admin"), messages.ERROR)
        else:
            undelivered = notify.undelivered(notification)
            if undelivered:
                for line in undelivered:
                    self.message_user(request, f"Test notification: {line}", messages.ERROR)
            else:
                self.message_user(
                    request, "Test notification sent to every channel.", messages.SUCCESS
                )
        changelist = reverse(
            "admin:failsafe_notification_changelist", current_app=self.admin_site.name
        )
        return HttpResponseRedirect(changelist)


# --- schedules (django-celery-beat's own pages) -------------------------------------------


def _superadmin_only_schedules() -> None:
    """django-celery-beat's pages, for SuperAdmins only: whoever edits the schedules can
    turn the backups off. Its admin classes stay as they are otherwise."""
    for model in (PeriodicTask, IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule):
        if not admin.site.is_registered(model):
            continue
        beat_admin = type(admin.site.get_model_admin(model))
        admin.site.unregister(model)
        admin.site.register(
            model, type(beat_admin.__name__, (SuperAdminOnlyMixin, beat_admin), {})
        )


_superadmin_only_schedules()
