"""The two flows of the issue in a real browser, and the README's screenshots."""

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from failsafe import services
from failsafe.models import AuditEvent, Backup
from licensing import services as licensing
from tests.factories import DEFAULT_PASSWORD, LicenseFactory, SuperAdminFactory, UserFactory

from .conftest import screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

User = get_user_model()
NEW_LOGIN_PASSWORD = "a fresh and unusual passphrase"
FAILSAFE_PASSWORD = "Unusual-Failsafe-Phrase-42"


def log_in(page, path, username, password):
    page.goto(path)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.locator("input[type=submit]").click()


def test_a_fresh_superadmin_changes_the_password_then_sets_up_and_triggers_the_failsafe(page):
    superadmin = SuperAdminFactory(username="root", must_change_password=True)
    passkey = licensing.issue_passkey()
    for name in ("alice", "bob", "carol"):
        LicenseFactory(owner=UserFactory(username=name))

    log_in(page, "/accounts/login/", superadmin.username, DEFAULT_PASSWORD)
    expect(page).to_have_url(re.compile(r"/accounts/password_change/$"))
    expect(page.locator("body")).to_contain_text("You must choose a new password")
    page.fill("#id_old_password", DEFAULT_PASSWORD)
    page.fill("#id_new_password1", NEW_LOGIN_PASSWORD)
    page.fill("#id_new_password2", NEW_LOGIN_PASSWORD)
    page.locator("input[type=submit]").click()

    # The terminal, whose first connection asks for the failsafe password.
    expect(page).to_have_url(re.compile(r"/terminal/"))
    expect(page.locator("h1")).to_have_text("Set failsafe password for emergency backup system")
    assert page.locator("#id_password").get_attribute("type") == "password"
    page.fill("#id_password", FAILSAFE_PASSWORD)
    page.fill("#id_confirmation", FAILSAFE_PASSWORD)
    page.get_by_role("button", name="Set failsafe password").click()
    expect(page.locator(".screen")).to_contain_text("Failsafe password set successfully")
    assert licensing.failsafe_password_is_valid(FAILSAFE_PASSWORD)

    # The trigger without its passkey: asked for in a password input.
    page.fill("#id_command", "help_failsafe -start")
    page.press("#id_command", "Enter")
    passkey_input = page.locator("input[name=secret_passkey]")
    assert passkey_input.get_attribute("type") == "password"
    passkey_input.fill(passkey)
    page.get_by_role("button", name="Run").click()
    screen = page.locator(".screen")
    expect(screen).to_contain_text("Emergency failsafe backup created")
    expect(screen).to_contain_text("No safe backup found for comparison")
    emergency = Backup.objects.get(type=Backup.Type.EMERGENCY)

    # Mark it safe, lose a user and a license, and trigger again: the investigation finds it.
    page.fill("#id_command", f"failsafe marksafe {emergency.pk}")
    page.press("#id_command", "Enter")
    password_input = page.locator("input[name=secret_failsafe_password]")
    assert password_input.get_attribute("type") == "password"
    password_input.fill(FAILSAFE_PASSWORD)
    page.get_by_role("button", name="Run").click()
    expect(screen).to_contain_text("Backup marked as safe environment")
    User.objects.filter(username="carol").delete()
    # The trigger as the seed types it, passkey inline: masked in the history.
    page.fill("#id_command", f"help_failsafe -start {passkey}")
    page.press("#id_command", "Enter")
    expect(screen).to_contain_text("help_failsafe -start ********")
    expect(screen).to_contain_text("User count decreased: 4 -> 3")
    expect(screen).to_contain_text("RECOMMENDED: Restore from last safe backup")

    assert passkey not in page.content()
    assert FAILSAFE_PASSWORD not in page.content()
    # The last two answers and the prompt, for the README.
    page.locator(".entry").nth(-2).evaluate("entry => entry.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(screenshot_path("terminal.png")))


def test_users_deleted_in_the_admin_come_back_through_the_restore_confirmation(page):
    superadmin = SuperAdminFactory(username="root")
    passkey = licensing.issue_passkey()
    licensing.set_failsafe_password(password=FAILSAFE_PASSWORD, user=superadmin)
    for name in ("alice", "bob", "carol", "dave", "erin"):
        LicenseFactory(owner=UserFactory(username=name))
    actor = services.Actor(user=superadmin, source=AuditEvent.Source.CLI)
    safe = services.create_backup(actor=actor, reason="known good, end of the day")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)

    log_in(page, "/admin/login/", "root", DEFAULT_PASSWORD)
    expect(page.locator("#failsafe-module")).to_be_visible()

    # Delete two users through the admin.
    page.goto("/admin/accounts/user/")
    for name in ("dave", "erin"):
        user = User.objects.get(username=name)
        page.check(f"input[name=_selected_action][value='{user.pk}']")
    page.select_option("select[name=action]", "delete_selected")
    page.get_by_role("button", name="Go").click()
    page.get_by_role("button", name=re.compile("Yes, I.m sure")).click()
    expect(page.locator(".messagelist")).to_contain_text("Successfully deleted 2 users")
    assert not User.objects.filter(username__in=["dave", "erin"]).exists()

    # The Failsafe page: trigger with the passkey, see the investigation.
    page.goto("/admin/")
    page.get_by_role("link", name="Failsafe password and emergency backup").click()
    page.fill("#id_passkey", passkey)
    page.fill("#id_reason", "users missing")
    page.get_by_role("button", name="Trigger emergency backup").click()
    report = page.locator("#investigation")
    expect(report).to_contain_text("Emergency failsafe backup created")
    expect(report).to_contain_text("User count decreased: 6 -> 4")
    expect(report).to_contain_text("dave, erin")

    # Restore the safe backup through its confirmation page.
    page.goto("/admin/failsafe/backup/")
    expect(page.locator("#result_list")).to_contain_text("users missing")
    page.check(f"input[name=_selected_action][value='{safe.pk}']")
    page.select_option("select[name=action]", "restore_action")
    page.get_by_role("button", name="Go").click()
    plan = page.locator("#restore-plan")
    expect(plan).to_contain_text("What the restore would change (dry run)")
    expect(plan).to_contain_text("insert: dave, erin")
    page.fill("#id_failsafe_password", "not the failsafe password")
    page.get_by_role("button", name="Yes, restore this backup").click()
    expect(page.locator(".messagelist")).to_contain_text("Invalid failsafe password")
    assert not User.objects.filter(username__in=["dave", "erin"]).exists()
    page.fill("#id_failsafe_password", FAILSAFE_PASSWORD)
    page.get_by_role("button", name="Yes, restore this backup").click()
    expect(page.locator("#content-main")).to_contain_text("Backup restoration completed.")

    # Every session ended: log in again, and the users are back in the admin's list.
    page.get_by_role("link", name="Log in again").click()
    page.fill("#id_username", "root")
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.locator("input[type=submit]").click()
    page.goto("/admin/accounts/user/")
    users = page.locator("#result_list")
    expect(users).to_contain_text("dave")
    expect(users).to_contain_text("erin")

    # The backup list, with the automatic pre-restore backup, for the README.
    page.goto("/admin/failsafe/backup/")
    expect(page.locator("#result_list")).to_contain_text("Pre-restore")
    page.locator("#toggle-nav-sidebar").click()
    page.set_viewport_size({"width": 1280, "height": 560})
    page.screenshot(path=str(screenshot_path("backups.png")))
    # At 1280 px every column of both lists is on the page, none cut off at the right.
    for path, columns in (
        ("/admin/failsafe/backup/", ("Size", "Status", "Replicas")),
        ("/admin/failsafe/auditevent/", ("Outcome", "Ip address")),
    ):
        page.goto(path)
        table = page.locator("#result_list")
        for column in columns:
            header = table.locator("thead th", has_text=column).first
            box = header.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1280, (path, column, box)
    page.screenshot(path=str(screenshot_path("audit.png")))
    # A backup's page: the object tools do not cover its title.
    page.goto(f"/admin/failsafe/backup/{safe.pk}/change/")
    page.screenshot(path=str(screenshot_path("backup.png")))
    title = page.locator("#content > h2").first.bounding_box()
    tools = page.locator(".object-tools").bounding_box()
    assert title["y"] + title["height"] <= tools["y"] or tools["x"] >= title["x"] + title["width"]


