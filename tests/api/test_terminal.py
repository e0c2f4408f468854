"""POST /api/failsafe/terminal/ answers with the seed's JSON object itself."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from failsafe import services
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed
from failsafe.terminal import COMMANDS
from tests.factories import FAILSAFE_PASSWORD

from .conftest import CLIENT_IP

UNKNOWN = "Unknown failsafe command. Type 'help' or 'help_failsafe' for available commands."

User = get_user_model()


def refused(error, *, message=None, action=None) -> dict:
    """A refusal as the terminal answers it: the original module's Success/Message (and
    Action), with our own line in Error."""
    body = {"Success": False, "Message": message or error, "Error": error}
    if action:
        body["Action"] = action
    return body


def terminal(client, command, **secrets):
    return client.post(reverse("api:terminal"), {"command": command, **secrets}, format="json")


@pytest.mark.django_db
def test_help_is_the_seeds_help_object(api):
    response = terminal(api, "help_failsafe")
    assert response.status_code == 200
    assert response.json() == seed.help(COMMANDS)


@pytest.mark.django_db
def test_status_is_exactly_what_the_service_renders(api, actor, armed):
    services.create_backup(actor=actor)
    response = terminal(api, "failsafe status")
    assert response.status_code == 200
    assert response.json() == seed.status(services.status(actor=actor))
    assert response.json()["FailsafePasswordSet"] is True


@pytest.mark.django_db
def test_backups_is_the_seeds_backup_list(api, actor):
    services.create_backup(actor=actor, reason="one")
    services.create_backup(actor=actor, reason="two")
    response = terminal(api, "failsafe backups")
    assert response.json() == json.loads(
        json.dumps(seed.backup_list(list(services.list_backups(actor=actor))))
    )
    assert [b["Reason"] for b in response.json()["Backups"]] == ["two", "one"]


@pytest.mark.django_db
def test_backup_takes_a_backup_with_the_reason_typed(api, actor):
    response = terminal(api, "failsafe backup before the upgrade")
    assert response.status_code == 200
    body = response.json()
    assert (body["Success"], body["Message"]) == (True, "Backup created")
    backup = Backup.objects.get(pk=body["BackupId"])
    assert (backup.type, backup.reason, backup.status) == (
        "MANUAL",
        "before the upgrade",
        "COMPLETE",
    )
    bare = terminal(api, "failsafe backup").json()
    assert Backup.objects.get(pk=bare["BackupId"]).reason == ""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("x" * 1001, "Command too long (over 1000 characters)"),
        ("rm -rf /", UNKNOWN),
        ("failsafe explode", UNKNOWN),
        ("failsafe marksafe", "Usage: failsafe marksafe <backup-id>"),
    ],
)
def test_empty_oversized_or_unknown_commands_are_400(api, command, error):
    response = terminal(api, command)
    assert response.status_code == 400
    assert response.json() == refused(error)


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{}, {"command": ""}, {"command": "   "}, {"command": "help"}])
def test_an_empty_or_missing_command_and_help_answer_the_help(api, body):
    # As the original module does.
    response = api.post(reverse("api:terminal"), body, format="json")
    assert response.status_code == 200
    assert response.json() == seed.help(COMMANDS)


@pytest.mark.django_db
def test_a_command_of_exactly_1000_characters_is_read(api):
    response = terminal(api, "failsafe status" + " " * 985)
    assert response.status_code == 200


@pytest.mark.django_db
def test_setpassword_then_change_it_with_the_current_one(api, passkey):
    first = terminal(api, f"failsafe setpassword {FAILSAFE_PASSWORD}")
    assert first.status_code == 200
    assert first.json()["Message"] == "Failsafe password set successfully"

    without_current = terminal(api, "failsafe setpassword Another-Failsafe-Phrase-7")
    assert without_current.status_code == 400
    assert without_current.json() == refused("Current failsafe password required")

    changed = terminal(
        api,
        "failsafe setpassword",
        password="Another-Failsafe-Phrase-7",
        current_password=FAILSAFE_PASSWORD,
    )
    assert changed.status_code == 200
    assert changed.json()["Message"] == "Failsafe password changed successfully"


@pytest.mark.django_db
def test_a_weak_password_is_400_as_on_the_password_endpoint(api):
    response = terminal(api, "failsafe setpassword short")
    assert response.status_code == 400
    assert response.json()["Success"] is False


@pytest.mark.django_db
def test_trigger_with_the_passkey_inline_or_in_the_body(api, armed):
    inline = terminal(api, f"help_failsafe -start {armed}")
    in_body = terminal(api, "help_failsafe -start", passkey=armed)

    for response in (inline, in_body):
        assert response.status_code == 200
        assert response.json()["Message"] == "Emergency failsafe backup created"
        assert response.json()["Investigation"]["Status"] == "Investigating"
    assert Backup.objects.filter(type="EMERGENCY").count() == 2


@pytest.mark.django_db
def test_a_wrong_passkey_is_403_with_the_seeds_message_and_audited(api, armed):
    response = terminal(api, "help_failsafe -start guessed")
    assert response.status_code == 403
    assert response.json() == refused("Invalid server license passkey", action="Access Denied")
    event = AuditEvent.objects.order_by("-seq").first()
    assert (event.action, event.outcome, event.source, event.ip_address) == (
        "failsafe.trigger",
        "DENIED",
        "api",
        CLIENT_IP,
    )


@pytest.mark.django_db
def test_trigger_before_the_failsafe_password_is_set_is_409(api, passkey):
    response = terminal(api, f"help_failsafe -start {passkey}")
    assert response.status_code == 409
    assert response.json() == refused(
        "Failsafe password not set",
        message="Failsafe password not set. Please set failsafe password first using "
        "'failsafe setpassword <password>'",
        action="Setup Required",
    )


@pytest.mark.django_db
def test_locked_out_is_429(api, armed, settings):
    settings.FAILSAFE = {"LOCKOUT_THRESHOLD": 2}
    assert terminal(api, "help_failsafe -start one").status_code == 403
    assert terminal(api, "help_failsafe -start two").status_code == 403

    locked = terminal(api, f"help_failsafe -start {armed}")

    assert locked.status_code == 429
    assert locked.json()["Success"] is False
    assert locked.json()["Error"].startswith("Too many failed attempts")


@pytest.mark.django_db
def test_marksafe_and_restore_through_the_terminal(api, actor, armed, population):
    backup = services.create_backup(actor=actor)
    marked = terminal(api, f"failsafe marksafe {backup.id}", failsafe_password=FAILSAFE_PASSWORD)
    backup.refresh_from_db()
    assert marked.json() == {
        "Success": True,
        "Message": "Backup marked as safe environment",
        "BackupId": str(backup.id),
        "Timestamp": seed.iso(backup.marked_safe_at),
    }
    User.objects.filter(username="bob").delete()

    no_password = terminal(api, f"failsafe restore {backup.id}")
    assert no_password.status_code == 400
    assert no_password.json() == refused("Failsafe password required")

    wrong = terminal(api, f"failsafe restore {backup.id}", failsafe_password="guess")
    assert wrong.status_code == 403
    assert wrong.json() == refused("Invalid failsafe password")
    assert not User.objects.filter(username="bob").exists()

    restored = terminal(api, f"failsafe restore {backup.id}", failsafe_password=FAILSAFE_PASSWORD)
    assert restored.status_code == 200
    assert restored.json()["Message"] == "Backup restoration completed"
    assert restored.json()["Verification"] == {"Identical": True, "Differences": []}
    assert User.objects.filter(username="bob").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("backup_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000001"])
def test_restore_of_a_bad_id_is_404_before_any_password_is_asked(api, armed, backup_id):
    response = terminal(api, f"failsafe restore {backup_id}")
    assert response.status_code == 404
    assert response.json()["Success"] is False


@pytest.mark.django_db
def test_secrets_in_the_body_are_never_echoed_nor_audited(api, actor, armed):
    backup = services.create_backup(actor=actor)
    terminal(api, f"failsafe restore {backup.id}", failsafe_password="guessed-secret-1")
    response = terminal(api, "help_failsafe -start guessed-secret-2")

    assert "guessed-secret" not in response.content.decode()
    trail = json.dumps([(e.target, e.details) for e in AuditEvent.objects.all()])
    assert "guessed-secret" not in trail


# --- secrets typed on a line: never echoed ------------------------------------------------

SECRET = "Open-Sesame-Guess-99"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("line", "code", "error"),
    [
        (
            "help_failsafe {secret}",
            400,
            "Unknown option for help_failsafe: the only one is -start <passkey>",
        ),
        ("{secret}", 400, UNKNOWN),
        ("failsafe {secret}", 400, UNKNOWN),
        ("failsafe status {secret}", 400, "failsafe status takes no arguments"),
        ("failsafe backups {secret}", 400, "failsafe backups takes no arguments"),
        (
            "failsafe restore {secret}",
            404,
            "Invalid backup ID format: give it as failsafe backups lists it",
        ),
        (
            "failsafe marksafe {secret}",
            404,
            "Invalid backup ID format: give it as failsafe backups lists it",
        ),
        (
            "failsafe restore {backup_id} {secret}",
            400,
            "Usage: failsafe restore <backup-id> [--accept-conflicts --dry-run "
            "--force-password-reset --at … --damage … --only … --since … --undo-actor …]; "
            "the failsafe password is asked for, never typed on the line",
        ),
        (
            "failsafe marksafe {backup_id} --accept-issues {secret}",
            400,
            "Usage: failsafe marksafe <backup-id> [--accept-issues]; "
            "the failsafe password is asked for, never typed on the line",
        ),
    ],
)
def test_refusals_never_echo_what_was_typed(api, actor, armed, line, code, error):
    backup = services.create_backup(actor=actor)
    response = terminal(
        api, line.format(secret=SECRET, backup_id=backup.id), failsafe_password=FAILSAFE_PASSWORD
    )
    assert response.status_code == code
    assert response.json()["Error"] == error
    assert SECRET not in response.content.decode()
    trail = json.dumps([(e.target, e.details) for e in AuditEvent.objects.all()])
    assert SECRET not in trail
    # Nothing ran on the strength of a line it could not read.
    backup.refresh_from_db()
    assert not backup.is_safe
    assert Backup.objects.count() == 1


@pytest.mark.django_db
def test_the_passkey_typed_after_help_failsafe_is_not_echoed(api, armed):
    response = terminal(api, f"help_failsafe {armed}")
    assert response.status_code == 400
    assert armed not in response.content.decode()
    assert not Backup.objects.exists()


@pytest.mark.django_db
def test_marksafe_needs_the_failsafe_password_and_accepted_issues(api, actor, armed, population):
    baseline = services.create_backup(actor=actor)
    assert terminal(api, f"failsafe marksafe {baseline.id}").json() == refused(
        "Failsafe password required"
    )
    wrong = terminal(api, f"failsafe marksafe {baseline.id}", failsafe_password="guess")
    assert wrong.status_code == 403
    assert terminal(
        api, f"failsafe marksafe {baseline.id}", failsafe_password=FAILSAFE_PASSWORD
    ).json()["Success"]

    User.objects.filter(username__in=["alice", "bob"]).delete()
    suspect = services.create_backup(actor=actor)
    with_issues = terminal(
        api, f"failsafe marksafe {suspect.id}", failsafe_password=FAILSAFE_PASSWORD
    )
    assert with_issues.status_code == 409
    assert "User count decreased: 6 -> 4" in with_issues.json()["Error"]
    suspect.refresh_from_db()
    assert not suspect.is_safe

    accepted = terminal(
        api,
        f"failsafe marksafe {suspect.id} --accept-issues",
        failsafe_password=FAILSAFE_PASSWORD,
    )
    assert accepted.status_code == 200
    assert accepted.json()["BackupId"] == str(suspect.id)
    suspect.refresh_from_db()
    assert suspect.is_safe
