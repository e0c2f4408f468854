"""The terminal page: first connection, status, commands, history without secrets, CSRF."""

import json
import re
from html import escape

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse

from failsafe import services, views
from failsafe.models import AuditEvent, Backup
from failsafe.terminal import MASK, split_inline_secret
from licensing import services as licensing
from tests.factories import FAILSAFE_PASSWORD, AdminFactory

pytestmark = pytest.mark.django_db

TERMINAL = reverse("failsafe:terminal")
SETUP_PROMPT = "Set failsafe password for emergency backup system"
NEW_PASSWORD = "Another-Unusual-Phrase-77"


def run(client, line, **secrets):
    form = {"action": "command", "command": line}
    form.update({f"secret_{name}": value for name, value in secrets.items()})
    return client.post(TERMINAL, form, follow=True)


def test_only_a_superadmin_reaches_the_terminal(client, superadmin):
    anonymous = client.get(TERMINAL)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("accounts:login"))
    client.force_login(AdminFactory())
    assert client.get(TERMINAL).status_code == 403
    assert client.post(
        TERMINAL, {"action": "command", "command": "failsafe status"}
    ).status_code == (403)


def test_the_first_connection_asks_for_the_failsafe_password_before_anything_else(
    root_client, passkey
):
    page = root_client.get(TERMINAL).content.decode()
    assert SETUP_PROMPT in page
    assert 'type="password" name="password"' in page
    assert 'type="password" name="confirmation"' in page
    assert 'name="command"' not in page  # no prompt yet

    # A command is not run before the password is set.
    skipped = run(root_client, "failsafe backups").content.decode()
    assert SETUP_PROMPT in skipped and "TotalBackups" not in skipped

    mismatch = root_client.post(
        TERMINAL,
        {"action": "setup", "password": FAILSAFE_PASSWORD, "confirmation": "something else"},
    )
    assert "The two passwords do not match" in mismatch.content.decode()
    assert not licensing.failsafe_password_is_set()

    done = root_client.post(
        TERMINAL,
        {"action": "setup", "password": FAILSAFE_PASSWORD, "confirmation": FAILSAFE_PASSWORD},
        follow=True,
    )
    content = done.content.decode()
    assert licensing.failsafe_password_is_valid(FAILSAFE_PASSWORD)
    assert "failsafe setpassword ********" in content
    assert "Failsafe password set successfully" in content
    assert SETUP_PROMPT not in content
    assert 'name="command"' in content  # normal operations begin
    assert FAILSAFE_PASSWORD not in content
    event = AuditEvent.objects.get(action="failsafe.setpassword")
    assert (event.source, event.ip_address, event.outcome) == ("terminal", "127.0.0.1", "SUCCESS")


def test_a_weak_first_password_is_refused_with_the_services_message(root_client, passkey):
    response = root_client.post(
        TERMINAL, {"action": "setup", "password": "short", "confirmation": "short"}
    )
    assert "Failsafe password must be at least 8 characters long" in response.content.decode()
    assert not licensing.failsafe_password_is_set()


def test_a_later_connection_opens_with_the_status(root_client, armed):
    page = root_client.get(TERMINAL).content.decode()
    assert SETUP_PROMPT not in page
    assert "failsafe status" in page
    assert "&quot;FailsafePasswordSet&quot;: true" in page
    assert "&quot;SystemStatus&quot;: &quot;Operational&quot;" in page


def test_commands_run_and_join_the_history(root_client, armed, population):
    root_client.get(TERMINAL)
    backups = run(root_client, "failsafe backups").content.decode()
    assert "&quot;TotalBackups&quot;: 0" in backups

    # A line that is not a command may be a secret typed at the wrong prompt: not shown.
    unknown = run(root_client, "rm -rf /").content.decode()
    assert "Unknown failsafe command. Type &#x27;help&#x27; or &#x27;help_failsafe&#x27;" in unknown
    assert '<pre class="output failed">' in unknown
    assert "rm -rf" not in unknown

    helped = run(root_client, "help_failsafe").content.decode()
    assert "RaOS Failsafe commands (SuperAdmin only)" in helped
    # The history keeps every command in order.
    assert helped.index("failsafe status") < helped.index("failsafe backups")
    assert helped.index("failsafe backups") < helped.index(f"</span> {MASK}</div>")
    assert helped.index(f"</span> {MASK}</div>") < helped.index("</span> help_failsafe</div>")
    status_event = AuditEvent.objects.filter(action="failsafe.backups").last()
    assert (status_event.source, status_event.ip_address) == ("terminal", "127.0.0.1")

    cleared = root_client.post(TERMINAL, {"action": "clear"}, follow=True).content.decode()
    assert "</span> failsafe backups</div>" not in cleared


