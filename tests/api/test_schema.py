"""The OpenAPI schema: complete, valid, served with its Swagger UI, and true to the API."""

import io

import pytest
import schemathesis
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from knox.models import AuthToken
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import DEFAULT_PASSWORD, FAILSAFE_PASSWORD

User = get_user_model()

ENDPOINTS = {
    "/api/auth/token/": {"post"},
    "/api/auth/logout/": {"post"},
    "/api/auth/logoutall/": {"post"},
    "/api/failsafe/status/": {"get"},
    "/api/failsafe/backups/": {"get", "post"},
    "/api/failsafe/backups/{backup_id}/": {"get"},
    "/api/failsafe/backups/{backup_id}/mark-safe/": {"post"},
    "/api/failsafe/backups/{backup_id}/compare/": {"get"},
    "/api/failsafe/backups/{backup_id}/restore/": {"post"},
    "/api/failsafe/backups/{backup_id}/investigation/": {"get"},
    "/api/failsafe/backups/{backup_id}/pin/": {"post"},
    "/api/failsafe/backups/{backup_id}/acknowledge/": {"post"},
    "/api/failsafe/retention/": {"get"},
    "/api/failsafe/trigger/": {"post"},
    "/api/failsafe/password/": {"put"},
    "/api/failsafe/audit/": {"get"},
    "/api/failsafe/drills/": {"get", "post"},
    "/api/failsafe/terminal/": {"post"},
}
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def openapi(db, settings):
    # schemathesis' WSGI client calls itself "localhost", and loads the schema anonymously.
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "localhost"]
    settings.API_SCHEMA_PUBLIC = True
    # The real WSGI handler closes the database connection around each request, which would
    # end the test's transaction; Django's own test client holds these signals off the same way.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def token_header(user) -> dict:
    _, token = AuthToken.objects.create(user=user)
    return {"Authorization": f"Token {token}"}


def test_the_schema_lists_every_endpoint_with_token_security(client, superadmin):
    client.force_login(superadmin)
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert {path: set(ops) - {"parameters"} for path, ops in document["paths"].items()} == ENDPOINTS
    scheme = document["components"]["securitySchemes"]["knoxApiToken"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert document["paths"]["/api/auth/token/"]["post"].get("security") in (None, [])


def test_the_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn turns any warning into an error.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=io.StringIO()
    )
    assert "/api/failsafe/trigger/" in out.read_text()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_the_schema_and_docs_need_a_signed_in_user_unless_opened(client, settings, path):
    assert client.get(path).status_code in (401, 403)
    settings.API_SCHEMA_PUBLIC = True
    assert client.get(path).status_code == 200


def test_swagger_ui_is_served_from_the_app_itself(client, superadmin):
    client.force_login(superadmin)
    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    bundle = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    assert bundle in html
    assert "/api/schema/" in html
    assert "cdn." not in html and "unpkg" not in html

    asset = client.get(bundle)
    assert asset.status_code == 200
    assert "javascript" in asset["Content-Type"]
    assert b"SwaggerUIBundle" in b"".join(asset.streaming_content)


