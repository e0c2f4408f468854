import datetime
import threading
import uuid

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test.utils import override_settings

from failsafe import audit
from failsafe.models import AuditEvent, Backup
from tests.factories import SuperAdminFactory


def record_events(count: int) -> list[AuditEvent]:
    return [
        audit.record(
            action="failsafe.backup",
            outcome=AuditEvent.Outcome.SUCCESS,
            source=AuditEvent.Source.CLI,
            target=f"backup-{number}",
            details={"number": number},
        )
        for number in range(1, count + 1)
    ]


def raw_delete(*seqs: int) -> None:
    # What an attacker with database access does; the ORM refuses.
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        for seq in seqs:
            cursor.execute(f"DELETE FROM {table} WHERE seq = %s", [seq])


def backup_recording_head(seq: int, head_hash: str) -> Backup:
    return Backup.objects.create(
        type=Backup.Type.MANUAL,
        status=Backup.Status.COMPLETE,
        audit_head_seq=seq,
        audit_head_hash=head_hash,
    )


@pytest.mark.django_db
def test_an_empty_trail_verifies_and_its_head_is_genesis():
    assert audit.head() == (0, audit.GENESIS_HASH)
    result = audit.verify_chain()
    assert result.ok
    assert result.checked == 0


@pytest.mark.django_db
def test_events_form_a_chain_that_verifies():
    events = record_events(5)

    assert [event.seq for event in events] == [1, 2, 3, 4, 5]
    assert events[0].prev_hash == audit.GENESIS_HASH
    for previous, event in zip(events, events[1:], strict=False):
        assert event.prev_hash == previous.hash
    assert audit.head() == (5, events[-1].hash)
    result = audit.verify_chain()
    assert result == audit.ChainVerification(True, 5, None, "all 5 events intact")


@pytest.mark.django_db
def test_an_edited_event_is_found_by_its_seq():
    record_events(5)
    AuditEvent.objects.filter(seq=3).update(details={"number": 300})

    result = audit.verify_chain()

    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.checked == 2
    assert result.reason == "event #3 was modified (hash mismatch)"


@pytest.mark.django_db
def test_an_edit_with_a_hash_recomputed_without_the_key_is_found():
    record_events(3)
    forged = AuditEvent.objects.get(seq=2)
    forged.outcome = AuditEvent.Outcome.DENIED
    with override_settings(FAILSAFE_AUDIT_KEY="the attacker's guess"):
        forged_hash = audit.event_hash(forged)
    AuditEvent.objects.filter(seq=2).update(outcome=forged.outcome, hash=forged_hash)

    result = audit.verify_chain()

    assert not result.ok
    assert result.first_broken_seq == 2
    assert result.reason == "event #2 was modified (hash mismatch)"


@pytest.mark.django_db
def test_the_chain_only_verifies_under_the_key_it_was_written_with():
    record_events(2)
    with override_settings(FAILSAFE_AUDIT_KEY="another key"):
        result = audit.verify_chain()
    assert not result.ok
    assert result.first_broken_seq == 1


@pytest.mark.django_db
def test_a_deleted_middle_event_is_found():
    record_events(5)
    raw_delete(3)

    result = audit.verify_chain()

    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.reason == "event #3 is missing (seq jumps 2 -> 4)"


@pytest.mark.django_db
def test_two_swapped_events_are_found_as_reordered():
    record_events(5)
    AuditEvent.objects.filter(seq=3).update(seq=1000)
    AuditEvent.objects.filter(seq=4).update(seq=3)
    AuditEvent.objects.filter(seq=1000).update(seq=4)

    result = audit.verify_chain()

    assert not result.ok
    assert result.first_broken_seq == 3
    assert result.reason == "event #3 does not link to #2 (reordered or replaced)"


@pytest.mark.django_db
def test_a_truncated_tail_is_found_through_a_backups_recorded_head():
    events = record_events(5)
    backup = backup_recording_head(5, events[-1].hash)
    raw_delete(4, 5)

    result = audit.verify_chain()

    assert not result.ok
    assert result.checked == 3
    assert result.first_broken_seq == 4
    assert result.reason == (
        f"chain truncated: backup {backup.id} recorded head #5 but the chain ends at #3"
    )


@pytest.mark.django_db
def test_a_truncated_and_rewritten_tail_differs_from_the_recorded_head():
    events = record_events(5)
    backup = backup_recording_head(5, events[-1].hash)
    raw_delete(4, 5)
    record_events(2)  # the application goes on writing: new #4 and #5

    result = audit.verify_chain()

    assert not result.ok
    assert result.first_broken_seq == 5
    assert result.reason == f"event #5 differs from the head recorded by backup {backup.id}"


