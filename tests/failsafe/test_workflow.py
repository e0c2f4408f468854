"""The seed's workflow through the services and the terminal language, end to end."""

import json
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.sessions.backends.db import SessionStore

from failsafe import services
from failsafe.exceptions import ArchiveCorrupt, InvalidBackupId, LockedOut
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed
from failsafe.terminal import UNKNOWN_COMMAND, run_command
from licensing.exceptions import FailsafePasswordNotSet, InvalidFailsafePassword, InvalidPasskey
from licensing.models import License
from tests.factories import DEFAULT_PASSWORD, FAILSAFE_PASSWORD, LicenseFactory, UserFactory

User = get_user_model()


def term(actor, line, **secrets):
    reply = run_command(line, actor=actor, ask_secret=lambda name, prompt: secrets.get(name))
    return reply


@pytest.mark.django_db
def test_seed_workflow_through_the_terminal(actor, passkey, population):
    reply = term(actor, f"failsafe setpassword {FAILSAFE_PASSWORD}")
    assert reply.payload["Success"] is True
    assert reply.payload["Message"] == "Failsafe password set successfully"

    status = term(actor, "failsafe status").payload
    assert status["FailsafePasswordSet"] is True
    assert status["TotalBackups"] == 0 and status["SafeBackups"] == 0
    assert status["SystemStatus"] == "Operational"

    triggered = term(actor, f"help_failsafe -start {passkey}").payload
    assert triggered["Success"] is True
    assert triggered["Message"] == "Emergency failsafe backup created"
    assert triggered["Investigation"]["Status"] == "Investigating"
    assert triggered["Investigation"]["Comparison"]["Message"] == (
        "No safe backup found for comparison"
    )
    backup_id = triggered["BackupId"]

    listed = term(actor, "failsafe backups").payload
    assert listed["TotalBackups"] == 1
    assert listed["Backups"][0]["Id"] == backup_id
    assert listed["Backups"][0]["State"]["TotalUsers"] == 6

    marked = term(
        actor, f"failsafe marksafe {backup_id}", failsafe_password=FAILSAFE_PASSWORD
    ).payload
    assert marked == {
        "Success": True,
        "Message": "Backup marked as safe environment",
        "BackupId": backup_id,
        "Timestamp": seed.iso(Backup.objects.get(pk=backup_id).marked_safe_at),
    }

    # Something goes wrong: two users and a license disappear.
    User.objects.filter(username__in=["dave", "erin"]).delete()
    License.objects.filter(owner__username__in=["alice", "bob"]).delete()

    second = term(actor, f"help_failsafe -start {passkey}").payload
    comparison = second["Investigation"]["Comparison"]
    assert comparison["HasSafeBackup"] is True
    assert comparison["Message"] == "Issues detected"
    assert "User count decreased: 6 -> 4" in comparison["Issues"]
    assert "License count decreased: 4 -> 2" in comparison["Issues"]
    assert second["Investigation"]["Recommendations"][0] == (
        f"RECOMMENDED: Restore from last safe backup (ID: {backup_id})"
    )

    restored = term(actor, f"failsafe restore {backup_id}", failsafe_password=FAILSAFE_PASSWORD)
    assert restored.ok, restored.payload
    assert restored.payload["Success"] is True
    assert restored.payload["Verification"]["Identical"] is True
    assert set(User.objects.values_list("username", flat=True)) == {
        "root",
        "alice",
        "bob",
        "carol",
        "dave",
        "erin",
    }
    assert License.objects.count() == 4
    assert authenticate(username="dave", password=DEFAULT_PASSWORD) is not None


@pytest.mark.django_db
def test_restore_removes_what_came_after_and_keeps_a_pre_restore_backup(actor, armed, population):
    backup = services.create_backup(actor=actor, reason="baseline")
    intruder = UserFactory(username="intruder")
    LicenseFactory(owner=intruder, instance_name="rogue")
    User.objects.filter(username="bob").update(email="changed@example.com")

    result = services.restore(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)

    assert not User.objects.filter(username="intruder").exists()
    assert not License.objects.filter(instance_name="rogue").exists()
    assert User.objects.get(username="bob").email == "bob@example.com"
    pre = result.pre_restore_backup
    assert pre.type == Backup.Type.PRE_RESTORE and pre.status == Backup.Status.COMPLETE
    assert pre.state["TotalUsers"] == 7
    assert result.verification.identical


@pytest.mark.django_db
def test_restore_ends_every_session(actor, armed, population):
    backup = services.create_backup(actor=actor)
    session = SessionStore()
    session["x"] = 1
    session.create()
    services.restore(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)
    assert not SessionStore().exists(session.session_key)


@pytest.mark.django_db
def test_dry_run_shows_the_plan_and_writes_nothing(actor, armed, population):
    backup = services.create_backup(actor=actor)
    UserFactory(username="late")
    before = Backup.objects.count()
    result = services.restore(actor=actor, backup_id=backup.id, dry_run=True)
    plan = seed.restore(result)["Plan"]
    users = next(m for m in plan["Models"] if m["Model"] == "accounts.user")
    assert users["Delete"] == 1
    assert User.objects.filter(username="late").exists()
    assert Backup.objects.count() == before  # no pre-restore backup for a dry run


