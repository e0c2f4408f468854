"""What changes the failsafe's trust needs the failsafe password, like a restore does."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError

from failsafe import lockout, services
from failsafe.exceptions import UnacceptedIssues
from failsafe.models import AuditEvent, Backup
from licensing.exceptions import InvalidFailsafePassword
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run

User = get_user_model()
WRONG = "not the failsafe password"


def last_event(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-seq").first()


@pytest.fixture
def backup(actor, armed, population, keyset):
    return services.create_backup(actor=actor)


@pytest.mark.django_db
@pytest.mark.parametrize("password", [None, "", WRONG])
def test_mark_safe_needs_the_failsafe_password(actor, backup, password):
    with pytest.raises(InvalidFailsafePassword):
        services.mark_safe(actor=actor, backup_id=backup.id, password=password)
    assert not Backup.objects.get(pk=backup.pk).is_safe
    assert last_event("failsafe.marksafe").outcome == "DENIED"


@pytest.mark.django_db
def test_delete_gc_and_unlock_need_the_failsafe_password(actor, backup):
    with pytest.raises(InvalidFailsafePassword):
        services.delete_backup(actor=actor, backup_id=backup.id, password=WRONG)
    assert Backup.objects.filter(pk=backup.pk).exists()
    with pytest.raises(InvalidFailsafePassword):
        services.collect_garbage(actor=actor, password=WRONG)
    lock_out("bob")
    with pytest.raises(InvalidFailsafePassword):
        services.unlock(actor=actor, account="bob", password=WRONG)
    assert lockout.lockout_status(username="bob")
    for action in ("failsafe.delete", "failsafe.gc", "failsafe.unlock"):
        assert last_event(action).outcome == "DENIED"
    # A dry run of the collector deletes nothing and needs no password.
    assert services.collect_garbage(actor=actor, dry_run=True).dry_run


def lock_out(username: str) -> None:
    """Five wrong failsafe passwords for a restore, as `username` would type them."""
    for _ in range(5):
        with (
            pytest.raises(InvalidFailsafePassword),
            lockout.attempt(username=username, action="failsafe.restore"),
        ):
            raise InvalidFailsafePassword("Invalid failsafe password")


@pytest.mark.django_db
def test_wrong_passwords_for_trust_operations_lock_out_like_a_restore(actor, backup):
    for _ in range(5):
        with pytest.raises(InvalidFailsafePassword):
            services.mark_safe(actor=actor, backup_id=backup.id, password=WRONG)
    with pytest.raises(Exception, match="Too many failed attempts"):
        services.mark_safe(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)
    assert not Backup.objects.get(pk=backup.pk).is_safe


@pytest.mark.django_db
def test_marking_safe_a_backup_with_issues_needs_them_accepted(actor, backup):
    services.mark_safe(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)
    User.objects.filter(username__in=["dave", "erin"]).delete()
    damaged = services.create_backup(actor=actor, reason="after the incident")

    with pytest.raises(UnacceptedIssues, match=r"User count decreased: 6 -> 4.*--accept-issues"):
        services.mark_safe(actor=actor, backup_id=damaged.id, password=FAILSAFE_PASSWORD)
    assert not Backup.objects.get(pk=damaged.pk).is_safe
    assert services.last_safe_backup() == backup

    services.mark_safe(
        actor=actor, backup_id=damaged.id, password=FAILSAFE_PASSWORD, accept_issues=True
    )
    assert services.last_safe_backup() == damaged
    event = last_event("failsafe.marksafe")
    assert event.outcome == "SUCCESS"
    assert "User count decreased: 6 -> 4" in event.details["accepted_issues"]


@pytest.mark.django_db
def test_the_commands_read_the_password_from_stdin_and_refuse_without_it(actor, backup):
    with pytest.raises(CommandError, match="Invalid failsafe password"):
        run("failsafe_marksafe", str(backup.id), "--password-stdin", stdin=WRONG)
    with pytest.raises(CommandError, match="Invalid failsafe password"):
        run("failsafe_delete", str(backup.id), "--yes", "--password-stdin", stdin=WRONG)
    with pytest.raises(CommandError, match="Invalid failsafe password"):
        run("failsafe_gc", "--password-stdin", stdin=WRONG)
    with pytest.raises(CommandError, match="Invalid failsafe password"):
        run("failsafe_unlock", "--password-stdin", stdin=WRONG)
    assert Backup.objects.filter(pk=backup.pk, is_safe=False).exists()

    User.objects.filter(username="dave").delete()
    damaged = services.create_backup(actor=actor)
    run("failsafe_marksafe", str(backup.id), "--password-stdin", stdin=FAILSAFE_PASSWORD)
    with pytest.raises(CommandError, match="--accept-issues"):
        run("failsafe_marksafe", str(damaged.id), "--password-stdin", stdin=FAILSAFE_PASSWORD)
    printed = run(
        "failsafe_marksafe",
        str(damaged.id),
        "--accept-issues",
        "--password-stdin",
        stdin=FAILSAFE_PASSWORD,
    )
    assert "marked as safe" in printed
