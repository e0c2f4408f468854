"""A full backup disk: every door says so in one line, and a restore is still possible."""

import errno
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError
from django.urls import reverse

from failsafe import services
from failsafe.exceptions import ConfirmationRequired, StorageFull
from failsafe.models import AuditEvent, Backup
from tests.api.conftest import token_client
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run

User = get_user_model()


class FullDiskStorage(FileSystemStorage):
    """The backup directory of a full disk: everything already there reads, nothing saves."""

    def save(self, name, content, max_length=None):
        raise OSError(errno.ENOSPC, "No space left on device", name)


@pytest.fixture
def incident(actor, armed, population, keyset):
    """A safe backup, then two users lost, then the backup disk fills up."""
    safe = services.create_backup(actor=actor, reason="known good")
    User.objects.filter(username__in=["dave", "erin"]).delete()
    return safe


@pytest.fixture
def full_disk(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "failsafe": {
            "BACKEND": f"{__name__}.FullDiskStorage",
            "OPTIONS": {"location": settings.FAILSAFE_BACKUP_DIR},
        },
    }


def usernames() -> set[str]:
    return set(User.objects.values_list("username", flat=True))


@pytest.mark.django_db
def test_a_backup_on_a_full_disk_fails_in_one_line_and_says_why(actor, incident, full_disk):
    with pytest.raises(StorageFull, match="The backup failed: no space left"):
        services.create_backup(actor=actor, reason="after the incident")
    failed = Backup.objects.get(reason="after the incident")
    assert failed.status == Backup.Status.FAILED
    assert "No space left on device" in failed.error
    event = AuditEvent.objects.filter(action="failsafe.backup").last()
    assert event.outcome == "FAILED" and "No space left" in event.details["error"]

    with pytest.raises(CommandError, match=r"^The backup failed: no space left"):
        run("failsafe_backup")


@pytest.mark.django_db
def test_the_restore_is_refused_until_the_operator_names_the_missing_pre_restore_backup(
    actor, incident, full_disk
):
    with pytest.raises(StorageFull, match="--without-pre-restore-backup"):
        services.restore(actor=actor, backup_id=incident.id, password=FAILSAFE_PASSWORD)
    assert "dave" not in usernames()

    with pytest.raises(ConfirmationRequired, match=f"typing the backup id {incident.id}"):
        services.restore(
            actor=actor,
            backup_id=incident.id,
            password=FAILSAFE_PASSWORD,
            without_pre_restore_backup=True,
            confirmation="yes",
        )
    assert "dave" not in usernames()

    result = services.restore(
        actor=actor,
        backup_id=incident.id,
        password=FAILSAFE_PASSWORD,
        without_pre_restore_backup=True,
        confirmation=str(incident.id).upper(),
    )

    assert {"dave", "erin"} <= usernames()
    assert result.pre_restore_backup is None
    assert result.verification.identical
    event = AuditEvent.objects.filter(action="failsafe.restore", outcome="SUCCESS").get()
    assert event.details["without_pre_restore_backup"] is True
    assert event.details["pre_restore_backup_id"] is None


@pytest.mark.django_db
def test_the_restore_command_on_a_full_disk(superadmin, incident, full_disk):
    with pytest.raises(CommandError) as refused:
        run("failsafe_restore", str(incident.id), "--yes", "--password-stdin", stdin="x")
    assert "\n" not in str(refused.value)

    with pytest.raises(CommandError, match="no space left"):
        run(
            "failsafe_restore",
            str(incident.id),
            "--yes",
            "--password-stdin",
            stdin=FAILSAFE_PASSWORD,
        )
    printed = run(
        "failsafe_restore",
        str(incident.id),
        "--yes",
        "--password-stdin",
        "--without-pre-restore-backup",
        "--confirm",
        str(incident.id),
        "--json",
        stdin=FAILSAFE_PASSWORD,
    )
    assert json.loads(printed)["PreRestoreBackupId"] is None
    assert {"dave", "erin"} <= usernames()


@pytest.mark.django_db
def test_the_api_answers_507_then_restores_when_told_to_go_without(superadmin, incident, full_disk):
    api = token_client(superadmin)
    url = reverse("api:backup-restore", kwargs={"backup_id": incident.id})

    refused = api.post(url, {"failsafe_password": FAILSAFE_PASSWORD}, format="json")
    assert refused.status_code == 507
    # The API names its own fields, not the command line's flags.
    detail = refused.json()["detail"]
    assert '"without_pre_restore_backup": true, with "confirm": the backup id' in detail
    assert "--without" not in detail
    backup = api.post(reverse("api:backups"), {"reason": "now"}, format="json")
    assert backup.status_code == 507 and "no space left" in backup.json()["detail"]

    restored = api.post(
        url,
        {
            "failsafe_password": FAILSAFE_PASSWORD,
            "without_pre_restore_backup": True,
            "confirm": str(incident.id),
        },
        format="json",
    )
    assert restored.status_code == 200
    assert restored.json()["pre_restore_backup_id"] is None
    assert {"dave", "erin"} <= usernames()
