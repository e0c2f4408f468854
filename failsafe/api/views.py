"""The API door: every view validates its input, calls one service, renders the result.

Refusals raised by the services reach `failsafe.api.errors.exception_handler`, which turns
them into {"detail": ...} with the right status code.
"""

from collections.abc import Mapping

from django.contrib.auth import authenticate
from django.http import JsonResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from knox import views as knox_views
from rest_framework import status
from rest_framework.exceptions import ParseError, PermissionDenied
from rest_framework.parsers import JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.middleware import PASSWORD_CHANGE_REQUIRED
from accounts.permissions import IsSuperAdmin

from .. import services
from ..models import AuditEvent
from ..terminal import TerminalReply, run_command
from ..web import client_ip, login_lockout_response, request_actor
from . import serializers as api
from .authentication import AUTHENTICATION_CLASSES, TokenAuthentication
from .errors import status_for
from .permissions import PasswordChangeNotRequired

WRONG_CREDENTIALS = "Unable to log in with the username and password given."


def not_found(request, *args, **kwargs):
    return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)


# The entry points /api/ lists: (name, URL name, what it is for). {id} stands for a backup id.
ENTRY_POINTS = [
    ("token", "api:token", "POST username and password for a token"),
    ("logout", "api:logout", "POST: revoke this token"),
    ("logoutall", "api:logoutall", "POST: revoke all your tokens"),
    ("status", "api:status", "GET: the failsafe's status"),
    ("backups", "api:backups", "GET: list backups; POST: take one"),
    ("trigger", "api:trigger", "POST the passkey: emergency backup and investigation"),
    ("password", "api:password", "PUT: set or change the failsafe password"),
    ("audit", "api:audit", "GET: the audit trail"),
    ("drills", "api:drills", "GET: restore drills; POST: run one (backup_id optional)"),
    ("retention", "api:retention", "GET: every backup as retention would keep or forget it"),
    ("terminal", "api:terminal", "POST one line of the terminal language"),
    ("schema", "api:schema", "OpenAPI 3 schema (signed-in users)"),
    ("docs", "api:docs", "Swagger UI (signed-in users)"),
]
BACKUP_ENTRY_POINTS = [
    ("backup", "api:backup", "GET: one backup"),
    ("mark_safe", "api:backup-mark-safe", "POST the failsafe password: mark it safe"),
    ("compare", "api:backup-compare", "GET: compare it (or live) with the last safe one"),
    ("investigation", "api:backup-investigation", "GET: the investigation kept with it"),
    ("restore", "api:backup-restore", "POST: restore it (dry_run first)"),
    ("pin", "api:backup-pin", "POST: pin it (retention never forgets it), or unpin it"),
    ("acknowledge", "api:backup-acknowledge", "POST: acknowledge an emergency backup"),
]


class ApiRootView(APIView):
    """An index of the API's entry points: what a client finds at /api/."""

    authentication_classes = ()
    permission_classes = (AllowAny,)

    @extend_schema(exclude=True)
    def get(self, request):
        entries = {
            name: {"url": reverse(url_name), "what": what}
            for name, url_name, what in ENTRY_POINTS
        }
        entries |= {
            name: {
                "url": reverse(url_name, kwargs={"backup_id": "ID"}).replace("ID", "{id}"),
                "what": what,
            }
            for name, url_name, what in BACKUP_ENTRY_POINTS
        }
        return Response(
            {
                "name": "RaOS Failsafe API",
                "authentication": "Authorization: Token <token> (from token), or a session",
                "entry_points": entries,
            }
        )


# --- how errors appear in the schema -------------------------------------------------


def _detail(description: str) -> OpenApiResponse:
    return OpenApiResponse(api.DetailSerializer, description=description)


