"""The restore's short cuts keep its guarantees.

A full restore reads the backup once: the write pass folds each model's rows into a digest,
and the verification compares it with the digest of the live rows, reading the backup again
only to name what differs. Without a pre-restore backup, a damaged archive is refused by
that one reading, not by a separate check first. These tests show that a value written
wrong is still caught and named, and that a damaged archive still changes nothing.
"""

import contextlib
import datetime

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection

from failsafe import capture, restore, restore_sql, services
from failsafe.exceptions import ArchiveCorrupt, RestoreVerificationFailed
from failsafe.models import Backup, VerifiedChunk
from failsafe.snapshot import Section
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD, LicenseFactory, UserFactory

from .test_chunked_store import archive_files, bulk_users

User = get_user_model()

pytestmark = pytest.mark.django_db


def snapshot() -> list[Section]:
    return [Section(s.spec, list(s.rows)) for s in capture.live_sections()]


def counting_opener(sections: list[Section], opened: list):
    def open_backup():
        opened.append(1)
        return contextlib.nullcontext(sections)

    return open_backup


@pytest.fixture
def world():
    editors = Group.objects.create(name="editors")
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    alice.groups.add(editors)
    bob.groups.add(editors)
    LicenseFactory(owner=bob, max_users=7)
    return {"alice": alice, "bob": bob, "editors": editors}


def test_a_value_written_wrong_is_caught_named_and_rolled_back(world, monkeypatch):
    backup = snapshot()
    User.objects.filter(username="bob").delete()
    before = snapshot()
    SessionStore().create()
    prepared = restore_sql.SqlTable.prepared

    def with_a_wrong_email(self, rows, **kwargs):
        rows = prepared(self, rows, **kwargs)
        for row in rows:
            if self.name.strip('"`') == User._meta.db_table and "bob" in str(row):
                row[self.columns.index(self.connection.ops.quote_name("email"))] = "x@evil.test"
        return rows

    monkeypatch.setattr(restore_sql.SqlTable, "prepared", with_a_wrong_email)
    opened = []

    with pytest.raises(RestoreVerificationFailed, match="accounts.user bob: email differ"):
        restore.apply_restore(sections_factory=counting_opener(backup, opened))

    assert snapshot() == before
    assert Session.objects.count() == 1  # nothing ended: the restore did not happen
    # Once to write, once more only to name the difference the digests found.
    assert len(opened) == 2


def test_a_membership_left_out_is_caught(world, monkeypatch):
    backup = snapshot()
    User.objects.filter(username="bob").delete()
    before = snapshot()
    insert = restore_sql.SqlTable.insert

    def without_memberships(self, rows, **kwargs):
        if "groups" in self.name:
            return None
        return insert(self, rows, **kwargs)

    monkeypatch.setattr(restore_sql.SqlTable, "insert", without_memberships)

    with pytest.raises(RestoreVerificationFailed, match="accounts.user bob: groups differ"):
        restore.apply_restore(sections_factory=lambda: contextlib.nullcontext(backup))

    assert snapshot() == before


def test_an_equal_database_is_verified_from_one_reading(world):
    backup = snapshot()
    License.objects.update(max_users=9)
    world["alice"].groups.clear()
    opened = []

    restore.apply_restore(sections_factory=counting_opener(backup, opened))

    assert snapshot() == backup
    assert len(opened) == 1


def _digest(rows: list[list]) -> tuple[int, int]:
    spec = capture.spec_for(License)
    digests = restore.RowDigests()
    for _row in digests.fold(License, Section(spec, iter(rows))):
        pass
    return digests.by_label[spec.label]


def test_digests_differ_where_the_row_comparison_does(world):
    [row] = next(s.rows for s in snapshot() if s.spec.label == "licensing.license")
    spec = capture.spec_for(License)

    def changed(column: str, value) -> list:
        copy = list(row)
        copy[spec.columns.index(column)] = value
        return copy

    assert _digest([list(row)]) == _digest([list(row)])
    # CPython hashes -1 and -2 alike: integer columns must still tell them apart.
    assert _digest([changed("max_users", -1)]) != _digest([changed("max_users", -2)])
    assert _digest([changed("max_users", 7)]) != _digest([changed("max_users", 8)])
    created = row[spec.columns.index("issued_at")]
    later = created + datetime.timedelta(microseconds=1)
    assert _digest([list(row)]) != _digest([changed("issued_at", later)])
    # A JSON value (unhashable) is folded by content.
    assert _digest([changed("instance_name", {"a": [1, 2]})]) == _digest(
        [changed("instance_name", {"a": [1, 2]})]
    )
    assert _digest([changed("instance_name", {"a": [1, 2]})]) != _digest(
        [changed("instance_name", {"a": [2, 1]})]
    )
    # Row order and row count are part of the digest.
    second = changed("id", row[0] + 1)
    assert _digest([list(row), second]) != _digest([second, list(row)])
    assert _digest([list(row)]) != _digest([list(row), second])


def test_without_a_pre_restore_backup_a_damaged_archive_is_refused_by_the_restore_itself(
    actor, armed, population, settings
):
    bulk_users(1500)
    backup = services.create_backup(actor=actor)
    _, chunks = archive_files(settings, backup)
    damaged = chunks[len(chunks) // 2]
    assert VerifiedChunk.objects.filter(chunk_id=damaged.name).exists()
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    User.objects.filter(username__startswith="bulk0001").delete()
    live_before = sorted(User.objects.values_list("pk", "username", "email"))

    with pytest.raises(ArchiveCorrupt, match=damaged.name):
        services.restore(
            actor=actor,
            backup_id=backup.id,
            password=FAILSAFE_PASSWORD,
            without_pre_restore_backup=True,
            confirmation=str(backup.id),
        )

    assert sorted(User.objects.values_list("pk", "username", "email")) == live_before
    assert not Backup.objects.filter(type=Backup.Type.PRE_RESTORE).exists()
    # The chunk index no longer vouches for the damaged chunk: no backup reuses it unread.
    assert not VerifiedChunk.objects.filter(chunk_id=damaged.name).exists()


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the change journal is PostgreSQL's triggers"
)
def test_the_journal_records_every_row_a_restore_writes(world):
    from journal.models import LicenseEvent, UserEvent

    backup = snapshot()
    bob = world["bob"]
    [bobs_license] = License.objects.filter(owner=bob)
    User.objects.filter(pk=bob.pk).delete()  # his license loses its owner
    world["alice"].groups.clear()
    first_event = UserEvent.objects.order_by("-pgh_id").values_list("pgh_id", flat=True)[0]

    restore.apply_restore(sections_factory=lambda: contextlib.nullcontext(backup))

    assert snapshot() == backup
    since = UserEvent.objects.filter(pgh_id__gt=first_event)
    assert list(since.values_list("pgh_label", "username")) == [("insert", "bob")]
    owners = LicenseEvent.objects.filter(pgh_obj_id=bobs_license.pk, pgh_label="update")
    assert owners.order_by("-pgh_id").values_list("owner_id", flat=True)[0] == bob.pk
