"""Wire compatibility with the original FailsafeModule, table-driven, at every terminal door.

RaCore's C# `FailsafeModule` answers its commands with JSON that RaOS clients parse
(`Success`, `Message`, `Action`, the backup list's fields, …). Each row below is one of its
commands in one of its cases, with the keys and texts the original gives; the same script
runs through `manage.py failsafe_terminal`, `POST /api/failsafe/terminal/` and the terminal
page, and each door must answer what the original answers (our own keys may stand beside).
"""

import io
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from failsafe.models import Backup
from licensing import services as licensing
from tests.factories import FAILSAFE_PASSWORD, SuperAdminFactory, UserFactory

User = get_user_model()

UNKNOWN = "Unknown failsafe command. Type 'help' or 'help_failsafe' for available commands."
NOT_SET = (
    "Failsafe password not set. Please set failsafe password first using "
    "'failsafe setpassword <password>'"
)
ORIGINAL_STATE_KEYS = {"Timestamp", "TotalUsers", "ActiveSessions", "TotalLicenses"}


@dataclass
class Step:
    """One line typed, the secrets a door asks for (in order), and what the answer holds."""

    name: str
    line: Callable[[dict], str]
    check: Callable[[dict, dict], None]
    secrets: list[str] = field(default_factory=list)
    # Doors that cannot ask for a missing secret: the original's usage line applies there.
    only: tuple[str, ...] = ()


def refused(message: str, action: str | None = None):
    def check(answer: dict, state: dict) -> None:
        assert answer["Success"] is False
        assert answer["Message"] == message
        if action is None:
            assert "Action" not in answer
        else:
            assert answer["Action"] == action

    return check


def check_help(answer, state):
    assert answer["Success"] is True
    commands = [c["Command"] for c in answer["Commands"]]
    for original in (
        "failsafe status",
        "failsafe setpassword <password>",
        "failsafe backups",
        "failsafe marksafe <backup-id>",
        "failsafe restore <backup-id>",
        "help_failsafe",
        "help_failsafe -start <passkey>",
    ):
        assert original in commands


def check_password_set(answer, state):
    assert answer["Success"] is True
    assert answer["Message"] == "Failsafe password set successfully"
    assert answer["Timestamp"].endswith("Z")
    assert "help_failsafe -start <passkey>" in answer["Note"]


def check_first_trigger(answer, state):
    assert answer["Success"] is True
    assert answer["Message"] == "Emergency failsafe backup created"
    backup_id = answer["BackupId"]
    state["first"] = backup_id
    assert answer["Timestamp"].endswith("Z")
    investigation = answer["Investigation"]
    assert investigation["Status"] == "Investigating"
    assert investigation["LastSafeBackup"] is None
    comparison = investigation["Comparison"]
    assert comparison["HasSafeBackup"] is False
    assert comparison["Message"] == "No safe backup found for comparison"
    assert comparison["Issues"] == ["This is the first backup - no baseline to compare against"]
    assert investigation["Recommendations"][:2] == [
        "Mark this backup as safe if system is functioning correctly",
        "Run comprehensive system checks",
    ]
    assert answer["NextSteps"][:3] == [
        "Review the comparison results",
        "Investigate identified issues",
        f"If safe, mark this backup as safe: failsafe marksafe {backup_id}",
    ]
    assert len(answer["NextSteps"]) == 4


def check_status(answer, state):
    assert answer["FailsafePasswordSet"] is True
    assert (answer["TotalBackups"], answer["SafeBackups"]) == (1, 0)
    assert answer["LastSafeBackupId"] is None
    assert answer["SystemStatus"] == "Operational"
    last = answer["LastBackup"]
    assert set(last) >= {"Id", "Type", "Reason", "CreatedAtUtc", "IsSafe", "State"}
    assert (last["Id"], last["Type"], last["IsSafe"]) == (state["first"], "EMERGENCY", False)
    assert set(last["State"]) >= ORIGINAL_STATE_KEYS | {"SystemMetrics"}


def check_marked(answer, state):
    assert answer["Success"] is True
    assert answer["Message"] == "Backup marked as safe environment"
    assert answer["BackupId"] == state["first"]
    assert answer["Timestamp"].endswith("Z")


def check_backups(answer, state):
    assert answer["TotalBackups"] == 1
    (backup,) = answer["Backups"]
    assert set(backup) >= {"Id", "Type", "Reason", "CreatedAtUtc", "IsSafe", "IsLastSafe"}
    assert (backup["Id"], backup["IsSafe"], backup["IsLastSafe"]) == (state["first"], True, True)
    assert set(backup["State"]) >= {"TotalUsers", "TotalLicenses", "Timestamp"}


def check_trigger_with_issues(answer, state):
    investigation = answer["Investigation"]
    comparison = investigation["Comparison"]
    assert comparison["HasSafeBackup"] is True
    assert comparison["SafeBackupId"] == state["first"]
    assert comparison["SafeBackupTimestamp"].endswith("Z")
    assert comparison["Message"] == "Issues detected"
    assert "User count decreased: 3 -> 2" in comparison["Issues"]
    recommendations = investigation["Recommendations"]
    assert (
        recommendations[0] == f"RECOMMENDED: Restore from last safe backup (ID: {state['first']})"
    )
    assert recommendations[1] == "Investigate the following issues:"
    assert "  - User count decreased: 3 -> 2" in recommendations
    assert "Review audit logs for suspicious activity" in recommendations
    assert answer["NextSteps"][3] == (
        f"If corrupted, restore from last safe backup: failsafe restore {state['first']}"
    )