def test_the_terminal_shows_the_restore_plan_and_cancel_cancels(page):
    superadmin = SuperAdminFactory(username="root")
    licensing.issue_passkey()
    licensing.set_failsafe_password(password=FAILSAFE_PASSWORD, user=superadmin)
    for name in ("alice", "dave"):
        UserFactory(username=name)
    actor = services.Actor(user=superadmin, source=AuditEvent.Source.CLI)
    safe = services.create_backup(actor=actor, reason="known good")
    User.objects.filter(username="dave").delete()

    log_in(page, "/accounts/login/?next=/terminal/", "root", DEFAULT_PASSWORD)
    page.fill("#id_command", f"failsafe restore {safe.pk}")
    page.press("#id_command", "Enter")
    plan = page.locator("#restore-plan")
    expect(plan).to_contain_text("insert: dave")
    expect(page.locator("input[name=secret_failsafe_password]")).to_be_focused()

    page.locator("#cancel-pending").click()
    expect(page.locator("#restore-plan")).to_have_count(0)
    expect(page.locator("#id_command")).to_be_focused()
    assert not User.objects.filter(username="dave").exists()
    assert not Backup.objects.filter(type=Backup.Type.PRE_RESTORE).exists()

    # Long answers open folded under their summary; the summary says what matters.
    page.fill("#id_command", "failsafe backups")
    page.press("#id_command", "Enter")
    expect(page.locator("#id_command")).to_be_focused()
    newest = page.locator(".entry").last
    expect(newest.locator(".summary")).to_be_visible()

    page.fill("#id_command", f"failsafe restore {safe.pk}")
    page.press("#id_command", "Enter")
    page.fill("input[name=secret_failsafe_password]", FAILSAFE_PASSWORD)
    page.get_by_role("button", name="Restore").click()
    expect(page.locator(".screen")).to_contain_text("Backup restoration completed")
    assert User.objects.filter(username="dave").exists()