BAD_REQUEST = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description='Malformed request: {"detail": ...}, or field names with their errors.',
)
UNAUTHENTICATED = _detail("No valid token or session.")
FORBIDDEN = _detail("Not a SuperAdmin, or the password must be changed first.")
COMMON_ERRORS = {400: BAD_REQUEST, 401: UNAUTHENTICATED, 403: FORBIDDEN}
NOT_FOUND = {404: _detail("No backup has that id, or the id is malformed.")}
CONFLICT = {409: _detail("The backup or the server is not in a state that allows it.")}
SECRET_ERRORS = {
    403: _detail("Not a SuperAdmin, or the secret is wrong (the attempt is audited)."),
    409: _detail("The failsafe password is not set, or no passkey was issued."),
    429: _detail("Locked out after too many wrong secrets; try again later."),
}

BACKUP_ID = OpenApiParameter(
    "backup_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="A backup id."
)


# --- authentication ------------------------------------------------------------------


class LoginRateThrottle(ScopedRateThrottle):
    """Counts per client as every door finds it (web.client_ip), never per the
    X-Forwarded-For a client writes itself."""

    def get_ident(self, request):
        return client_ip(request) or ""


class TokenLoginView(knox_views.LoginView):
    """Exchange a username and password for a token; knox stores only its hash.

    Password guessing meets the login lockouts of every door (django-axes, through
    authenticate) and, as an extra layer, a few tries a minute per address (API_LOGIN_RATE).
    """

    authentication_classes = ()
    permission_classes = (AllowAny,)
    parser_classes = (JSONParser,)
    throttle_classes = (LoginRateThrottle,)
    throttle_scope = "login"

    @extend_schema(
        tags=["auth"],
        request=api.TokenRequestSerializer,
        responses={
            200: api.TokenSerializer,
            429: _detail(
                "Locked out after too many failed logins for this username or from this "
                "address, or too many attempts from this address; wait and retry."
            ),
            400: _detail("Wrong username or password, or a malformed body."),
            403: _detail("The user must change the password first, by logging in to the site."),
        },
        auth=[],
    )
    def post(self, request, format=None):
        credentials = api.TokenRequestSerializer(data=request.data)
        credentials.is_valid(raise_exception=True)
        user = authenticate(request, **credentials.validated_data)
        if user is None:
            if getattr(request, "axes_locked_out", False):
                # Refused unchecked by the lockout, or this failure reached the limit.
                return login_lockout_response(request)
            return Response({"detail": WRONG_CREDENTIALS}, status=status.HTTP_400_BAD_REQUEST)
        if user.must_change_password:
            raise PermissionDenied(PASSWORD_CHANGE_REQUIRED)
        request.user = user
        return super().post(request, format=format)


class TokenLogoutView(knox_views.LogoutView):
    """Revoke the token this request carries."""

    authentication_classes = (TokenAuthentication,)

    @extend_schema(tags=["auth"], request=None, responses={204: None, 401: UNAUTHENTICATED})
    def post(self, request, format=None):
        return super().post(request, format=format)


class TokenLogoutAllView(knox_views.LogoutAllView):
    """Revoke every token of the user this request's token belongs to."""

    authentication_classes = (TokenAuthentication,)

    @extend_schema(tags=["auth"], request=None, responses={204: None, 401: UNAUTHENTICATED})
    def post(self, request, format=None):
        return super().post(request, format=format)


# --- the failsafe --------------------------------------------------------------------


class FailsafeView(APIView):
    authentication_classes = AUTHENTICATION_CLASSES
    permission_classes = (IsSuperAdmin, PasswordChangeNotRequired)
    # JSON in, JSON out: one way to send a body, and one meaning for a missing field.
    parser_classes = (JSONParser,)

    @property
    def actor(self) -> services.Actor:
        return request_actor(self.request, AuditEvent.Source.API)

    @staticmethod
    def validated(serializer_class, data) -> dict:
        if not isinstance(data, Mapping):
            # null, a list, a bare string: none of them is a request.
            raise ParseError("Malformed request: the body must be a JSON object")
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def validated_query(self, serializer_class) -> dict:
        # A plain dict, not the QueryDict: DRF reads a boolean missing from form-like input
        # as false, which would turn "no ?safe= filter" into "?safe=false".
        return self.validated(serializer_class, self.request.query_params.dict())