def check_restored(answer, state):
    assert answer["Success"] is True
    assert answer["Message"] == "Backup restoration completed"
    assert answer["BackupId"] == state["first"]
    assert answer["BackupTimestamp"].endswith("Z")
    assert answer["RestoreTimestamp"].endswith("Z")
    assert set(answer["State"]) >= ORIGINAL_STATE_KEYS
    assert answer["NextSteps"][:3] == [
        "Verify system integrity",
        "Review restored data",
        "Create new safe backup if system is stable",
    ]
    assert User.objects.filter(username="carol").exists()


def lose_carol(answer, state):
    # Not a check: the damage between the two triggers.
    User.objects.filter(username="carol").delete()


SCRIPT = [
    Step(
        "trigger before the password is set",
        lambda s: f"help_failsafe -start {s['passkey']}",
        refused(NOT_SET, "Setup Required"),
        # The page asks for the failsafe password before it runs any command.
        only=("command", "api"),
    ),
    Step(
        "setpassword",
        lambda s: f"failsafe setpassword {FAILSAFE_PASSWORD}",
        check_password_set,
    ),
    Step("help", lambda s: "help", check_help),
    Step("help_failsafe", lambda s: "help_failsafe", check_help),
    Step(
        "trigger with a wrong passkey",
        lambda s: "help_failsafe -start SERVER-WRONG1-WRONG2-WRONG3",
        refused("Invalid server license passkey", "Access Denied"),
    ),
    Step(
        "trigger without a passkey where nothing can ask",
        lambda s: "help_failsafe -start",
        refused("Usage: help_failsafe -start <SERVER_LICENSE_PASSKEY>"),
        only=("command", "api"),
    ),
    Step("first trigger", lambda s: f"help_failsafe -start {s['passkey']}", check_first_trigger),
    Step("status", lambda s: "failsafe status", check_status),
    Step(
        "marksafe without an id",
        lambda s: "failsafe marksafe",
        refused("Usage: failsafe marksafe <backup-id>"),
    ),
    Step(
        "marksafe with a malformed id",
        lambda s: "failsafe marksafe not-a-guid",
        refused("Invalid backup ID format"),
    ),
    Step(
        "marksafe of an unknown backup",
        lambda s: f"failsafe marksafe {uuid.UUID(int=7)}",
        refused("Backup not found"),
        secrets=[FAILSAFE_PASSWORD],
    ),
    Step(
        "marksafe",
        lambda s: f"failsafe marksafe {s['first']}",
        check_marked,
        secrets=[FAILSAFE_PASSWORD],
    ),
    Step("backups", lambda s: "failsafe backups", check_backups),
    Step("an unknown command", lambda s: "failsafe explode", refused(UNKNOWN)),
    Step(
        "restore without an id",
        lambda s: "failsafe restore",
        refused("Usage: failsafe restore <backup-id>"),
    ),
    Step(
        "restore with a malformed id",
        lambda s: "failsafe restore 1234",
        refused("Invalid backup ID format"),
    ),
    Step("lose a user", lambda s: "failsafe status", lose_carol),
    Step(
        "trigger with issues",
        lambda s: f"help_failsafe -start {s['passkey']}",
        check_trigger_with_issues,
    ),
    Step(
        "restore",
        lambda s: f"failsafe restore {s['first']}",
        check_restored,
        secrets=[FAILSAFE_PASSWORD],
    ),
]


# --- the three doors -----------------------------------------------------------------


def through_the_command(line: str, secrets: list[str]) -> dict:
    """`manage.py failsafe_terminal` reading the line, then each secret asked, from stdin."""
    out = io.StringIO()
    stdin, sys.stdin = sys.stdin, io.StringIO("\n".join([line, *secrets]) + "\n")
    try:
        call_command("failsafe_terminal", stdout=out)
    finally:
        sys.stdin = stdin
    # A secret line the command did not ask for is read as the next line: the first
    # answer is this line's.
    answer, _end = json.JSONDecoder().raw_decode(out.getvalue())
    return answer


def through_the_api(client: APIClient, line: str, secrets: list[str]) -> dict:
    body = {"command": line}
    if secrets:
        body["failsafe_password"] = secrets[0]
    return client.post(reverse("api:terminal"), body, format="json").json()


def through_the_page(client, line: str, secrets: list[str]) -> dict:
    if line.startswith("failsafe setpassword "):
        # The page's first visit sets it in its own form: the answer joins the history.
        password = line.split(None, 2)[2]
        form = {"action": "setup", "password": password, "confirmation": password}
        response = client.post(reverse("failsafe:terminal"), form, follow=True)
        return json.loads(response.context["history"][-1]["output"])
    form = {"action": "command", "command": line}
    if secrets:
        form["secret_failsafe_password"] = secrets[0]
    response = client.post(reverse("failsafe:terminal"), form, follow=True)
    history = response.context["history"]
    return json.loads(history[-1]["output"])


@pytest.mark.django_db
@pytest.mark.parametrize("door", ["command", "api", "page"])
def test_every_original_command_answers_as_the_original_does(door, client, keyset):
    root = SuperAdminFactory(username="root")
    for name in ("alice", "carol"):
        UserFactory(username=name)
    state = {"passkey": licensing.issue_passkey()}
    api = APIClient()
    api.force_authenticate(root)
    client.force_login(root)

    for step in SCRIPT:
        if step.only and door not in step.only:
            continue
        line = step.line(state)
        if door == "command":
            answer = through_the_command(line, step.secrets)
        elif door == "api":
            answer = through_the_api(api, line, step.secrets)
        else:
            answer = through_the_page(client, line, step.secrets)
        try:
            step.check(answer, state)
        except AssertionError as exc:
            raise AssertionError(f"{door}: {step.name}: {answer}") from exc
        if step.name == "restore" and door == "page":
            break  # the restore ended this session too
    assert Backup.objects.filter(type="EMERGENCY").count() == 2
