"""Tick two records on an investigation page and restore only them, in a real browser."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from accounts.models import Role
from failsafe import services
from failsafe.models import AuditEvent
from licensing import services as licensing
from tests.factories import DEFAULT_PASSWORD, LicenseFactory, SuperAdminFactory, UserFactory
from tests.selective import attack

from .conftest import screenshot_path

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

User = get_user_model()
FAILSAFE_PASSWORD = "Unusual-Failsafe-Phrase-42"


def test_two_records_ticked_on_the_investigation_page_come_back_alone(page):
    superadmin = SuperAdminFactory(username="root")
    passkey = licensing.issue_passkey()
    licensing.set_failsafe_password(password=FAILSAFE_PASSWORD, user=superadmin)
    users = [UserFactory(username=name) for name in ("alice", "bob", "carol", "dave", "erin")]
    for user in users[:4]:
        LicenseFactory(owner=user)
    actor = services.Actor(user=superadmin, source=AuditEvent.Source.CLI)
    attacked = attack(actor, passkey, sign_ups=3)
    carol = User.objects.get(username="carol")

    page.goto("/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.locator("input[type=submit]").click()
    page.goto(f"/admin/failsafe/backup/{attacked.emergency.pk}/investigation/")
    form = page.locator("#restore-selected-form")
    expect(form).to_contain_text(f"Restore records from backup {attacked.safe.pk}")

    # Tick carol (promoted) and dave (deleted); erin stays deleted.
    page.check(f"input[name=only][value='accounts.user:#{carol.pk}']")
    form.locator("label", has_text="dave").locator("input").check()
    page.get_by_role("button", name="Restore selected records…").click()

    records = page.locator("#selected-records")
    expect(records).to_contain_text("carol")
    expect(records).to_contain_text("dave")
    expect(records).not_to_contain_text("erin")
    expect(page.locator("#contained-accounts")).to_contain_text("carol (role")
    page.fill("#id_failsafe_password", FAILSAFE_PASSWORD)
    page.check("#id_force_password_reset")
    page.screenshot(path=str(screenshot_path("selective-restore.png")))
    page.get_by_role("button", name="Yes, restore the selected records").click()

    expect(page.locator("#content-main")).to_contain_text("Selected records restored.")
    expect(page.locator("#contained-accounts")).to_contain_text("dave (restored)")
    carol.refresh_from_db()
    assert carol.role == Role.USER and carol.must_change_password
    assert User.objects.filter(username="dave").exists()
    assert not User.objects.filter(username="erin").exists()
    assert User.objects.filter(username__startswith="signup").count() == 3
    # The SuperAdmin's own session was not among those ended: the admin still answers.
    page.goto("/admin/accounts/user/")
    expect(page.locator("#result_list")).to_contain_text("dave")