class PaginatedView(FailsafeView):
    pagination_class = api_settings.DEFAULT_PAGINATION_CLASS

    def paginated(self, queryset, serializer_class) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, self.request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True).data)


class StatusView(FailsafeView):
    @extend_schema(tags=["failsafe"], responses={200: api.StatusSerializer, **COMMON_ERRORS})
    def get(self, request):
        return Response(api.StatusSerializer(services.status(actor=self.actor)).data)


class BackupListView(PaginatedView):
    @extend_schema(
        tags=["failsafe"],
        summary="List backups, newest first",
        parameters=[api.BackupFilterSerializer],
        responses={200: api.BackupSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request):
        filters = self.validated_query(api.BackupFilterSerializer)
        backups = services.list_backups(
            actor=self.actor, backup_type=filters.get("type"), safe=filters.get("safe")
        )
        return self.paginated(backups, api.BackupSerializer)

    @extend_schema(
        tags=["failsafe"],
        summary="Take a backup now",
        request=api.BackupCreateSerializer,
        responses={201: api.BackupSerializer, **COMMON_ERRORS, **CONFLICT},
    )
    def post(self, request):
        data = self.validated(api.BackupCreateSerializer, request.data)
        backup = services.create_backup(
            actor=self.actor, backup_type=data["type"], reason=data["reason"]
        )
        return Response(api.BackupSerializer(backup).data, status=status.HTTP_201_CREATED)


class BackupDetailView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        parameters=[BACKUP_ID],
        responses={200: api.BackupSerializer, **COMMON_ERRORS, **NOT_FOUND},
    )
    def get(self, request, backup_id):
        return Response(api.BackupSerializer(services.get_backup(backup_id)).data)


class MarkSafeView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="Mark a backup as safe: the baseline of comparisons",
        parameters=[BACKUP_ID],
        request=api.MarkSafeRequestSerializer,
        responses={
            200: api.BackupSerializer,
            **COMMON_ERRORS,
            **NOT_FOUND,
            **SECRET_ERRORS,
            409: _detail(
                "The backup is unusable, its comparison with the last safe backup has issues "
                "not accepted, or the failsafe password is not set."
            ),
            422: _detail("The backup's archive is damaged."),
        },
    )
    def post(self, request, backup_id):
        data = self.validated(api.MarkSafeRequestSerializer, request.data)
        backup = services.mark_safe(
            actor=self.actor,
            backup_id=backup_id,
            password=data.get("failsafe_password") or None,
            accept_issues=data["accept_issues"],
        )
        return Response(api.BackupSerializer(backup).data)


class CompareView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="Compare a backup (or live) against another backup, live, or the last safe one",
        parameters=[
            OpenApiParameter(
                "backup_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="A backup id, or `live` for the live database.",
            ),
            api.CompareQuerySerializer,
        ],
        responses={
            200: api.ComparisonSerializer,
            **COMMON_ERRORS,
            **NOT_FOUND,
            **CONFLICT,
            422: _detail("An archive is damaged."),
        },
    )
    def get(self, request, backup_id):
        against = self.validated_query(api.CompareQuerySerializer).get("against")
        result = services.compare(actor=self.actor, backup_id=backup_id, against=against)
        return Response(api.ComparisonSerializer(result).data)


class InvestigationView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="The investigation kept with an emergency backup, as it was when taken",
        parameters=[BACKUP_ID],
        responses={
            200: api.InvestigationSerializer,
            **COMMON_ERRORS,
            404: _detail(
                "No backup has that id, the id is malformed, or the backup keeps no "
                "investigation (only emergency backups do)."
            ),
        },
    )
    def get(self, request, backup_id):
        report = services.stored_investigation(actor=self.actor, backup_id=backup_id)
        return Response(api.InvestigationSerializer(report).data)