@pytest.mark.django_db
def test_responses_match_the_schema(openapi, superadmin, passkey, population):
    auth = token_header(superadmin)

    def call(method, path, status, **case_kwargs):
        case = openapi[path][method].Case(**case_kwargs)
        response = case.call(headers=auth)
        assert response.status_code == status, response.text
        case.validate_response(response, checks=CONFORMANCE)
        return response.json() if response.content else None

    call("PUT", "/api/failsafe/password/", 200, body={"password": FAILSAFE_PASSWORD})
    call("GET", "/api/failsafe/status/", 200)
    backup = call("POST", "/api/failsafe/backups/", 201, body={"reason": "baseline"})
    by_id = {"backup_id": backup["id"]}
    call("GET", "/api/failsafe/backups/", 200, query={"type": "MANUAL"})
    call("GET", "/api/failsafe/backups/{backup_id}/", 200, path_parameters=by_id)
    call(
        "POST",
        "/api/failsafe/backups/{backup_id}/mark-safe/",
        200,
        path_parameters=by_id,
        body={"failsafe_password": FAILSAFE_PASSWORD},
    )

    # Deleted, modified and re-passworded users fill every part of the comparison; dave is
    # deleted through the admin, so the who-did-what has an entry, the rest has no actor.
    dave = User.objects.get(username="dave")
    LogEntry.objects.log_actions(user_id=superadmin.pk, queryset=[dave], action_flag=DELETION)
    dave.delete()
    User.objects.filter(username="bob").update(email="bob@elsewhere.example")
    carol = User.objects.get(username="carol")
    carol.set_password("a new password for carol")
    carol.save()

    triggered = call("POST", "/api/failsafe/trigger/", 201, body={"passkey": passkey})
    comparison = triggered["investigation"]["comparison"]
    assert comparison["details"]["accounts.user"]["modified"]["count"] == 2
    assert triggered["investigation"]["root_cause"]["by_actor"]
    assert triggered["investigation"]["root_cause"]["no_recorded_actor"]["count"]
    live = {"backup_id": "live"}
    call("GET", "/api/failsafe/backups/{backup_id}/compare/", 200, path_parameters=live)
    call(
        "GET",
        "/api/failsafe/backups/{backup_id}/compare/",
        200,
        path_parameters=by_id,
        query={"against": "live"},
    )
    restore = "/api/failsafe/backups/{backup_id}/restore/"
    call("POST", restore, 200, path_parameters=by_id, body={"dry_run": True})
    call("POST", restore, 403, path_parameters=by_id, body={"failsafe_password": "guess"})
    restored = call(
        "POST", restore, 200, path_parameters=by_id, body={"failsafe_password": FAILSAFE_PASSWORD}
    )
    assert restored["verification"]["identical"] is True
    # The restore revoked every token, this one too: the next calls need a new one.
    call("GET", "/api/failsafe/status/", 401)
    auth.update(token_header(superadmin))
    call("GET", "/api/failsafe/audit/", 200, query={"outcome": "DENIED"})
    call("POST", "/api/failsafe/terminal/", 200, body={"command": "failsafe status"})
    call("POST", "/api/failsafe/terminal/", 400, body={"command": "nonsense"})
    call("GET", "/api/failsafe/backups/{backup_id}/", 404, path_parameters={"backup_id": "nope"})

    token = call(
        "POST", "/api/auth/token/", 200, body={"username": "root", "password": DEFAULT_PASSWORD}
    )
    auth = {"Authorization": f"Token {token['token']}"}
    call("POST", "/api/auth/logout/", 204)
    auth = {}
    call("GET", "/api/failsafe/status/", 401)


def _fuzz(operation, mode, superadmin, **fixed):
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(
        max_examples=5,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        # A token per call: the logout endpoints revoke the one they are given.
        case.call_and_validate(headers=token_header(superadmin), checks=[not_a_server_error])

    run()


@pytest.mark.django_db
def test_no_generated_request_makes_the_server_fail(openapi, superadmin, armed, backup):
    """schemathesis: a few requests per operation, valid and invalid, none may end in a 5xx."""
    fuzzed = set()
    for result in openapi.get_all_operations():
        operation = result.ok()
        _fuzz(operation, GenerationMode.POSITIVE, superadmin)
        # An operation without inputs has no invalid request to make.
        if operation.body or operation.query or operation.path_parameters:
            _fuzz(operation, GenerationMode.NEGATIVE, superadmin)
        if operation.path_parameters:
            # Random ids only ever find nothing; give the bodies a real backup to act on.
            _fuzz(
                operation,
                GenerationMode.POSITIVE,
                superadmin,
                path_parameters={"backup_id": str(backup.id)},
            )
        fuzzed.add(operation.path)
    assert fuzzed == set(ENDPOINTS)