def test_the_trigger_typed_with_its_passkey_is_masked_in_the_history(
    root_client, armed, population
):
    root_client.get(TERMINAL)
    page = run(root_client, f"help_failsafe -start {armed}").content.decode()
    assert "help_failsafe -start ********" in page
    assert "Emergency failsafe backup created" in page
    assert "&quot;Status&quot;: &quot;Investigating&quot;" in page
    assert armed not in page
    assert Backup.objects.filter(type=Backup.Type.EMERGENCY).count() == 1
    # The history lives in the session: the passkey is not stored there either.
    assert armed not in str(root_client.session.items())


def test_the_trigger_without_its_passkey_asks_for_it_in_a_password_input(root_client, armed):
    root_client.get(TERMINAL)
    asked = run(root_client, "help_failsafe -start").content.decode()
    assert 'type="password" name="secret_passkey"' in asked
    assert not Backup.objects.exists()
    page = run(root_client, "help_failsafe -start", passkey=armed).content.decode()
    assert "Emergency failsafe backup created" in page
    assert armed not in page


def test_changing_the_password_asks_for_the_current_one_and_never_echoes_either(root_client, armed):
    root_client.get(TERMINAL)
    asked = run(root_client, f"failsafe setpassword {NEW_PASSWORD}").content.decode()
    # The new password typed inline is asked for again rather than carried in the form.
    assert 'type="password" name="secret_password"' in asked
    assert 'type="password" name="secret_current_password"' in asked
    assert NEW_PASSWORD not in asked
    assert "failsafe setpassword ********" in asked
    assert licensing.failsafe_password_is_valid(FAILSAFE_PASSWORD)

    wrong = run(
        root_client, "failsafe setpassword", password=NEW_PASSWORD, current_password="nope-nope"
    ).content.decode()
    assert "Current failsafe password is required to change it" in wrong
    assert licensing.failsafe_password_is_valid(FAILSAFE_PASSWORD)

    done = run(
        root_client,
        "failsafe setpassword",
        password=NEW_PASSWORD,
        current_password=FAILSAFE_PASSWORD,
    ).content.decode()
    assert "Failsafe password changed successfully" in done
    assert NEW_PASSWORD not in done and FAILSAFE_PASSWORD not in done
    assert licensing.failsafe_password_is_valid(NEW_PASSWORD)


def test_restore_asks_for_the_failsafe_password_before_it_runs(root_client, armed, safe_backup):
    User = get_user_model()
    User.objects.filter(username__in=["dave", "erin"]).delete()
    root_client.get(TERMINAL)

    asked = run(root_client, f"failsafe restore {safe_backup.pk}")
    content = asked.content.decode()
    assert 'type="password" name="secret_failsafe_password"' in content
    assert f'name="command" value="failsafe restore {safe_backup.pk}"' in content
    assert not User.objects.filter(username="dave").exists()

    empty = run(root_client, f"failsafe restore {safe_backup.pk}", failsafe_password="")
    assert "Failsafe password required" in empty.content.decode()

    wrong = run(root_client, f"failsafe restore {safe_backup.pk}", failsafe_password="wrong-one")
    content = wrong.content.decode()
    assert "Invalid failsafe password" in content
    assert "wrong-one" not in content
    assert not User.objects.filter(username="dave").exists()

    done = run(
        root_client, f"failsafe restore {safe_backup.pk}", failsafe_password=FAILSAFE_PASSWORD
    )
    content = done.content.decode()
    assert done.status_code == 200
    assert "Backup restoration completed" in content
    assert "&quot;Identical&quot;: true" in content
    assert FAILSAFE_PASSWORD not in content
    assert User.objects.filter(username__in=["dave", "erin"]).count() == 2
    # The restore ended every session, this one included.
    assert 'id="sessions-ended"' in content
    assert root_client.get(TERMINAL)["Location"].startswith(reverse("accounts:login"))


