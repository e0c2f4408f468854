"""The audit chain's head anchored outside the database, and what that lets verify find.

Every test commits for real (transaction=True): anchors are written after the commit, as on
a running server. The attacker here has write access to the database (raw SQL, as the ORM
refuses to change events), sometimes SECRET_KEY, and only where a test says so the backup
storage.
"""

import io
import json
import logging
import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone

from failsafe import audit, services
from failsafe.archive import get_store
from failsafe.models import AuditEvent, Backup

from .test_audit import append_concurrently

pytestmark = pytest.mark.django_db(transaction=True)


def anchor_file(settings) -> Path:
    return Path(settings.FAILSAFE_BACKUP_DIR) / "audit" / "anchors.log"


def record_events(count: int) -> list[AuditEvent]:
    return [
        audit.record(
            action="failsafe.trigger",
            outcome=AuditEvent.Outcome.DENIED,
            source=AuditEvent.Source.API,
            target=f"attempt-{number}",
            details={"reason": "Invalid server license passkey"},
        )
        for number in range(1, count + 1)
    ]


def execute(sql: str, params=()) -> None:
    # What someone with database access does; the ORM refuses to delete events.
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def events_table() -> str:
    return connection.ops.quote_name(AuditEvent._meta.db_table)


def delete_events_after(seq: int) -> None:
    execute(f"DELETE FROM {events_table()} WHERE seq > %s", [seq])  # noqa: S608


def verify_command(*args: str) -> str:
    """What `failsafe_audit --verify` prints and, when it fails, its one-line error."""
    out = io.StringIO()
    try:
        call_command("failsafe_audit", "--verify", *args, stdout=out)
    except CommandError as exc:
        return f"{out.getvalue()}CommandError: {exc}"
    return out.getvalue()


def forged_hash(event: AuditEvent) -> str:
    """The hash an attacker computes knowing only SECRET_KEY: the default audit key source."""
    with override_settings(FAILSAFE_AUDIT_KEY=""):
        return audit.event_hash(event)


def resign_from(first_seq: int) -> None:
    """Re-links and re-signs every event from `first_seq` on under the SECRET_KEY-derived
    key, as after deleting an event there."""
    previous_hash = AuditEvent.objects.get(seq=first_seq - 1).hash
    for event in AuditEvent.objects.filter(seq__gte=first_seq).order_by("seq"):
        event.prev_hash = previous_hash
        event.hash = forged_hash(event)
        AuditEvent.objects.filter(pk=event.pk).update(prev_hash=event.prev_hash, hash=event.hash)
        previous_hash = event.hash


def test_every_event_is_anchored_outside_the_database_by_one_line(settings):
    events = record_events(3)

    lines = anchor_file(settings).read_text().splitlines()
    # One short line per event, seq and MAC: nothing that lets anyone forge or read secrets.
    assert lines == [f"{event.seq} {event.hash}" for event in events]
    assert settings.FAILSAFE_AUDIT_KEY not in anchor_file(settings).read_text()
    assert oct(anchor_file(settings).stat().st_mode & 0o777) == "0o600"
    verified = audit.verify_chain()
    assert verified.ok
    assert (verified.anchored_seq, verified.unanchored) == (3, 0)


def test_an_event_rolled_back_with_its_transaction_is_not_anchored(settings):
    record_events(1)
    with pytest.raises(RuntimeError), transaction.atomic():
        record_events(1)
        raise RuntimeError("the operation failed and took its audit event with it")
    record_events(1)

    assert [line.split()[0] for line in anchor_file(settings).read_text().splitlines()] == [
        "1",
        "2",
    ]
    assert audit.verify_chain().ok


def test_concurrent_writers_anchor_every_event_on_a_line_of_its_own(settings):
    if connection.vendor == "sqlite" and connection.creation.is_in_memory_db(
        connection.settings_dict["NAME"]
    ):
        pytest.skip("needs a database that separate connections can share")
    writers, per_writer = 4, 5
    append_concurrently(writers, per_writer, record=record_events)
    lines = anchor_file(settings).read_text().splitlines()
    stored = dict(AuditEvent.objects.values_list("seq", "hash"))
    assert sorted(lines) == sorted(f"{seq} {mac}" for seq, mac in stored.items())
    result = audit.verify_chain()
    assert (result.ok, result.anchored_seq, result.unanchored) == (True, 20, 0)


