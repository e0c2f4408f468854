"""Restore drills in the admin: their list and detail, the button, and where the last proven
restorable backup shows (the backups' list, a backup's page, the Failsafe page)."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from failsafe import services
from failsafe.models import AuditEvent, Drill
from tests.factories import AdminFactory

pytestmark = pytest.mark.django_db

DRILLS = reverse("admin:failsafe_drill_changelist")
DRILL_NOW = reverse("admin:failsafe_drill_now")
BACKUPS = reverse("admin:failsafe_backup_changelist")


def test_before_any_drill_the_pages_say_none_is_proven_yet(root_client, safe_backup):
    for page in (BACKUPS, DRILLS, reverse("admin:failsafe")):
        content = root_client.get(page).content.decode()
        assert "Last proven restorable backup:" in content, page
        assert "none yet: run a" in content, page
    detail = root_client.get(reverse("admin:failsafe_backup_change", args=[safe_backup.pk]))
    assert "Never drilled" in detail.content.decode()


def test_the_button_runs_a_drill_and_every_page_shows_its_result(root_client, safe_backup):
    response = root_client.post(DRILL_NOW, {"backup_id": ""}, follow=True)

    drill = Drill.objects.get()
    assert drill.passed and drill.backup == safe_backup
    content = response.content.decode()
    assert drill.summary in content  # the success message
    assert AuditEvent.objects.get(action="failsafe.drill").source == AuditEvent.Source.ADMIN
    change_url = reverse("admin:failsafe_drill_change", args=[drill.pk])
    assert change_url in content

    backups = root_client.get(BACKUPS).content.decode()
    assert f"<code>{safe_backup.pk}</code></a>, drilled" in backups
    assert "(10 rows restored into a scratch database and checked)" in backups
    assert '<td class="field-drilled"><span title="Restore drill of' in backups
    assert "✓</span>" in backups

    detail = root_client.get(reverse("admin:failsafe_backup_change", args=[safe_backup.pk]))
    assert f'<a href="{change_url}">{drill.summary}</a>' in detail.content.decode()

    page = root_client.get(change_url).content.decode()
    assert "<td>accounts.user</td><td>6</td><td>6</td><td>0</td>" in page
    failsafe_page = root_client.get(reverse("admin:failsafe")).content.decode()
    assert f"<code>{safe_backup.pk}</code></a>, drilled" in failsafe_page


def test_a_failed_drill_is_an_error_message_and_a_failed_mark(root_client, safe_backup, settings):
    from pathlib import Path

    (Path(settings.FAILSAFE_BACKUP_DIR) / safe_backup.archive_name).write_bytes(b"garbage")

    response = root_client.post(DRILL_NOW, {"backup_id": str(safe_backup.pk)}, follow=True)

    drill = Drill.objects.get()
    assert drill.outcome == Drill.Outcome.FAILED
    content = response.content.decode()
    assert 'class="error"' in content and "failed:" in content
    assert (
        "No model was checked"
        in root_client.get(reverse("admin:failsafe_drill_change", args=[drill.pk])).content.decode()
    )
    assert '">FAILED</span></td>' in root_client.get(BACKUPS).content.decode()
    assert "none yet: run a" in root_client.get(BACKUPS).content.decode()


def test_a_bad_id_is_one_error_message_and_no_drill(root_client, safe_backup):
    response = root_client.post(DRILL_NOW, {"backup_id": "nonsense"}, follow=True)

    assert "Invalid backup id: &#x27;nonsense&#x27;" in response.content.decode()
    assert not Drill.objects.exists()


def test_the_button_only_takes_a_post(root_client, safe_backup):
    assert root_client.get(DRILL_NOW).status_code == 405
    assert not Drill.objects.exists()


def test_drills_are_read_only_and_for_superadmins_only(client, root_client, safe_backup, actor):
    drill = services.run_drill(actor=actor)
    assert root_client.get(reverse("admin:failsafe_drill_add")).status_code == 403
    assert (
        root_client.get(reverse("admin:failsafe_drill_delete", args=[drill.pk])).status_code == 403
    )
    assert (
        b'name="_save"'
        not in root_client.get(reverse("admin:failsafe_drill_change", args=[drill.pk])).content
    )

    staff = AdminFactory()
    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="failsafe"))
    client.force_login(staff)
    assert client.get(DRILLS).status_code == 403
    assert client.post(DRILL_NOW, {}).status_code == 403
    assert Drill.objects.count() == 1


def test_the_admin_index_links_the_drills(root_client, safe_backup):
    assert DRILLS in root_client.get(reverse("admin:index")).content.decode()
