"""The admin page of the investigation kept with an emergency backup."""

import pytest
from django.urls import reverse
from django.utils.html import escape

from failsafe import services
from failsafe.models import AuditEvent
from tests.factories import AdminFactory
from tests.investigations import attacked_trigger

pytestmark = pytest.mark.django_db


def change_page(backup) -> str:
    return reverse("admin:failsafe_backup_change", args=[backup.pk])


def investigation_page(backup) -> str:
    return reverse("admin:failsafe_backup_investigation", args=[backup.pk])


def test_the_backup_page_links_to_its_kept_investigation(root_client, actor, armed, population):
    triggered = attacked_trigger(actor, armed)
    backup = triggered.backup

    detail = root_client.get(change_page(backup)).content.decode()
    assert f'href="{investigation_page(backup)}" id="stored-investigation"' in detail

    events = AuditEvent.objects.count()
    page = root_client.get(investigation_page(backup))

    assert page.status_code == 200
    content = page.content.decode()
    assert "the seed&#x27;s attack" in content  # the reason it was taken for
    for issue in triggered.investigation.comparison.issues:
        assert f"<li>{escape(issue)}</li>" in content
    assert "Recommendations" in content and "Who did what since" in content
    assert "<td>carol</td>" in content and "Changed role." in content
    # A page view reads what is kept: it compares nothing and audits nothing.
    assert AuditEvent.objects.count() == events


def test_a_backup_without_one_offers_no_link_and_its_page_says_why(root_client, actor):
    manual = services.create_backup(actor=actor)

    assert 'id="stored-investigation"' not in root_client.get(change_page(manual)).content.decode()
    page = root_client.get(investigation_page(manual), follow=True)

    assert page.redirect_chain == [(change_page(manual), 302)]
    assert f"Backup {manual.id} has no stored investigation" in page.content.decode()


def test_the_page_is_for_superadmins_only(client, actor, armed, population):
    triggered = attacked_trigger(actor, armed)
    client.force_login(AdminFactory())
    assert client.get(investigation_page(triggered.backup)).status_code == 403