@pytest.mark.django_db
def test_backups_whose_heads_match_keep_the_chain_verified():
    events = record_events(4)
    backup_recording_head(2, events[1].hash)
    backup_recording_head(4, events[3].hash)
    Backup.objects.create(type=Backup.Type.MANUAL)  # no head recorded: nothing to check
    record_events(1)

    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_secret_looking_details_are_redacted_before_storing():
    event = audit.record(
        action="failsafe.restore",
        outcome=AuditEvent.Outcome.DENIED,
        source=AuditEvent.Source.API,
        details={
            "password": "hunter2-hunter2",
            "Passkey": "SERVER-ABCDEF-GHJKLM-NPQRST",
            "request": {"failsafePassword": "hunter2-hunter2", "backup": "b1"},
            "attempts": [{"api_token": "tok-123"}, {"note": "kept"}],
            "reason": "Invalid passkey",
        },
    )

    stored = AuditEvent.objects.get(pk=event.pk).details
    assert stored == {
        "password": "[redacted]",
        "Passkey": "[redacted]",
        "request": {"failsafePassword": "[redacted]", "backup": "b1"},
        "attempts": [{"api_token": "[redacted]"}, {"note": "kept"}],
        "reason": "Invalid passkey",
    }
    assert "hunter2" not in str(stored)
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_details_and_addresses_read_back_exactly_as_they_were_hashed():
    backup_id = uuid.uuid4()
    moment = datetime.datetime(2030, 1, 2, 3, 4, 5, 600, tzinfo=datetime.UTC)
    event = audit.record(
        action="failsafe.compare",
        outcome=AuditEvent.Outcome.SUCCESS,
        source=AuditEvent.Source.TERMINAL,
        details={
            "backup": backup_id,
            "at": moment,
            "big": 1e20,
            "ratio": 0.00001,
            "labels": ("a", "b"),
            3: "integer key",
            "unicode": "naïve ✓",
        },
        ip="0:0:0:0:0:0:0:1",
    )

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.details["backup"] == str(backup_id)
    assert stored.details["at"] == moment.isoformat()
    assert stored.details["labels"] == ["a", "b"]
    assert stored.details["3"] == "integer key"
    assert stored.ip_address == "::1"
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_an_unparsable_ip_and_an_overlong_target_do_not_lose_the_event():
    event = audit.record(
        action="failsafe.restore",
        outcome=AuditEvent.Outcome.FAILED,
        source=AuditEvent.Source.API,
        target="x" * 1000,
        ip="not an address",
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.ip_address is None
    assert stored.target == "x" * 255
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_unknown_outcome_or_source_is_refused():
    with pytest.raises(ValueError, match="outcome"):
        audit.record(action="a", outcome="Success", source=AuditEvent.Source.CLI)
    with pytest.raises(ValueError, match="source"):
        audit.record(action="a", outcome=AuditEvent.Outcome.SUCCESS, source="shell")
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_an_event_cannot_be_changed_through_the_orm():
    event = record_events(1)[0]
    event.outcome = AuditEvent.Outcome.DENIED
    with pytest.raises(AuditEvent.Immutable):
        event.save()

    loaded = AuditEvent.objects.get(pk=event.pk)
    loaded.details = {"number": 2}
    with pytest.raises(AuditEvent.Immutable):
        loaded.save()
    with pytest.raises(AuditEvent.Immutable):
        loaded.save(update_fields=["details"])

    # A fresh instance carrying the row's pk is always inserted, so it cannot overwrite it.
    impostor = AuditEvent(
        pk=event.pk,
        seq=event.seq,
        source=event.source,
        action=event.action,
        outcome=AuditEvent.Outcome.DENIED,
        prev_hash=event.prev_hash,
        hash=event.hash,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        impostor.save()

    assert AuditEvent.objects.get(pk=event.pk).outcome == AuditEvent.Outcome.SUCCESS
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_an_event_cannot_be_deleted_through_the_orm():
    event = record_events(2)[0]
    with pytest.raises(AuditEvent.Immutable):
        event.delete()
    with pytest.raises(AuditEvent.Immutable):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(AuditEvent.Immutable):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 2


@pytest.mark.django_db
def test_deleting_the_actor_keeps_the_event_unchanged():
    admin = SuperAdminFactory(username="root-alice")
    admin_id = admin.pk
    event = audit.record(
        action="failsafe.restore",
        outcome=AuditEvent.Outcome.SUCCESS,
        source=AuditEvent.Source.ADMIN,
        actor=admin,
        ip="10.0.0.7",
    )

    admin.delete()

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.actor_id == admin_id
    assert stored.actor_username == "root-alice"
    assert stored.ip_address == "10.0.0.7"
    assert audit.verify_chain().ok


def append_concurrently(writers: int, per_writer: int, *, record=None) -> None:
    """`writers` threads, each on its own connection, append `per_writer` events at once
    (with `record`, default record_events)."""
    record = record or record_events
    start = threading.Barrier(writers)
    failures = []

    def append_some():
        try:
            start.wait()
            record(per_writer)
        except Exception as exc:  # reported below, with the main thread's assertion
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append_some) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_never_fork_the_chain():
    if connection.vendor == "sqlite" and connection.creation.is_in_memory_db(
        connection.settings_dict["NAME"]
    ):
        # Threads share one in-memory database through SQLite's shared cache, whose table
        # locks fail at once instead of waiting: not how two server processes meet.
        pytest.skip("needs a database that separate connections can share")
    writers, per_writer = 4, 5
    append_concurrently(writers, per_writer)
    assert list(AuditEvent.objects.values_list("seq", flat=True)) == list(
        range(1, writers * per_writer + 1)
    )
    assert audit.verify_chain().ok


@pytest.mark.django_db
def test_a_nul_character_typed_by_a_user_is_stored_not_refused():
    event = audit.record(
        action="failsafe.marksafe",
        outcome="DENIED",
        source="api",
        target="live\x00",
        details={"reason": "Invalid backup id: 'live\x00'"},
    )
    event.refresh_from_db()
    assert event.target == "live\ufffd"
    assert audit.verify_chain().ok
