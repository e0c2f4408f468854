"""A restore ends API access too: a token won with a password the restore rolled back dies."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from knox.models import AuthToken

from failsafe import services
from tests.factories import FAILSAFE_PASSWORD

from .conftest import token_client

User = get_user_model()
ATTACKERS_PASSWORD = "the attacker chose this one"


@pytest.mark.django_db
def test_a_token_won_with_a_rolled_back_password_is_refused_after_the_restore(
    api, actor, armed, population
):
    safe = services.create_backup(actor=actor, reason="known good")
    # The attacker resets alice's password and logs in to the API with it.
    alice = User.objects.get(username="alice")
    alice.set_password(ATTACKERS_PASSWORD)
    alice.save()
    attacker = token_client()
    login = attacker.post(
        reverse("api:token"), {"username": "alice", "password": ATTACKERS_PASSWORD}, format="json"
    )
    assert login.status_code == 200
    attacker.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")
    # A plain user's token: authenticated (403, not 401) until the restore.
    assert attacker.get(reverse("api:status")).status_code == 403

    restored = api.post(
        reverse("api:backup-restore", kwargs={"backup_id": safe.id}),
        {"failsafe_password": FAILSAFE_PASSWORD},
        format="json",
    )

    assert restored.status_code == 200
    body = restored.json()
    # The attacker's token and the SuperAdmin's own that asked for the restore.
    assert body["tokens_revoked"] == 2
    assert "sessions and API tokens were ended" in " ".join(body["next_steps"])
    assert not AuthToken.objects.exists()
    assert attacker.get(reverse("api:status")).status_code == 401
    assert api.get(reverse("api:status")).status_code == 401
    # alice's own password is back; the attacker's no longer logs in.
    relogin = token_client().post(
        reverse("api:token"), {"username": "alice", "password": ATTACKERS_PASSWORD}, format="json"
    )
    assert relogin.status_code in (400, 403)


@pytest.mark.django_db
def test_the_commands_say_how_many_tokens_the_restore_revoked(actor, armed, population):
    safe = services.create_backup(actor=actor)
    token_client(User.objects.get(username="bob"))
    result = services.restore(actor=actor, backup_id=safe.id, password=FAILSAFE_PASSWORD)
    assert result.tokens_revoked == 1
    assert AuthToken.objects.count() == 0


@pytest.mark.django_db
def test_refusals_name_the_api_fields_not_the_command_line_flags(api, actor, armed, population):
    from django.contrib.admin.models import ADDITION, LogEntry
    from django.contrib.contenttypes.models import ContentType

    from tests.factories import UserFactory

    safe = services.create_backup(actor=actor)
    services.mark_safe(actor=actor, backup_id=safe.id, password=FAILSAFE_PASSWORD)
    mallory = UserFactory(username="mallory")
    LogEntry.objects.create(
        user=mallory,
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(mallory.pk),
        object_repr="mallory",
        action_flag=ADDITION,
    )
    User.objects.filter(username__in=["dave", "erin"]).delete()  # 6 users, then 5
    damaged = services.create_backup(actor=actor)

    cascade = api.post(
        reverse("api:backup-restore", kwargs={"backup_id": safe.id}),
        {"failsafe_password": FAILSAFE_PASSWORD},
        format="json",
    )
    assert cascade.status_code == 409, cascade.json()
    assert '"allow_cascade": true' in cascade.json()["detail"]
    assert "--allow-cascade" not in cascade.json()["detail"]

    issues = api.post(
        reverse("api:backup-mark-safe", kwargs={"backup_id": damaged.id}),
        {"failsafe_password": FAILSAFE_PASSWORD},
        format="json",
    )
    assert issues.status_code == 409
    assert '"accept_issues": true' in issues.json()["detail"]
    assert "--accept-issues" not in issues.json()["detail"]
