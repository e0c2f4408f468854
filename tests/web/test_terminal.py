"""The terminal page: first connection, status, commands, history without secrets, CSRF."""

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.urls import reverse

from failsafe import services, views
from failsafe.models import AuditEvent, Backup
from failsafe.terminal import split_inline_secret
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

    unknown = run(root_client, "rm -rf /").content.decode()
    assert "Unknown command: &#x27;rm&#x27;. Type help_failsafe for the list of commands" in unknown
    assert '<pre class="output failed">' in unknown

    helped = run(root_client, "help_failsafe").content.decode()
    assert "RaOS Failsafe commands (SuperAdmin only)" in helped
    # The history keeps every command in order.
    assert helped.index("failsafe status") < helped.index("failsafe backups")
    assert helped.index("failsafe backups") < helped.index("rm -rf /")
    status_event = AuditEvent.objects.filter(action="failsafe.backups").last()
    assert (status_event.source, status_event.ip_address) == ("terminal", "127.0.0.1")

    cleared = root_client.post(TERMINAL, {"action": "clear"}, follow=True).content.decode()
    assert "rm -rf /" not in cleared


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
        ("failsafe setpasword typo-but-secret", "failsafe setpasword ********"),
        ("failsafe restore 1234 --dry-run", "failsafe restore 1234 --dry-run"),
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
