"""POST backups/{id}/restore/ with undo_actor and since: one actor's changes undone."""

import pytest
from django.contrib.auth import get_user_model

from accounts.models import Role
from failsafe.models import Backup
from tests.factories import FAILSAFE_PASSWORD
from tests.undo import SIGN_UPS, two_admins_at_work

User = get_user_model()
# Each request commits, as in production (the journal's request user is transaction-local).
pytestmark = pytest.mark.django_db(transaction=True)


def url(backup) -> str:
    return f"/api/failsafe/backups/{backup.pk}/restore/"


def snapshot():
    return (
        sorted(User.objects.values_list("username", "role", "email")),
        Backup.objects.count(),
    )


def test_undo_actor_over_the_api(api, client, actor, armed, population):
    safe, since = two_admins_at_work(client, actor)
    request = {"undo_actor": "mallory", "since": since.isoformat()}

    preview = api.post(url(safe), {**request, "dry_run": True}, format="json")
    assert preview.status_code == 200, preview.content
    records = {r["record"]: r for r in preview.json()["plan"]["records"]}
    assert {"dave", "erin", "carol"} <= set(records)
    assert records["dave"]["action"] == "insert"
    assert records["dave"]["selected_by"] == "mallory" and records["dave"]["entries"] >= 1

    reply = api.post(url(safe), {**request, "failsafe_password": FAILSAFE_PASSWORD}, format="json")
    assert reply.status_code == 200, reply.content
    assert sorted(reply.json()["contained_accounts"]) == ["carol", "dave", "erin"]
    assert User.objects.filter(username__in=["dave", "erin"]).count() == 2
    assert User.objects.get(username="carol").role == Role.USER
    assert User.objects.get(username="bob").email == "bob@new.example.com"
    assert User.objects.filter(username__startswith="signup").count() == SIGN_UPS


@pytest.mark.parametrize(
    ("request_body", "detail"),
    [
        ({"undo_actor": "nobody", "since": "2020-01-01T00:00:00Z"}, "Unknown user 'nobody'"),
        ({"undo_actor": "mallory", "since": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"undo_actor": "mallory", "since": "last tuesday"}, "is not an ISO time"),
        ({"undo_actor": "mallory"}, "needs --since"),
        ({"undo_actor": "mallory", "since": "2020-01-01", "damage": []}, "Choose one selection"),
    ],
)
def test_bad_undo_actor_requests_refuse_with_one_line(
    api, client, actor, armed, population, request_body, detail
):
    safe, _since = two_admins_at_work(client, actor)
    before = snapshot()
    reply = api.post(
        url(safe), {**request_body, "failsafe_password": FAILSAFE_PASSWORD}, format="json"
    )
    assert reply.status_code == 400, reply.content
    assert detail in reply.json()["detail"]
    assert snapshot() == before