class RestoreView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="Restore the database from a backup, all or nothing, or only selected records",
        parameters=[BACKUP_ID],
        request=api.RestoreRequestSerializer,
        responses={
            200: api.RestoreResultSerializer,
            **COMMON_ERRORS,
            **NOT_FOUND,
            **SECRET_ERRORS,
            409: _detail(
                "Failsafe password not set, backup unusable, schema mismatch, rows outside "
                "the backup would be deleted, a selected record conflicts (changed again "
                "after the damage, or a unique value taken), or another backup or restore "
                "is running."
            ),
            422: _detail("The backup's archive is damaged."),
        },
    )
    def post(self, request, backup_id):
        data = self.validated(api.RestoreRequestSerializer, request.data)
        result = services.restore(
            actor=self.actor,
            backup_id=backup_id,
            password=data.get("failsafe_password") or None,
            dry_run=data["dry_run"],
            allow_cascade=data["allow_cascade"],
            without_pre_restore_backup=data["without_pre_restore_backup"],
            confirmation=data["confirm"],
            only=data.get("only"),
            damage=data.get("damage"),
            undo_actor=data.get("undo_actor"),
            since=data.get("since"),
            at=data.get("at"),
            accept_conflicts=data["accept_conflicts"],
            force_password_reset=data["force_password_reset"],
        )
        return Response(api.RestoreResultSerializer(result).data)


class PinView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="Pin a backup so that retention never forgets it, or unpin it",
        parameters=[BACKUP_ID],
        request=api.PinRequestSerializer,
        responses={200: api.BackupSerializer, **COMMON_ERRORS, **NOT_FOUND, **SECRET_ERRORS},
    )
    def post(self, request, backup_id):
        data = self.validated(api.PinRequestSerializer, request.data)
        backup = services.pin(
            actor=self.actor,
            backup_id=backup_id,
            pinned=data["pinned"],
            password=data.get("failsafe_password") or None,
        )
        return Response(api.BackupSerializer(backup).data)


class AcknowledgeView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="Acknowledge an emergency backup as reviewed: retention may then forget it",
        parameters=[BACKUP_ID],
        request=api.AcknowledgeRequestSerializer,
        responses={200: api.BackupSerializer, **COMMON_ERRORS, **NOT_FOUND, **SECRET_ERRORS},
    )
    def post(self, request, backup_id):
        data = self.validated(api.AcknowledgeRequestSerializer, request.data)
        backup = services.acknowledge(
            actor=self.actor,
            backup_id=backup_id,
            password=data.get("failsafe_password") or None,
        )
        return Response(api.BackupSerializer(backup).data)


class RetentionView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="What retention would keep and forget now, and why (a dry run)",
        responses={
            200: api.RetentionPlanSerializer,
            **COMMON_ERRORS,
            500: _detail("The retention settings are not valid."),
        },
    )
    def get(self, request):
        result = services.prune(actor=self.actor, dry_run=True)
        return Response(api.RetentionPlanSerializer(result).data)


class DrillListView(PaginatedView):
    @extend_schema(
        tags=["failsafe"],
        summary="Restore drills, newest first",
        responses={200: api.DrillSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request):
        return self.paginated(services.list_drills(actor=self.actor), api.DrillSerializer)

    @extend_schema(
        tags=["failsafe"],
        summary="Run a restore drill: restore a backup into a scratch database and check it",
        description=(
            "Restores the backup named (default: the newest safe one) into a scratch "
            "database, never the live one, and checks every captured model's rows against "
            "its archive. The drill is the result: `outcome` is PASSED or FAILED (with "
            "`error`), and a failed drill is also notified."
        ),
        request=api.DrillRequestSerializer,
        responses={
            201: api.DrillSerializer,
            **COMMON_ERRORS,
            404: _detail("No backup has that id, the id is malformed, or no backup is safe."),
            409: _detail("The backup did not complete, or another drill is running."),
        },
    )
    def post(self, request):
        data = self.validated(api.DrillRequestSerializer, request.data)
        drill = services.run_drill(actor=self.actor, backup_id=data.get("backup_id") or None)
        return Response(api.DrillSerializer(drill).data, status=status.HTTP_201_CREATED)


class TriggerView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="Emergency: back up now, compare with the last safe backup, investigate",
        request=api.TriggerRequestSerializer,
        responses={201: api.TriggerResultSerializer, **COMMON_ERRORS, **SECRET_ERRORS},
    )
    def post(self, request):
        data = self.validated(api.TriggerRequestSerializer, request.data)
        result = services.trigger(actor=self.actor, passkey=data["passkey"], reason=data["reason"])
        return Response(api.TriggerResultSerializer(result).data, status=status.HTTP_201_CREATED)