def test_posts_without_the_csrf_token_are_refused(superadmin, armed):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superadmin)
    response = client.post(TERMINAL, {"action": "command", "command": "failsafe status"})
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="failsafe.status").exists()


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("failsafe setpassword hunter2-hunter2", "failsafe setpassword ********"),
        ("FAILSAFE SetPassword a b c", "FAILSAFE SetPassword ********"),
        ("help_failsafe -start SERVER-AAAAAA", "help_failsafe -start ********"),
        ("help_failsafe -Start SERVER-AAAAAA", "help_failsafe -Start ********"),
        ("failsafe setpasword typo-but-secret", "failsafe ********"),
        ("failsafe restore 1234 --dry-run", "failsafe restore ******** --dry-run"),
        (
            "failsafe restore 0f4c6e2a-5b1d-4c3e-9a7f-2d8e6b1c0a93 --DRY-RUN",
            "failsafe restore 0f4c6e2a-5b1d-4c3e-9a7f-2d8e6b1c0a93 --DRY-RUN",
        ),
        (
            "failsafe marksafe 0f4c6e2a --accept-issues",
            "failsafe marksafe 0f4c6e2a --accept-issues",
        ),
        (
            "failsafe marksafe 0f4c6e2a hunter2 --accept-issues",
            "failsafe marksafe 0f4c6e2a ******** --accept-issues",
        ),
        ("failsafe restore {0f4c6e2a-5b1d-4c3e-9a7f-2d8e6b1c0a93}", "failsafe restore ********"),
        ("failsafe status hunter2", "failsafe status ********"),
        ("failsafe backups hunter2", "failsafe backups ********"),
        ("help_failsafe SERVER-AAAAAA", "help_failsafe ********"),
        ("SERVER-AAAAAA", MASK),
        ("failsafe hunter2 hunter3", "failsafe ********"),
        ("failsafe   status", "failsafe status"),
        ("help_failsafe", "help_failsafe"),
    ],
)
def test_the_history_masks_whatever_may_be_a_secret(line, shown):
    assert split_inline_secret(line)[0] == shown


def test_error_reports_hide_everything_posted_to_the_pages_that_take_secrets(
    rf, superadmin, armed, actor
):
    request = rf.post(TERMINAL, {"action": "clear"})
    request.user, request.session = superadmin, SessionStore()
    views.terminal(request)
    assert request.sensitive_post_parameters == "__ALL__"

    backup_admin = admin.site._registry[Backup]
    backup = services.create_backup(actor=actor)
    for view, args in (
        (backup_admin.failsafe_view, ()),
        (backup_admin.restore_view, (str(backup.pk),)),
    ):
        request = rf.get("/admin/")
        request.user, request.session = superadmin, SessionStore()
        view(request, *args).render()
        assert request.sensitive_post_parameters == "__ALL__"


# --- secrets typed on a line: never stored, never shown ---------------------------------

SECRET_LINES = {
    "the passkey after help_failsafe without -start": "help_failsafe {passkey}",
    "the passkey after help_failsafe -start": "help_failsafe -start {passkey}",
    "the passkey alone on the line": "{passkey}",
    "a password after failsafe": "failsafe {password}",
    "a password after failsafe status": "failsafe status {password}",
    "a password after failsafe backups": "failsafe backups {password}",
    "a password after failsafe setpassword": "failsafe setpassword {new_password}",
    "a password after the backup id of a restore": "failsafe restore {backup_id} {password}",
    "a password after the backup id of a marksafe": "failsafe marksafe {backup_id} {password}",
    "a password in place of the backup id": "failsafe restore {password}",
    "a password after an unknown option": "help_failsafe --start {passkey}",
    "a password after a known flag": "failsafe restore {backup_id} --dry-run {password}",
}


def session_data(client) -> dict:
    """What the database row of this client's session holds, decoded."""
    row = Session.objects.get(session_key=client.cookies[settings.SESSION_COOKIE_NAME].value)
    return SessionStore().decode(row.session_data)


def hidden_inputs(page: str) -> list[str]:
    return re.findall(r'<input type="hidden"[^>]*>', page)


def assert_nowhere(secrets, *pages, session):
    stored = json.dumps(session)
    for secret in secrets:
        for form in (secret, escape(secret)):
            for page in pages:
                assert form not in page
            assert form not in stored
        # Not even a recognisable part of it.
        for page in (*pages, stored):
            assert secret[:12] not in page


@pytest.mark.parametrize("line", SECRET_LINES.values(), ids=SECRET_LINES.keys())
def test_a_secret_typed_anywhere_on_a_line_is_neither_stored_nor_shown(
    root_client, armed, safe_backup, line
):
    secrets = {"passkey": armed, "password": FAILSAFE_PASSWORD, "new_password": NEW_PASSWORD}
    typed = line.format(backup_id=safe_backup.pk, **secrets)
    root_client.get(TERMINAL)

    answered = run(root_client, typed).content.decode()
    reopened = root_client.get(TERMINAL).content.decode()

    assert_nowhere(secrets.values(), answered, reopened, session=session_data(root_client))
    # The line is in the history (or awaiting its secret), with what was hidden masked.
    assert MASK in answered
    for field in hidden_inputs(answered):
        assert all(secret not in field for secret in secrets.values())
    # A restore needs the password asked for in its own field, never one typed on the line.
    assert not Backup.objects.filter(type=Backup.Type.PRE_RESTORE).exists()


