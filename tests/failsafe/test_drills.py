"""Restore drills: a backup restored into a scratch database, read back and checked.

Every drill here really builds the scratch database (a temporary SQLite file, or
`test_raos_drill` on PostgreSQL), migrates it, loads the archive and compares it.
"""

import contextlib
import io
import json
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from accounts.models import User
from failsafe import drills, oplock, services, tasks
from failsafe.archive import files, get_store
from failsafe.archives import open_sections
from failsafe.exceptions import (
    BackupNotFound,
    BackupNotUsable,
    InvalidBackupId,
    NotSuperAdmin,
    OperationInProgress,
)
from failsafe.models import AuditEvent, Backup, Drill
from failsafe.render import seed, text
from failsafe.services.drills import DRILL_LOCK_NAME, NO_SAFE_BACKUP
from failsafe.snapshot import Section
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD, UserFactory
from tests.helpers import run

CAPTURED = ["auth.group", "accounts.user", "licensing.license"]


@pytest.fixture
def grouped(population):
    """The population, with many-to-many rows that point inside the capture (a user's group)
    and outside it (a group's and a user's permissions)."""
    users, licenses = population
    staff = Group.objects.create(name="staff")
    staff.permissions.add(*Permission.objects.filter(codename__startswith="view_")[:3])
    users[0].groups.add(staff)
    users[1].user_permissions.add(Permission.objects.get(codename="add_user"))
    return users, licenses


@pytest.fixture
def safe_backup(actor, armed, grouped):
    backup = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)
    backup.refresh_from_db()
    return backup


def scratch_databases() -> list[str]:
    """PostgreSQL databases a drill made and left behind ([] on SQLite)."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", ["%\\_drill"])
        return [name for (name,) in cursor.fetchall()]


def scratch_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("failsafe-drill-*"))


def live_fingerprint() -> dict:
    """What a drill must leave as it was: counts and every value of one row of each kind."""
    alice = User.objects.get(username="alice")
    return {
        "users": User.objects.count(),
        "licenses": License.objects.count(),
        "groups": Group.objects.count(),
        "permissions": Permission.objects.count(),
        "content_types": ContentType.objects.count(),
        "alice": {f.attname: getattr(alice, f.attname) for f in User._meta.concrete_fields},
        "alice_groups": list(alice.groups.values_list("pk", flat=True)),
        "license": list(License.objects.order_by("pk").values()[:1]),
    }


def chunk_files(backup: Backup) -> list[Path]:
    """The stored chunk files the backup's manifest names."""
    manifest = get_store().read_manifest(
        name=backup.archive_name, sha256=backup.archive_sha256, backup_id=str(backup.id)
    )
    folder = Path(backup_dir())
    return [
        folder / files.ChunkFiles.name(ref.id.hex())
        for entry in manifest.models
        for ref in entry.chunks
    ]


def backup_dir() -> str:
    from django.conf import settings

    return settings.FAILSAFE_BACKUP_DIR


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# --- a good backup --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_drill_of_the_newest_safe_backup_passes_with_every_model_checked(safe_backup):
    folders_before = scratch_folders()

    drill = services.run_drill(actor=services.Actor.system())

    assert drill.outcome == Drill.Outcome.PASSED, drill.error
    assert drill.backup == safe_backup and drill.backup_label == str(safe_backup.id)
    assert drill.error == "" and drill.finished_at is not None
    assert drill.started_by_username == "system"
    counts = safe_backup.state["SystemMetrics"]["ModelCounts"]
    assert list(drill.models_checked) == CAPTURED
    for label in CAPTURED:
        check = drill.models_checked[label]
        assert check["expected"] == check["found"] == counts[label] > 0
        assert check["differences"] == 0 and check["examples"] == []
    assert drill.rows_checked == sum(counts.values()) == 1 + 6 + 4
    if connection.vendor == "postgresql":
        assert drill.scratch_database == f"{connection.settings_dict['NAME']}_drill"
    else:
        assert drill.scratch_database == drills.SQLITE_SCRATCH
    # The scratch database is gone, and so is its connection alias.
    assert scratch_databases() == []
    assert scratch_folders() == folders_before
    assert drills.SCRATCH_ALIAS not in connections.settings
    event = AuditEvent.objects.filter(action="failsafe.drill").get()
    assert event.outcome == AuditEvent.Outcome.SUCCESS and event.actor_username == "system"
    assert event.details["outcome"] == "PASSED" and event.details["drill_id"] == drill.pk
    assert drill.summary.startswith(f"Restore drill of backup {str(safe_backup.id)[:8]} passed")


