"""The backups in the admin: list, detail with the comparison, mark safe, compare, restore."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from failsafe import services
from failsafe.models import AuditEvent, Backup
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD

pytestmark = pytest.mark.django_db

User = get_user_model()
CHANGELIST = reverse("admin:failsafe_backup_changelist")


def _lose_dave_and_erin():
    User.objects.filter(username__in=["dave", "erin"]).delete()


def test_the_list_shows_each_backup_with_its_state(root_client, safe_backup, actor):
    failed = Backup.objects.create(type=Backup.Type.MANUAL, status=Backup.Status.FAILED)
    response = root_client.get(CHANGELIST)
    assert response.status_code == 200
    content = response.content.decode()
    assert "known good" in content
    assert '<td class="field-type">Manual</td>' in content
    assert '<td class="field-users">6</td>' in content
    assert '<td class="field-licenses">4</td>' in content
    assert '<td class="field-status">Complete</td>' in content
    assert '<td class="field-status">Failed</td>' in content
    assert '<td class="field-created_by">root</td>' in content
    assert '<td class="field-size">-</td>' in content  # the failed one has no archive
    for title in ("By type", "By status", "By is safe"):
        assert title in content
    only_failed = root_client.get(CHANGELIST, {"status__exact": "FAILED"}).content.decode()
    assert reverse("admin:failsafe_backup_change", args=[failed.pk]) in only_failed
    assert reverse("admin:failsafe_backup_change", args=[safe_backup.pk]) not in only_failed


def test_the_detail_page_shows_the_state_and_offers_the_comparison_with_the_last_safe_backup(
    root_client, safe_backup, actor
):
    _lose_dave_and_erin()
    later = services.create_backup(actor=actor, reason="after the incident")
    events_before = AuditEvent.objects.count()
    response = root_client.get(reverse("admin:failsafe_backup_change", args=[later.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    assert "after the incident" in content
    assert "<th>Users</th><td>4</td>" in content  # the captured state
    # Opening the page runs no comparison and writes nothing to the audit trail.
    assert "Issues detected" not in content
    assert AuditEvent.objects.count() == events_before
    compare_url = reverse("admin:failsafe_backup_compare", args=[later.pk]) + "?against="
    assert f'href="{compare_url}" id="compare-with-safe"' in content

    content = root_client.get(compare_url).content.decode()
    assert "Issues detected" in content
    assert '<ul class="failsafe-issues"><li>User count decreased: 6 -&gt; 4</li>' in content
    assert "Removed (2)</th><td>dave, erin</td>" in content
    assert str(safe_backup.pk) in content  # the baseline is named


def test_mark_as_safe_asks_for_the_failsafe_password_first(root_client, actor, armed, population):
    backup = services.create_backup(actor=actor)
    selected = {"action": "mark_safe_action", "_selected_action": [str(backup.pk)]}
    page = root_client.post(CHANGELIST, selected)
    content = page.content.decode()
    assert page.status_code == 200
    assert 'id="mark-safe-form"' in content and 'type="password"' in content
    backup.refresh_from_db()
    assert not backup.is_safe

    wrong = root_client.post(
        CHANGELIST, {**selected, "apply": "1", "failsafe_password": "wrong"}, follow=True
    )
    assert "Invalid failsafe password" in wrong.content.decode()
    backup.refresh_from_db()
    assert not backup.is_safe

    response = root_client.post(
        CHANGELIST,
        {**selected, "apply": "1", "failsafe_password": FAILSAFE_PASSWORD},
        follow=True,
    )
    assert "1 backup marked as safe." in response.content.decode()
    backup.refresh_from_db()
    assert backup.is_safe
    event = AuditEvent.objects.filter(action="failsafe.marksafe").last()
    assert (event.source, event.ip_address, event.outcome) == ("admin", "127.0.0.1", "SUCCESS")


def test_mark_as_safe_shows_the_services_refusal(root_client, actor, armed):
    failed = Backup.objects.create(type=Backup.Type.MANUAL, status=Backup.Status.FAILED)
    response = root_client.post(
        CHANGELIST,
        {
            "action": "mark_safe_action",
            "_selected_action": [str(failed.pk)],
            "apply": "1",
            "failsafe_password": FAILSAFE_PASSWORD,
        },
        follow=True,
    )
    assert f"Backup {failed.pk} is failed: it has no archive" in response.content.decode()
    failed.refresh_from_db()
    assert not failed.is_safe


def test_compare_with_another_backup_or_the_live_database(root_client, safe_backup, actor):
    response = root_client.post(
        CHANGELIST,
        {"action": "compare_action", "_selected_action": [str(safe_backup.pk)]},
    )
    compare_url = reverse("admin:failsafe_backup_compare", args=[safe_backup.pk])
    assert response["Location"] == compare_url
    page = root_client.get(compare_url).content.decode()
    assert "The live database" in page and "Issues detected" not in page

    _lose_dave_and_erin()
    # Against the live database: what changed from the backup to now, both sides named.
    against_live = root_client.get(compare_url, {"against": "live"}).content.decode()
    assert "User count decreased: 6 -&gt; 4" in against_live
    assert "Removed (2)</th><td>dave, erin</td>" in against_live
    assert f"From <strong>backup {safe_backup.pk}</strong> to <strong>live now</strong>" in (
        against_live
    )

    later = services.create_backup(actor=actor)
    page = root_client.get(
        reverse("admin:failsafe_backup_compare", args=[later.pk]), {"against": str(safe_backup.pk)}
    ).content.decode()
    assert "User count decreased: 6 -&gt; 4" in page


def test_compare_and_restore_actions_want_exactly_one_backup(root_client, safe_backup, actor):
    other = services.create_backup(actor=actor)
    for action in ("compare_action", "restore_action"):
        response = root_client.post(
            CHANGELIST,
            {"action": action, "_selected_action": [str(safe_backup.pk), str(other.pk)]},
            follow=True,
        )
        assert "Select exactly one backup." in response.content.decode()


def test_restore_confirms_with_the_dry_run_then_needs_the_failsafe_password(
    root_client, safe_backup, armed
):
    _lose_dave_and_erin()
    licenses_before = License.objects.count()
    restore_url = reverse("admin:failsafe_backup_restore", args=[safe_backup.pk])
    response = root_client.post(
        CHANGELIST, {"action": "restore_action", "_selected_action": [str(safe_backup.pk)]}
    )
    assert response["Location"] == restore_url

    confirm = root_client.get(restore_url).content.decode()
    assert "What the restore would change (dry run)" in confirm
    assert "insert: dave, erin" in confirm
    assert 'type="password" name="failsafe_password"' in confirm
    assert set(User.objects.values_list("username", flat=True)) == {
        "root",
        "alice",
        "bob",
        "carol",
    }

    wrong = root_client.post(restore_url, {"failsafe_password": "not the failsafe password"})
    content = wrong.content.decode()
    assert wrong.status_code == 200
    assert "Invalid failsafe password" in content
    assert "insert: dave, erin" in content  # still asking, nothing changed
    assert "not the failsafe password" not in content
    assert not User.objects.filter(username__in=["dave", "erin"]).exists()
    assert License.objects.count() == licenses_before

    done = root_client.post(restore_url, {"failsafe_password": FAILSAFE_PASSWORD})
    content = done.content.decode()
    assert done.status_code == 200
    assert "Backup restoration completed." in content
    assert "Verified: the database is identical to the backup." in content
    assert FAILSAFE_PASSWORD not in content
    assert User.objects.filter(username__in=["dave", "erin"]).count() == 2
    assert License.objects.count() == 4
    restore_event = AuditEvent.objects.filter(action="failsafe.restore", outcome="SUCCESS").last()
    assert restore_event.details["dry_run"] is False
    assert (restore_event.source, restore_event.ip_address) == ("admin", "127.0.0.1")
    # Every session ended, this one too: the next page asks to log in again.
    assert root_client.get(CHANGELIST)["Location"].startswith(reverse("admin:login"))


def test_on_a_full_disk_the_admin_restores_only_when_told_to_go_without_a_backup(
    root_client, safe_backup, armed, settings
):
    _lose_dave_and_erin()
    settings.STORAGES = {
        **settings.STORAGES,
        "failsafe": {
            "BACKEND": "tests.failsafe.test_full_disk.FullDiskStorage",
            "OPTIONS": {"location": settings.FAILSAFE_BACKUP_DIR},
        },
    }
    restore_url = reverse("admin:failsafe_backup_restore", args=[safe_backup.pk])
    refused = root_client.post(restore_url, {"failsafe_password": FAILSAFE_PASSWORD})
    content = refused.content.decode()
    assert "The pre-restore backup failed: no space left" in content
    assert "Restore without a backup of the current state" in content
    assert "--without" not in content
    assert not User.objects.filter(username="dave").exists()

    done = root_client.post(
        restore_url,
        {
            "failsafe_password": FAILSAFE_PASSWORD,
            "without_pre_restore_backup": "on",
            "confirmation": str(safe_backup.pk),
        },
    )
    assert "Backup restoration completed." in done.content.decode()
    assert User.objects.filter(username__in=["dave", "erin"]).count() == 2


def test_restore_of_an_unknown_or_malformed_backup_is_404(root_client, superadmin):
    for bad in ("not-a-uuid", "6f1f6b1e-8f0a-4c7e-9d0b-1c2d3e4f5a6b"):
        url = reverse("admin:failsafe_backup_restore", args=[bad])
        assert root_client.get(url).status_code == 404
        compare_url = reverse("admin:failsafe_backup_compare", args=[bad])
        assert root_client.get(compare_url).status_code == 404


def test_back_up_now_from_the_backups_list(root_client, actor, population):
    page = root_client.get(CHANGELIST).content.decode()
    assert 'id="backup-now-form"' in page
    response = root_client.post(
        reverse("admin:failsafe_backup_now"), {"reason": "before the upgrade"}, follow=True
    )
    backup = Backup.objects.get()
    assert (backup.type, backup.reason, backup.status) == (
        "MANUAL",
        "before the upgrade",
        "COMPLETE",
    )
    assert "Backup created" in response.content.decode()
    event = AuditEvent.objects.filter(action="failsafe.backup").get()
    assert (event.source, event.outcome) == ("admin", "SUCCESS")
    assert root_client.get(reverse("admin:failsafe_backup_now")).status_code == 405


def test_marking_safe_a_backup_with_issues_lists_them_and_asks_to_accept(
    root_client, safe_backup, actor
):
    _lose_dave_and_erin()
    damaged = services.create_backup(actor=actor, reason="after the incident")
    selected = {
        "action": "mark_safe_action",
        "_selected_action": [str(damaged.pk)],
        "apply": "1",
        "failsafe_password": FAILSAFE_PASSWORD,
    }
    page = root_client.post(CHANGELIST, selected).content.decode()
    assert 'id="mark-safe-issues"' in page
    assert "<li>User count decreased: 6 -&gt; 4</li>" in page
    assert FAILSAFE_PASSWORD not in page
    damaged.refresh_from_db()
    assert not damaged.is_safe

    accepted = root_client.post(CHANGELIST, {**selected, "accept_issues": "on"}, follow=True)
    assert "1 backup marked as safe." in accepted.content.decode()
    damaged.refresh_from_db()
    assert damaged.is_safe


def test_the_list_shows_short_ids_with_the_whole_id_on_hover(root_client, safe_backup):
    page = root_client.get(CHANGELIST).content.decode()
    full = str(safe_backup.pk)
    assert f'<code title="{full}">{full[:8]}</code>' in page
    # The short id names the backup at every door, as a prefix.
    prefix_page = reverse("admin:failsafe_backup_compare", args=[full[:8]])
    assert root_client.get(prefix_page).status_code == 200