def test_marking_safe_in_the_admin_confirms_with_the_issues_and_staff_learn_why_not(page):
    from tests.factories import AdminFactory

    superadmin = SuperAdminFactory(username="root")
    licensing.issue_passkey()
    licensing.set_failsafe_password(password=FAILSAFE_PASSWORD, user=superadmin)
    for name in ("alice", "bob", "dave"):
        UserFactory(username=name)
    actor = services.Actor(user=superadmin, source=AuditEvent.Source.CLI)
    safe = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)
    User.objects.filter(username="dave").delete()
    damaged = services.create_backup(actor=actor, reason="after the incident")

    log_in(page, "/admin/login/", "root", DEFAULT_PASSWORD)
    page.goto("/admin/failsafe/backup/")
    page.locator(f"input[name=_selected_action][value='{damaged.pk}']").check()
    page.select_option("select[name=action]", "mark_safe_action")
    page.get_by_role("button", name="Go").click()
    page.fill("#id_failsafe_password", FAILSAFE_PASSWORD)
    page.get_by_role("button", name="Yes, mark as safe").click()
    issues = page.locator("#mark-safe-issues")
    expect(issues).to_contain_text("User count decreased: 4 -> 3")
    page.screenshot(path=str(screenshot_path("mark-safe-issues.png")))
    page.fill("#id_failsafe_password", FAILSAFE_PASSWORD)
    page.check("#id_accept_issues")
    page.get_by_role("button", name="Yes, mark as safe").click()
    expect(page.locator(".messagelist")).to_contain_text("1 backup marked as safe.")
    damaged.refresh_from_db()
    assert damaged.is_safe

    # A staff member who is not a SuperAdmin is told why, not shown a bare 403.
    page.context.clear_cookies()
    AdminFactory(username="staff")
    log_in(page, "/admin/login/", "staff", DEFAULT_PASSWORD)
    page.goto("/admin/failsafe/backup/")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("#content-main")).to_contain_text("for SuperAdmins only")