@pytest.mark.django_db
def test_a_drill_leaves_the_live_database_as_it_was(actor, safe_backup):
    before = live_fingerprint()
    sessions_and_tokens = [model.objects.count() for model in _access_models()]

    drill = services.run_drill(actor=actor)

    assert drill.passed, drill.error
    assert live_fingerprint() == before
    assert [model.objects.count() for model in _access_models()] == sessions_and_tokens
    assert Backup.objects.count() == 1  # no pre-restore backup: nothing was restored here


def _access_models():
    from django.contrib.sessions.models import Session
    from knox.models import AuthToken

    return [Session, AuthToken]


@pytest.mark.django_db
def test_a_named_backup_is_drilled_even_when_not_safe(actor, safe_backup):
    UserFactory(username="zoe")
    newer = services.create_backup(actor=actor, reason="not marked")

    drill = services.run_drill(actor=actor, backup_id=str(newer.id)[:8])

    assert drill.passed and drill.backup == newer
    assert drill.models_checked["accounts.user"]["expected"] == 7


@pytest.mark.django_db
def test_the_scheduled_task_prints_the_drill_in_one_line(safe_backup):
    line = tasks.drill()

    assert line == Drill.objects.get().summary
    assert "passed: 11 rows of 3 models restored and checked" in line


# --- a bad backup ---------------------------------------------------------------------


@pytest.mark.django_db
def test_a_drill_of_a_corrupted_backup_fails_and_tells_the_superadmins(
    safe_backup, mailbox, superadmin
):
    superadmin.email = "root@example.com"
    superadmin.save()
    flip_a_byte(chunk_files(safe_backup)[1])  # the users' rows
    before = live_fingerprint()

    drill = services.run_drill(actor=services.Actor.system())

    assert drill.outcome == Drill.Outcome.FAILED
    assert drill.error and "\n" not in drill.error
    assert drill.finished_at is not None and drill.rows_checked == 0
    assert live_fingerprint() == before
    assert scratch_databases() == []
    assert drills.SCRATCH_ALIAS not in connections.settings
    [message] = mailbox
    assert message.envelope_rcpt_tos == ["root@example.com"]
    assert message["Subject"].startswith("[RaOS Failsafe] Restore drill failed: backup")
    body = message.get_content()
    assert str(safe_backup.id) in body and drill.error in body
    assert f"failsafe_drill {safe_backup.id}" in body
    # Names no secret: no password hash of any user.
    for password in User.objects.values_list("password", flat=True):
        assert password not in body
    event = AuditEvent.objects.filter(action="failsafe.drill").get()
    assert event.outcome == AuditEvent.Outcome.FAILED and event.actor_username == "system"
    assert event.details["outcome"] == "FAILED" and event.details["error"] == drill.error
    assert "failed" in drill.summary


@pytest.mark.django_db
def test_a_truncated_manifest_fails_the_drill(safe_backup):
    path = Path(backup_dir()) / safe_backup.archive_name
    path.write_bytes(path.read_bytes()[:-50])

    drill = services.run_drill(actor=services.Actor.system())

    assert drill.outcome == Drill.Outcome.FAILED and drill.error