def test_deleting_the_events_after_the_last_backup_is_reported(actor, armed):
    services.status(actor=actor)
    backup = services.create_backup(actor=actor)
    services.status(actor=actor)  # the attacker's own doings, which they then erase
    services.status(actor=actor)
    last_kept = backup.audit_head_seq
    anchored = AuditEvent.objects.order_by("-seq").first().seq
    delete_events_after(last_kept)

    said = verify_command()

    assert said.endswith(
        f"CommandError: Audit chain broken at event #{last_kept + 1}: events after "
        f"#{last_kept} were deleted: the anchors outside the database name events up to "
        f"#{anchored}"
    )
    # The application goes on writing (that verification was an event under a deleted
    # number): the deletion is still reported as one.
    again = json.loads(verify_command("--json").split("CommandError:")[0])
    assert again["Valid"] is False
    assert again["DeletedAfter"] == last_kept
    assert again["Reason"].startswith(f"events after #{last_kept} were deleted")


def test_a_wiped_table_is_reported():
    record_events(4)
    execute(f"DELETE FROM {events_table()}")  # noqa: S608

    result = audit.verify_chain()

    assert not result.ok
    assert result.wiped
    assert result.first_broken_seq == 1
    assert result.reason == (
        "the audit table was wiped: the anchors outside the database name 4 events up to #4, "
        "the table holds none"
    )


def test_a_wiped_table_with_the_backups_recorded_heads_wiped_too_is_reported(actor, armed):
    services.status(actor=actor)
    services.create_backup(actor=actor)
    services.status(actor=actor)
    execute(f"DELETE FROM {events_table()}")  # noqa: S608
    Backup.objects.update(audit_head_seq=None, audit_head_hash="")

    said = verify_command()

    assert "CommandError: Audit chain broken at event #1: the audit table was wiped" in said
    # That verification is now event #1 of a new trail; the wipe is still what is reported.
    result = audit.verify_chain()
    assert (result.ok, result.wiped, result.deleted_after) == (False, True, 0)
    assert result.reason.startswith("the audit table was wiped and written again")


def test_the_admin_shows_a_deleted_tail(client, superadmin, actor, armed):
    services.status(actor=actor)
    services.status(actor=actor)
    services.status(actor=actor)
    delete_events_after(1)
    client.force_login(superadmin)

    page = client.post(reverse("admin:failsafe_auditevent_verify"), follow=True)

    content = page.content.decode()
    assert "Audit chain broken at event #2: events after #1 were deleted" in content
    assert "Events after #1 were deleted: the anchors kept outside the database" in content


def test_re_signing_with_a_stolen_secret_key_is_caught_by_the_anchors(settings, actor, armed):
    """With the default key source, SECRET_KEY is the audit key: an attacker holding it and
    the database can delete an event and re-sign everything after it, backups' recorded
    heads included, and the chain verifies. The anchors, outside their reach, still hold
    the MACs the events had."""
    settings.FAILSAFE_AUDIT_KEY = ""
    services.status(actor=actor)
    evidence = record_events(1)[0]  # the event the attacker wants gone
    services.status(actor=actor)
    backup = services.create_backup(actor=actor)
    services.status(actor=actor)
    execute(f"DELETE FROM {events_table()} WHERE seq = %s", [evidence.seq])  # noqa: S608
    for event in AuditEvent.objects.filter(seq__gt=evidence.seq).order_by("seq"):
        AuditEvent.objects.filter(pk=event.pk).update(seq=event.seq - 1)
    resign_from(evidence.seq)
    moved_head = AuditEvent.objects.get(seq=backup.audit_head_seq - 1)
    Backup.objects.filter(pk=backup.pk).update(
        audit_head_seq=moved_head.seq, audit_head_hash=moved_head.hash
    )

    result = audit.verify_chain()

    assert not result.ok
    assert result.first_broken_seq == evidence.seq
    assert result.reason == (
        f"event #{evidence.seq} differs from its anchor outside the database "
        "(rewritten or re-signed from there on)"
    )
    # The anchors are what caught it: without them the chain and the backup's head agree.
    anchor_file(settings).rename(anchor_file(settings).with_name("moved-aside"))
    assert audit.verify_chain().ok


