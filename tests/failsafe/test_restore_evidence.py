"""A restore that deletes an account also deletes its admin log: that log is evidence."""

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType

from failsafe import services
from failsafe.exceptions import CascadeRefused
from failsafe.models import AuditEvent, Backup
from tests.factories import FAILSAFE_PASSWORD, UserFactory

User = get_user_model()


@pytest.mark.django_db
def test_the_admin_log_a_restore_cascades_away_is_kept_in_the_audit_trail(
    actor, armed, population, keyset
):
    safe = services.create_backup(actor=actor, reason="known good")
    mallory = UserFactory(username="mallory")
    alice = User.objects.get(username="alice")
    for message in ("Promoted alice", "Changed alice's email"):
        LogEntry.objects.create(
            user=mallory,
            content_type=ContentType.objects.get_for_model(User),
            object_id=str(alice.pk),
            object_repr="alice",
            action_flag=CHANGE,
            change_message=message,
        )

    with pytest.raises(CascadeRefused):
        services.restore(actor=actor, backup_id=safe.id, password=FAILSAFE_PASSWORD)
    assert not AuditEvent.objects.filter(action="failsafe.restore.evidence").exists()
    # A refused restore leaves nothing behind, not even its pre-restore backup.
    assert not Backup.objects.filter(type=Backup.Type.PRE_RESTORE).exists()

    services.restore(
        actor=actor, backup_id=safe.id, password=FAILSAFE_PASSWORD, allow_cascade=True
    )

    assert not User.objects.filter(username="mallory").exists()
    assert not LogEntry.objects.filter(change_message__startswith="Promoted").exists()
    evidence = list(AuditEvent.objects.filter(action="failsafe.restore.evidence").order_by("seq"))
    assert [event.details["change"] for event in evidence] == [
        "Promoted alice",
        "Changed alice's email",
    ]
    assert {event.details["by"] for event in evidence} == {"mallory"}
    assert evidence[0].details["record"] == f"accounts.user #{alice.pk} alice"
    assert evidence[0].actor_username == "root"
    # Kept before the restore's own event, which says it succeeded.
    restore_event = AuditEvent.objects.filter(action="failsafe.restore", outcome="SUCCESS").get()
    assert restore_event.seq > evidence[-1].seq


@pytest.mark.django_db
def test_a_cascade_into_api_tokens_names_them_by_user_never_by_digest(
    actor, armed, population, keyset
):
    from knox.models import AuthToken

    safe = services.create_backup(actor=actor)
    mallory = UserFactory(username="mallory")
    token, _ = AuthToken.objects.create(user=mallory)

    preview = services.restore(actor=actor, backup_id=safe.id, dry_run=True)

    (hit,) = [hit for hit in preview.plan.cascades if hit.model == "knox.authtoken"]
    assert hit.examples[0].startswith("API token of mallory created ")
    assert token.digest not in " ".join(hit.examples)