@pytest.mark.django_db
def test_rows_that_do_not_come_back_as_archived_fail_the_check(safe_backup):
    """What the check finds when the scratch database gives back other rows than the
    archive: the second pass over the archive is changed here, as a scratch database that
    wrote a value wrongly would differ from it."""
    opened = []

    @contextlib.contextmanager
    def sections_factory():
        opened.append(True)
        with open_sections(safe_backup) as sections:
            if len(opened) == 1:
                yield sections
            else:
                yield (_altered(section) for section in sections)

    report = drills.run(sections_factory=sections_factory)

    assert not report.passed
    users = next(check for check in report.models if check.label == "accounts.user")
    assert users.differences == 1 and users.examples == ["bob: email differ"]
    assert "accounts.user 1 (bob: email differ)" in report.problem
    assert "bob@" not in report.problem  # names the column, never the value


def _altered(section: Section) -> Section:
    if section.spec.label != "accounts.user":
        return section
    email = section.spec.fields.index("email")
    username = section.spec.fields.index("username")

    def rows():
        for row in section.rows:
            if row[username] == "bob":
                row = list(row)
                row[email] = "someone-else@example.com"
            yield row

    return Section(section.spec, rows())


@pytest.mark.django_db
def test_counts_the_backup_recorded_are_checked_against_the_archive(safe_backup):
    report = drills.run(
        sections_factory=lambda: open_sections(safe_backup),
        recorded_counts={"licensing.license": 5},
    )

    licenses = next(check for check in report.models if check.label == "licensing.license")
    assert licenses.examples == ["the archive holds 4 rows, the backup recorded 5"]
    assert not report.passed


@pytest.mark.django_db
def test_a_backup_of_another_schema_fails_the_drill(safe_backup):
    state = safe_backup.state
    state["SystemMetrics"]["Migrations"]["accounts"].append("0099_from_the_future")
    Backup.objects.filter(pk=safe_backup.pk).update(state=state)

    drill = services.run_drill(actor=services.Actor.system())

    assert drill.outcome == Drill.Outcome.FAILED
    assert "0099_from_the_future" in drill.error


# --- refusals -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("backup_id", "refusal"),
    [
        ("not-an-id", InvalidBackupId),
        ("00000000-0000-0000-0000-000000000000", BackupNotFound),
        ("deadbeef", BackupNotFound),
    ],
)
def test_a_bad_backup_id_is_refused_and_no_drill_recorded(actor, safe_backup, backup_id, refusal):
    with pytest.raises(refusal):
        services.run_drill(actor=actor, backup_id=backup_id)
    assert not Drill.objects.exists()
    event = AuditEvent.objects.filter(action="failsafe.drill").get()
    assert event.outcome == AuditEvent.Outcome.FAILED


@pytest.mark.django_db
def test_without_a_safe_backup_there_is_nothing_to_drill(actor, grouped):
    services.create_backup(actor=actor)

    with pytest.raises(BackupNotFound) as refused:
        services.run_drill(actor=services.Actor.system())

    assert str(refused.value) == NO_SAFE_BACKUP
    assert not Drill.objects.exists()


@pytest.mark.django_db
def test_a_failed_backup_cannot_be_drilled(actor, safe_backup):
    failed = Backup.objects.create(type=Backup.Type.MANUAL, status=Backup.Status.FAILED)

    with pytest.raises(BackupNotUsable):
        services.run_drill(actor=actor, backup_id=str(failed.id))


@pytest.mark.django_db
def test_only_a_superadmin_or_the_system_drills(safe_backup):
    plain = UserFactory(username="plain")

    with pytest.raises(NotSuperAdmin):
        services.run_drill(actor=services.Actor(user=plain))
    assert not Drill.objects.exists()


@pytest.mark.django_db
def test_a_drill_never_runs_twice_at_once_but_never_blocks_a_backup(actor, safe_backup):
    with oplock.operation_lock(holder="restore drill of elsewhere", name=DRILL_LOCK_NAME):
        with pytest.raises(OperationInProgress):
            services.run_drill(actor=actor)
        # A backup (an emergency one above all) does not wait for a drill.
        assert services.create_backup(actor=actor).is_complete
    assert not Drill.objects.exists()


@pytest.mark.django_db
def test_a_drill_left_running_by_a_dead_process_is_failed_by_the_next(actor, safe_backup):
    abandoned = Drill.objects.create(backup=safe_backup, backup_label=str(safe_backup.id))

    services.run_drill(actor=actor)

    abandoned.refresh_from_db()
    assert abandoned.outcome == Drill.Outcome.FAILED
    assert abandoned.error == "The process running this drill ended before it finished"