class PasswordView(FailsafeView):
    @extend_schema(
        tags=["failsafe"],
        summary="Set the failsafe password, or change it with the current one",
        request=api.PasswordRequestSerializer,
        responses={200: api.PasswordResultSerializer, **COMMON_ERRORS, **SECRET_ERRORS},
    )
    def put(self, request):
        data = self.validated(api.PasswordRequestSerializer, request.data)
        result = services.set_failsafe_password(
            actor=self.actor,
            password=data["password"],
            current_password=data.get("current_password") or None,
        )
        return Response(api.PasswordResultSerializer(result).data)


class AuditView(PaginatedView):
    # Query parameter -> AuditEvent field.
    FILTERS = {
        "action": "action",
        "outcome": "outcome",
        "actor": "actor_username",
        "source": "source",
    }

    @extend_schema(
        tags=["failsafe"],
        summary="The audit trail, newest first",
        parameters=[api.AuditFilterSerializer],
        responses={200: api.AuditEventSerializer(many=True), **COMMON_ERRORS},
    )
    def get(self, request):
        filters = self.validated_query(api.AuditFilterSerializer)
        events = services.audit_events(actor=self.actor).filter(
            **{self.FILTERS[name]: value for name, value in filters.items()}
        )
        return self.paginated(events, api.AuditEventSerializer)


def terminal_status(reply: TerminalReply) -> int:
    """The terminal's reply kinds as status codes, agreeing with the other endpoints."""
    if reply.kind == "ok":
        return status.HTTP_200_OK
    if reply.kind == "usage":
        return status.HTTP_400_BAD_REQUEST
    if reply.kind == "locked":
        return status.HTTP_429_TOO_MANY_REQUESTS
    fallback = status.HTTP_403_FORBIDDEN if reply.kind == "denied" else status.HTTP_400_BAD_REQUEST
    return status_for(reply.error) or fallback


class TerminalView(FailsafeView):
    SECRETS = ("failsafe_password", "password", "current_password", "passkey")

    @extend_schema(
        tags=["failsafe"],
        summary="Run one line of the failsafe's terminal language",
        description=(
            "The response body is the terminal language's JSON object itself (PascalCase), "
            "exactly as `manage.py failsafe_terminal -c` prints it. A refusal is "
            '`{"Success": false, "Message": "...", "Error": "..."}` (and `Action` where the '
            "original FailsafeModule has one) with the status code of the same refusal "
            "elsewhere in the API. Secrets the command asks for are given in the body: "
            "`failsafe_password` for `failsafe restore` and `failsafe marksafe` (never on "
            "the line). A refusal never quotes the line beyond its command words, backup id "
            "and known flags."
        ),
        request=api.TerminalRequestSerializer,
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT, description="The terminal language's JSON answer."
            ),
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="Empty, oversized (over 1000 characters) or unknown command, "
                "a missing secret, or a malformed body.",
            ),
            401: UNAUTHENTICATED,
            403: OpenApiResponse(OpenApiTypes.OBJECT, description="Not allowed, wrong secret."),
            404: OpenApiResponse(
                OpenApiTypes.OBJECT, description="No such backup, or a malformed backup id."
            ),
            409: OpenApiResponse(OpenApiTypes.OBJECT, description="Not possible now."),
            429: OpenApiResponse(OpenApiTypes.OBJECT, description="Locked out."),
        },
    )
    def post(self, request):
        data = self.validated(api.TerminalRequestSerializer, request.data)
        secrets = {name: data[name] for name in self.SECRETS if data.get(name)}
        reply = run_command(
            data["command"],
            actor=self.actor,
            ask_secret=lambda name, prompt: secrets.get(name),
        )
        return Response(reply.payload, status=terminal_status(reply))