def test_a_separate_audit_key_stops_a_stolen_secret_key_even_with_the_anchors_rewritten(
    settings,
):
    """With FAILSAFE_AUDIT_KEY set apart, SECRET_KEY does not sign the chain. An attacker who
    also writes the backup storage can make the anchors agree with a forged trail, but not
    make that trail verify: the key, not the anchors, stops them. (The same holds without
    anchors; what anchors add against this attacker is nothing, and README says so.)"""
    record_events(3)
    execute(f"DELETE FROM {events_table()}")  # noqa: S608
    forged = []
    for number in range(1, 3):
        event = AuditEvent(
            seq=number,
            created_at=timezone.now(),
            source=AuditEvent.Source.CLI,
            action="failsafe.status",
            outcome=AuditEvent.Outcome.SUCCESS,
            details={},
            prev_hash=forged[-1].hash if forged else audit.GENESIS_HASH,
        )
        event.hash = forged_hash(event)
        event.save()
        forged.append(event)
    anchor_file(settings).parent.mkdir(parents=True, exist_ok=True)
    anchor_file(settings).write_text("".join(f"{e.seq} {e.hash}\n" for e in forged))

    result = audit.verify_chain()

    assert not result.ok
    assert (result.first_broken_seq, result.reason) == (1, "event #1 was modified (hash mismatch)")


def test_an_anchor_that_cannot_be_written_loses_no_event_and_shows(
    settings, tmp_path, caplog, superadmin
):
    record_events(2)
    backups = settings.FAILSAFE_BACKUP_DIR
    # The anchor storage is full: /dev/full answers every write with ENOSPC.
    full = tmp_path / "full-disk"
    (full / "audit").mkdir(parents=True)
    os.symlink("/dev/full", full / "audit" / "anchors.log")
    settings.FAILSAFE_BACKUP_DIR = str(full)
    with caplog.at_level(logging.ERROR, logger="failsafe.audit"):
        unanchored = record_events(2)
    settings.FAILSAFE_BACKUP_DIR = backups

    assert [event.seq for event in unanchored] == [3, 4]
    assert AuditEvent.objects.count() == 4
    assert "Audit event #3 could not be anchored outside the database: [Errno 28]" in caplog.text
    result = audit.verify_chain()
    assert (result.ok, result.anchored_seq, result.unanchored) == (True, 2, 2)
    said = verify_command()
    assert "Audit chain intact: 4 events verified" in said
    assert "Warning: events #3-#4 are not anchored outside the database yet" in said

    # That verification's own event was anchored, and its hash covers #3 and #4 as well.
    assert audit.verify_chain().unanchored == 0
    delete_events_after(3)
    assert audit.verify_chain().reason.startswith("events after #3 were deleted")


def test_a_torn_anchor_line_costs_only_that_line(settings):
    record_events(1)
    with open(anchor_file(settings), "a") as log:
        log.write("2 0123")  # the power went out mid-line
    record_events(1)

    result = audit.verify_chain()

    assert anchor_file(settings).read_text().splitlines()[1:] == [
        "2 0123",
        f"2 {AuditEvent.objects.get(seq=2).hash}",
    ]
    assert (result.ok, result.anchored_seq, result.unreadable_anchors) == (True, 2, 1)


def test_a_storage_that_cannot_append_keeps_one_object_per_anchor(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        # Django's own storage without local files, standing for any that cannot append.
        "failsafe": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    events = record_events(3)

    storage = get_store().storage
    assert sorted(storage.listdir("audit/anchors")[1]) == [
        f"{event.seq:020d}-{event.hash}" for event in events
    ]
    delete_events_after(1)
    result = audit.verify_chain()
    assert (result.ok, result.deleted_after) == (False, 1)
    assert result.reason == (
        "events after #1 were deleted: the anchors outside the database name events up to #3"
    )


def check(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("check", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_check_deploy_warns_unless_the_audit_key_is_set_apart(settings):
    warning = "(failsafe.W001) FAILSAFE_AUDIT_KEY is not set apart from SECRET_KEY"

    settings.FAILSAFE_AUDIT_KEY = ""
    assert warning in check("--deploy")
    assert "failsafe.W001" not in check()  # a deployment concern only

    settings.FAILSAFE_AUDIT_KEY = settings.SECRET_KEY
    assert warning in check("--deploy")

    settings.FAILSAFE_AUDIT_KEY = "a-key-of-its-own-kept-away-from-secret-key"
    assert "failsafe.W001" not in check("--deploy")