# --- the last proven restorable backup ------------------------------------------------


@pytest.mark.django_db
def test_status_names_the_last_proven_restorable_backup(actor, safe_backup):
    status = services.status(actor=actor)
    assert status.last_verified_restore is None
    assert seed.status(status)["LastVerifiedRestore"] is None
    assert "Last proven restorable backup: none yet: run failsafe_drill" in text.status(status)

    drill = services.run_drill(actor=actor)
    status = services.status(actor=actor)

    shown = seed.status(status)["LastVerifiedRestore"]
    assert shown["BackupId"] == str(safe_backup.id)
    assert shown["DrillId"] == drill.pk
    assert shown["RowsChecked"] == 11
    assert 0 <= shown["AgeSeconds"] < 60
    assert shown["DrilledAtUtc"].endswith("Z")
    json.dumps(shown)
    assert (
        f"Last proven restorable backup: {safe_backup.id}, drilled {shown['AgeSeconds']} s ago"
        in text.status(status)
    )


@pytest.mark.django_db
def test_a_later_failed_drill_takes_the_proof_away(actor, safe_backup):
    services.run_drill(actor=actor)
    assert services.last_verified_restore().backup == safe_backup

    flip_a_byte(chunk_files(safe_backup)[0])
    assert not services.run_drill(actor=actor).passed

    assert services.last_verified_restore() is None


@pytest.mark.django_db
def test_a_deleted_backup_is_no_longer_proven_restorable(actor, safe_backup):
    UserFactory(username="zoe")
    other = services.create_backup(actor=actor)
    services.run_drill(actor=actor, backup_id=str(other.id))
    services.delete_backup(actor=actor, backup_id=str(other.id), password=FAILSAFE_PASSWORD)

    assert services.last_verified_restore() is None
    drill = Drill.objects.get()
    assert drill.backup is None and drill.backup_label == str(other.id)


# --- the command ----------------------------------------------------------------------


@pytest.mark.django_db
def test_failsafe_drill_prints_each_model_and_exits_zero_when_it_passes(safe_backup):
    out = run("failsafe_drill")

    first, *models = out.strip().splitlines()
    assert first.startswith(f"Restore drill of backup {str(safe_backup.id)[:8]} passed")
    assert models == [
        "  auth.group: 1 of 1 rows read back as archived",
        "  accounts.user: 6 of 6 rows read back as archived",
        "  licensing.license: 4 of 4 rows read back as archived",
    ]
    assert AuditEvent.objects.get(action="failsafe.drill").source == AuditEvent.Source.CLI


@pytest.mark.django_db
def test_failsafe_drill_json_and_a_non_zero_exit_when_it_fails(safe_backup):
    flip_a_byte(chunk_files(safe_backup)[0])
    out = io.StringIO()

    with pytest.raises(CommandError) as failed:
        call_command("failsafe_drill", str(safe_backup.id), "--json", stdout=out)

    answer = json.loads(out.getvalue())
    assert answer["Success"] is False and answer["Outcome"] == "FAILED"
    assert answer["BackupId"] == str(safe_backup.id) and answer["Error"]
    assert str(failed.value) == Drill.objects.get().summary
    assert str(failed.value).startswith(f"Restore drill of backup {str(safe_backup.id)[:8]} failed")


@pytest.mark.django_db
def test_failsafe_drill_refuses_a_bad_id_in_one_line(safe_backup):
    with pytest.raises(CommandError) as refused:
        call_command("failsafe_drill", "nonsense", stdout=io.StringIO())

    assert str(refused.value) == "Invalid backup id: 'nonsense'"
    assert not Drill.objects.exists()


@pytest.mark.django_db
def test_failsafe_help_lists_failsafe_drill(superadmin):
    out = run("failsafe_help")

    assert "failsafe_drill [BACKUP_ID]" in out
    assert "failsafe drill [backup-id]" in out