def test_refusals_do_not_quote_what_was_typed(root_client, armed):
    root_client.get(TERMINAL)
    page = run(root_client, "help_failsafe open-sesame").content.decode()
    assert "Unknown option for help_failsafe" in page
    assert "open-sesame" not in page
    page = run(root_client, "failsafe restore open-sesame-2").content.decode()
    assert "Invalid backup ID format" in page
    assert "failsafe restore ********" in page
    assert "open-sesame-2" not in page
    page = run(root_client, "open-sesame-3 and more").content.decode()
    assert "Unknown failsafe command. Type &#x27;help&#x27; or &#x27;help_failsafe&#x27;" in page
    assert "open-sesame-3" not in page


def test_the_restore_form_carries_only_the_public_line(root_client, armed, safe_backup):
    root_client.get(TERMINAL)
    asked = run(root_client, f"failsafe restore {safe_backup.pk} --dry-run").content.decode()
    # A dry run needs no password: it answers at once.
    assert "&quot;DryRun&quot;: true" in asked

    asked = run(root_client, f"failsafe marksafe {safe_backup.pk} --accept-issues")
    fields = hidden_inputs(asked.content.decode())
    assert f'value="failsafe marksafe {safe_backup.pk} --accept-issues"' in " ".join(fields)
    assert 'type="password" name="secret_failsafe_password"' in asked.content.decode()


def test_marksafe_asks_for_the_failsafe_password(root_client, armed, population, actor):
    backup = services.create_backup(actor=actor, reason="candidate")
    root_client.get(TERMINAL)

    asked = run(root_client, f"failsafe marksafe {backup.pk}").content.decode()
    assert 'type="password" name="secret_failsafe_password"' in asked
    backup.refresh_from_db()
    assert not backup.is_safe

    wrong = run(root_client, f"failsafe marksafe {backup.pk}", failsafe_password="wrong-guess")
    assert "Invalid failsafe password" in wrong.content.decode()
    assert "wrong-guess" not in wrong.content.decode()
    backup.refresh_from_db()
    assert not backup.is_safe

    done = run(root_client, f"failsafe marksafe {backup.pk}", failsafe_password=FAILSAFE_PASSWORD)
    assert "Backup marked as safe environment" in done.content.decode()
    assert FAILSAFE_PASSWORD not in done.content.decode()
    backup.refresh_from_db()
    assert backup.is_safe


def test_marksafe_of_a_backup_with_issues_needs_them_accepted(
    root_client, armed, safe_backup, actor
):
    get_user_model().objects.filter(username__in=["dave", "erin"]).delete()
    suspect = services.create_backup(actor=actor, reason="after the deletions")
    root_client.get(TERMINAL)

    refused = run(
        root_client, f"failsafe marksafe {suspect.pk}", failsafe_password=FAILSAFE_PASSWORD
    ).content.decode()
    assert "User count decreased: 6 -&gt; 4" in refused
    assert "--accept-issues" in refused
    suspect.refresh_from_db()
    assert not suspect.is_safe

    accepted = run(
        root_client,
        f"failsafe marksafe {suspect.pk} --accept-issues",
        failsafe_password=FAILSAFE_PASSWORD,
    ).content.decode()
    assert f"failsafe marksafe {suspect.pk} --accept-issues" in accepted
    assert "Backup marked as safe environment" in accepted
    suspect.refresh_from_db()
    assert suspect.is_safe


def test_a_history_kept_before_this_grammar_is_dropped_from_the_session_row(root_client, armed):
    # Histories written by earlier versions could hold a secret typed on a line.
    session = root_client.session
    session["failsafe_terminal_history"] = [
        {"command": f"failsafe status {FAILSAFE_PASSWORD}", "ok": True, "output": "{}"}
    ]
    session.save()
    assert FAILSAFE_PASSWORD in json.dumps(session_data(root_client))

    page = root_client.get(TERMINAL).content.decode()

    assert FAILSAFE_PASSWORD not in page
    assert FAILSAFE_PASSWORD not in json.dumps(session_data(root_client))
    assert "&quot;FailsafePasswordSet&quot;: true" in page