@pytest.mark.django_db
def test_wrong_failsafe_password_changes_nothing_and_is_audited(actor, armed, population):
    backup = services.create_backup(actor=actor)
    UserFactory(username="late")
    with pytest.raises(InvalidFailsafePassword):
        services.restore(actor=actor, backup_id=backup.id, password="not-the-password")
    assert User.objects.filter(username="late").exists()
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.outcome) == ("failsafe.restore", "DENIED")
    assert "not-the-password" not in json.dumps(event.details)


@pytest.mark.django_db
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_archive_is_refused_with_nothing_changed(
    actor, armed, population, settings, damage
):
    backup = services.create_backup(actor=actor)
    UserFactory(username="late")
    path = Path(settings.FAILSAFE_BACKUP_DIR) / backup.archive_name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) - 100]
    path.write_bytes(bytes(data))

    with pytest.raises(ArchiveCorrupt):
        services.restore(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)
    assert User.objects.filter(username="late").exists()
    assert not Backup.objects.filter(type=Backup.Type.PRE_RESTORE).exists()
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.outcome) == ("failsafe.restore", "FAILED")


@pytest.mark.django_db
def test_trigger_with_a_corrupt_safe_backup_still_backs_up_and_says_so(
    actor, armed, population, settings
):
    safe = services.create_backup(actor=actor)
    services.mark_safe(actor=actor, backup_id=safe.id, password=FAILSAFE_PASSWORD)
    (Path(settings.FAILSAFE_BACKUP_DIR) / safe.archive_name).write_bytes(b"garbage")

    result = services.trigger(actor=actor, passkey=armed)

    assert result.backup.status == Backup.Status.COMPLETE
    issues = seed.investigation(result.investigation)["Comparison"]["Issues"]
    assert any(issue.startswith(f"Last safe backup {safe.id} is unreadable") for issue in issues)


@pytest.mark.django_db
def test_trigger_needs_the_failsafe_password_set(actor, passkey):
    with pytest.raises(FailsafePasswordNotSet, match="^Failsafe password not set$"):
        services.trigger(actor=actor, passkey=passkey)
    assert not Backup.objects.exists()


@pytest.mark.django_db
def test_wrong_passkeys_lock_the_trigger_out(actor, armed):
    for _ in range(5):
        with pytest.raises(InvalidPasskey, match="^Invalid server license passkey$"):
            services.trigger(actor=actor, passkey="SERVER-WRONG1-WRONG2-WRONG3")
    # Locked: even the right passkey is refused, without being checked.
    with pytest.raises(LockedOut):
        services.trigger(actor=actor, passkey=armed)
    assert not Backup.objects.exists()
    outcomes = list(
        AuditEvent.objects.filter(action="failsafe.trigger").values_list("outcome", flat=True)
    )
    assert outcomes == ["DENIED"] * 6

    assert services.unlock(actor=actor, account="root", password=FAILSAFE_PASSWORD) == 1
    assert services.trigger(actor=actor, passkey=armed).backup.is_complete


@pytest.mark.django_db
def test_only_a_superadmin_may_act(passkey):
    user = UserFactory(username="mallory")
    actor = services.Actor(user=user)
    reply = term(actor, "failsafe status")
    assert not reply.ok and reply.kind == "denied"
    assert reply.payload == {
        "Success": False,
        "Message": "SuperAdmin only",
        "Error": "SuperAdmin only",
    }
    event = AuditEvent.objects.get()
    assert (event.actor_username, event.outcome) == ("mallory", "DENIED")


@pytest.mark.django_db
def test_malformed_and_unknown_ids_are_refused_clearly(actor, armed):
    with pytest.raises(InvalidBackupId, match="Invalid backup id: 'nope'"):
        services.mark_safe(actor=actor, backup_id="nope", password=FAILSAFE_PASSWORD)
    reply = term(actor, "failsafe marksafe 3f1c2b9e-0000-4000-8000-000000000000")
    assert reply.payload["Error"] == "Backup not found: 3f1c2b9e-0000-4000-8000-000000000000"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("x" * 1001, "Command too long (over 1000 characters)"),
        ("rm -rf /", UNKNOWN_COMMAND),
        ("failsafe explode", UNKNOWN_COMMAND),
    ],
)
def test_terminal_refuses_bad_lines(actor, line, message):
    reply = term(actor, line)
    assert reply.kind == "usage"
    assert reply.payload["Error"] == reply.payload["Message"] == message


@pytest.mark.django_db
def test_help_lists_the_seeds_seven_commands_backup_and_drill(actor):
    commands = [c["Command"] for c in term(actor, "help_failsafe").payload["Commands"]]
    assert commands == [
        "failsafe status",
        "failsafe setpassword <password>",
        "failsafe backups",
        "failsafe backup [reason]",
        "failsafe marksafe <backup-id>",
        "failsafe restore <backup-id>",
        "failsafe drill [backup-id]",
        "help_failsafe",
        "help_failsafe -start <passkey>",
    ]


@pytest.mark.django_db
def test_backups_record_the_audit_chain_head(actor, armed):
    services.status(actor=actor)
    status_event = AuditEvent.objects.get()
    backup = services.create_backup(actor=actor)
    assert (backup.audit_head_seq, backup.audit_head_hash) == (status_event.seq, status_event.hash)
    backup_event = AuditEvent.objects.order_by("-seq").first()
    assert (backup_event.action, backup_event.outcome) == ("failsafe.backup", "SUCCESS")
    assert backup_event.details["backup_id"] == str(backup.id)
