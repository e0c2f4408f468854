"""GET backups/{id}/investigation/: the investigation kept with an emergency backup."""

import json

import pytest
from django.urls import reverse
from rest_framework.renderers import JSONRenderer

from failsafe import services
from failsafe.api.serializers import InvestigationSerializer
from failsafe.investigate import Investigation
from failsafe.models import Backup
from tests.investigations import attacked_trigger

pytestmark = pytest.mark.django_db


def url(backup_id) -> str:
    return reverse("api:backup-investigation", kwargs={"backup_id": backup_id})


def as_sent(report) -> dict:
    return json.loads(JSONRenderer().render(InvestigationSerializer(report).data))


def test_the_kept_investigation_is_served_as_the_trigger_answered(api, actor, armed, population):
    triggered = attacked_trigger(actor, armed)
    # Read back from a fresh row, as after a restart of the server.
    kept = Investigation.from_data(Backup.objects.get(pk=triggered.backup.pk).investigation)

    response = api.get(url(triggered.backup.id))

    assert response.status_code == 200
    body = response.json()
    assert body == as_sent(triggered.investigation) == as_sent(kept)
    assert "User promoted to SuperAdmin: carol" in body["comparison"]["issues"]
    assert body["last_safe_backup"] == triggered.investigation.last_safe_backup
    assert "carol" in body["root_cause"]["by_actor"]


def test_no_investigation_or_no_backup_is_a_json_404_in_one_line(api, actor):
    manual = services.create_backup(actor=actor)

    none_kept = api.get(url(manual.id))
    malformed = api.get(url("nonsense"))
    unknown = api.get(url("00000000-0000-4000-8000-000000000000"))

    assert none_kept.status_code == malformed.status_code == unknown.status_code == 404
    assert none_kept.json() == {
        "detail": f"Backup {manual.id} has no stored investigation: only emergency backups "
        "(taken by a trigger or by the drift watch) keep one"
    }
    assert malformed.json() == {"detail": "Invalid backup id: 'nonsense'"}
    assert unknown.json() == {"detail": "Backup not found: 00000000-0000-4000-8000-000000000000"}


def test_only_superadmins_read_it(role_clients, actor, armed, population):
    triggered = attacked_trigger(actor, armed)
    for role, client in role_clients.items():
        status = client.get(url(triggered.backup.id)).status_code
        assert status == (200 if role == "superadmin" else 401 if role == "anonymous" else 403)


def test_the_api_root_lists_it(anonymous):
    entries = anonymous.get(reverse("api:root")).json()["entry_points"]
    assert entries["investigation"]["url"] == "/api/failsafe/backups/{id}/investigation/"
