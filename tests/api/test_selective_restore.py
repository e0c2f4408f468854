"""POST backups/{id}/restore/ with only, damage, accept_conflicts and force_password_reset."""

import pytest
from django.contrib.auth import get_user_model

from accounts.models import Role
from failsafe.models import Backup
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD
from tests.selective import SIGN_UPS, attack, sign_in

User = get_user_model()

pytestmark = pytest.mark.django_db


def url(backup) -> str:
    return f"/api/failsafe/backups/{backup.pk}/restore/"


def snapshot():
    return (
        sorted(User.objects.values_list("username", "role", "must_change_password")),
        sorted(License.objects.values_list("key", "status")),
        Backup.objects.count(),
    )


def test_damage_over_the_api(api, actor, armed, population):
    attacked = attack(actor, armed)
    carol_session, carol_token = sign_in(User.objects.get(username="carol"))

    preview = api.post(url(attacked.safe), {"damage": [], "dry_run": True}, format="json")
    assert preview.status_code == 200, preview.content
    plan = preview.json()["plan"]
    assert plan["selective"] is True
    assert {"model": "accounts.user", "record": "dave", "action": "insert", "columns": []} in plan[
        "records"
    ]
    assert {a["username"] for a in plan["accounts"]} == {"carol", "dave", "erin"}

    reply = api.post(
        url(attacked.safe),
        {
            "damage": ["removed", "modified"],
            "failsafe_password": FAILSAFE_PASSWORD,
            "force_password_reset": True,
        },
        format="json",
    )
    assert reply.status_code == 200, reply.content
    body = reply.json()
    assert sorted(body["contained_accounts"]) == ["carol", "dave", "erin"]
    assert body["password_reset"] is True
    assert body["tokens_revoked"] == 1
    assert User.objects.get(username="carol").role == Role.USER
    assert User.objects.filter(username__startswith="signup").count() == SIGN_UPS
    # The SuperAdmin's own token was not touched: the client still works.
    assert (
        api.post(
            url(attacked.safe), {"dry_run": True, "only": ["accounts.user:dave"]}, format="json"
        ).status_code
        == 200
    )


def test_only_over_the_api(api, actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    reply = api.post(
        url(attacked.safe),
        {"only": ["accounts.user:dave,erin"], "failsafe_password": FAILSAFE_PASSWORD},
        format="json",
    )
    assert reply.status_code == 200, reply.content
    assert [r["record"] for r in reply.json()["plan"]["records"]] == ["dave", "erin"]
    assert User.objects.get(username="carol").role == Role.SUPERADMIN


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"only": ["accounts.nobody:x"]}, 400, "Unknown model 'accounts.nobody'"),
        ({"only": ["accounts.user:zed"]}, 400, "no record 'zed'"),
        ({"only": []}, 400, "Nothing selected"),
        ({"damage": ["stolen"]}, 400, "Unknown kind of damage 'stolen'"),
        ({"only": "accounts.user:dave"}, 400, None),
    ],
)
def test_bad_selections_are_one_line_refusals(api, actor, armed, population, body, code, words):
    attacked = attack(actor, armed, sign_ups=0)
    before = snapshot()
    reply = api.post(
        url(attacked.safe), {**body, "failsafe_password": FAILSAFE_PASSWORD}, format="json"
    )
    assert reply.status_code == code, reply.content
    if words:
        detail = reply.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
        assert words in detail
    else:  # DRF's own validation: the field named
        assert "only" in reply.json()
    assert snapshot() == before


def test_a_conflict_is_409_and_names_the_api_option(api, actor, armed, population):
    attacked = attack(actor, armed, sign_ups=0)
    carol = User.objects.get(username="carol")
    carol.first_name = "Carol"
    carol.save()
    before = snapshot()
    reply = api.post(
        url(attacked.safe), {"damage": [], "failsafe_password": FAILSAFE_PASSWORD}, format="json"
    )
    assert reply.status_code == 409
    assert "carol was changed again (first_name)" in reply.json()["detail"]
    assert '"accept_conflicts": true' in reply.json()["detail"]
    assert snapshot() == before
    accepted = api.post(
        url(attacked.safe),
        {"damage": [], "failsafe_password": FAILSAFE_PASSWORD, "accept_conflicts": True},
        format="json",
    )
    assert accepted.status_code == 200, accepted.content
