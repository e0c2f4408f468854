"""'SuperAdmin only', as the API (DRF permission) and the pages (decorator) apply it."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import HttpResponse
from django.urls import include, path, reverse
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from accounts.permissions import IsSuperAdmin, superadmin_required
from tests.factories import AdminFactory, SuperAdminFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


class SuperAdminApiView(APIView):
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsSuperAdmin]

    def get(self, request):
        return Response({"ok": True})


@superadmin_required
def superadmin_page(request):
    return HttpResponse("the failsafe")


urlpatterns = [
    path("page/", superadmin_page),
    path("", include("accounts.urls")),
]

CALLERS = {
    "anonymous": lambda: None,
    "user": UserFactory,
    "admin": AdminFactory,
    "inactive superadmin": lambda: SuperAdminFactory(is_active=False),
    "superadmin": SuperAdminFactory,
}


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("anonymous", 403),
        ("user", 403),
        ("admin", 403),
        ("inactive superadmin", 403),
        ("superadmin", 200),
    ],
)
def test_api_permission_lets_only_an_active_superadmin_in(caller, status):
    request = APIRequestFactory().get("/api/anything/")
    user = CALLERS[caller]()
    if user is not None:
        force_authenticate(request, user=user)
    response = SuperAdminApiView.as_view()(request)
    assert response.status_code == status


def test_api_permission_refuses_an_anonymous_request_object():
    request = APIRequestFactory().get("/api/anything/")
    request.user = AnonymousUser()
    assert IsSuperAdmin().has_permission(request, view=None) is False


def test_pages_send_anonymous_visitors_to_the_login_page(client):
    response = client.get("/page/")
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next=/page/"


@pytest.mark.parametrize("make_user", [UserFactory, AdminFactory])
def test_pages_refuse_users_and_admins(client, make_user):
    client.force_login(make_user())
    assert client.get("/page/").status_code == 403


def test_pages_open_for_a_superadmin(client):
    client.force_login(SuperAdminFactory())
    response = client.get("/page/")
    assert response.status_code == 200
    assert response.content == b"the failsafe"
