"""The faster ways capture reads rows give exactly what the ORM reads.

SQLite's datetime columns are read as their stored text and parsed by capture itself, and
many-to-many pks are merged into their rows a block of rows at a time: each path is checked
against `values_list` (and the related managers) on the shapes that take it off its fast
track. The compare merge-join is checked on the row shapes the two sides can hand it.
"""

import datetime
from contextlib import contextmanager

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS, connection, connections

from failsafe import capture
from failsafe.diff import ADDED, MODIFIED, REMOVED, diff_rows
from failsafe.models import Backup
from tests.factories import UserFactory

from .test_capture import assert_same_values, orm_rows, read

pytestmark = pytest.mark.django_db


def store_text(backup: Backup, column: str, text: str) -> None:
    """Writes a timestamp as text past the ORM, the way another program might have."""
    table = connection.ops.quote_name(Backup._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {connection.ops.quote_name(column)} = %s WHERE id = %s",  # noqa: S608
            [text, backup.pk.hex if connection.vendor == "sqlite" else backup.pk],
        )


BACKUP_FIELDS = ["id", "created_at", "finished_at"]


@pytest.mark.parametrize(
    "stored",
    [
        "2024-02-29 23:59:59.999999",  # as Django writes it
        "2024-02-29T23:59:59",  # ISO with a T, no fraction
        "2024-02-29 23:59:59.5+02:00",  # an explicit offset, kept as stored
        "2024-02-29 21:59:59.123456-05:30",
        "2024-02-29 00:00:00",
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_timestamps_stored_in_any_iso_shape_read_as_the_orm_reads_them(stored, stream):
    backup = Backup.objects.create(type=Backup.Type.MANUAL, state={})
    store_text(backup, "created_at", stored)
    store_text(backup, "finished_at", stored)
    Backup.objects.create(type=Backup.Type.MANUAL, state={}, finished_at=None)
    queryset = Backup.objects.order_by("pk")

    assert_same_values(
        read(queryset, BACKUP_FIELDS, stream=stream), orm_rows(queryset, BACKUP_FIELDS)
    )


def test_filtered_and_sliced_reads_keep_their_columns_in_place():
    moments = [datetime.datetime(2025, 1, day, 12, tzinfo=datetime.UTC) for day in range(1, 8)]
    for moment in moments:
        Backup.objects.create(type=Backup.Type.MANUAL, state={}, created_at=moment)
    queryset = Backup.objects.filter(created_at__gte=moments[2]).order_by("created_at")[:3]
    fields = ["created_at", "id", "finished_at", "type", "created_at"]

    rows = read(queryset, fields, stream=False)

    assert_same_values(rows, orm_rows(queryset, fields))
    assert [row[0] for row in rows] == moments[2:5]
    assert read(Backup.objects.none(), fields) == []
    assert read(Backup.objects.filter(pk__in=[]), fields) == []


@contextmanager
def connection_zone(name: str):
    # As Django's own time-zone tests switch a connection's zone: the cached properties go.
    wrapper = connections[DEFAULT_DB_ALIAS]
    original = wrapper.settings_dict["TIME_ZONE"]
    wrapper.settings_dict["TIME_ZONE"] = name
    wrapper.__dict__.pop("timezone", None)
    wrapper.__dict__.pop("timezone_name", None)
    try:
        yield
    finally:
        wrapper.settings_dict["TIME_ZONE"] = original
        wrapper.__dict__.pop("timezone", None)
        wrapper.__dict__.pop("timezone_name", None)


@pytest.mark.skipif(
    connection.vendor != "sqlite",
    reason="only SQLite reads naive stored timestamps in the connection's own zone",
)
def test_a_connection_zone_other_than_utc_is_attached_as_the_orm_attaches_it():
    backup = Backup.objects.create(type=Backup.Type.MANUAL, state={})
    store_text(backup, "created_at", "2024-07-01 08:30:00.25")
    store_text(backup, "finished_at", "2024-07-01 08:30:00+00:00")
    queryset = Backup.objects.order_by("pk")

    with connection_zone("Europe/Paris"):
        ours, orm = read(queryset, BACKUP_FIELDS), orm_rows(queryset, BACKUP_FIELDS)

    assert_same_values(ours, orm)
    assert ours[0][1].utcoffset() == datetime.timedelta(hours=2)


def test_memberships_are_merged_into_the_right_rows_across_blocks(settings):
    settings.FAILSAFE = {"FETCH_SIZE": 3}
    groups = [Group.objects.create(name=f"group{n}") for n in range(5)]
    permissions = list(Permission.objects.order_by("pk")[:4])
    users = [UserFactory(username=f"member{n:02d}") for n in range(11)]
    # Some users in no group, one in every group, memberships added out of pk order.
    for index, user in enumerate(users):
        if index % 3 == 0:
            continue
        user.groups.add(*reversed(groups[: 1 + index % 5]))
    users[7].groups.add(*groups)
    users[10].user_permissions.add(*reversed(permissions))
    users[4].user_permissions.add(permissions[2])
    User = get_user_model()
    spec = capture.spec_for(User)

    rows = list(capture.live_rows(User, spec))

    width = len(spec.fields)
    assert [row[:width] for row in rows] == orm_rows(User.objects.order_by("pk"), spec.fields)
    for row in rows:
        user = User.objects.get(pk=row[0])
        assert row[width:] == [
            sorted(user.groups.values_list("pk", flat=True)),
            sorted(user.user_permissions.values_list("pk", flat=True)),
        ]
    # Rows without a membership each get a list of their own.
    empty = [row[-1] for row in rows if not row[-1]]
    assert len({id(value) for value in empty}) == len(empty) > 1


def test_the_merge_join_finds_every_kind_of_difference_whatever_the_row_type():
    baseline = [[1, "a"], [2, "b"], [3, "c"], [5, "e"]]
    current = [(0, "z"), (1, "a"), (2, "B"), (5, "e"), (6, "f"), (7, "g")]

    found = [(diff.kind, diff.pk) for diff in diff_rows(baseline, current)]

    assert found == [
        (ADDED, 0),
        (MODIFIED, 2),
        (REMOVED, 3),
        (ADDED, 6),
        (ADDED, 7),
    ]
    assert list(diff_rows([[1, "a"]], [])) and list(diff_rows([], [[1, "a"]]))
    assert [d.kind for d in diff_rows([[1, "a"], [2, "b"]], [])] == [REMOVED, REMOVED]


def test_a_large_fetch_is_handed_out_in_smaller_blocks_without_losing_a_row(settings):
    settings.FAILSAFE = {"FETCH_SIZE": 700}
    Group.objects.bulk_create(Group(name=f"team{n:04d}") for n in range(1500))
    queryset = Group.objects.order_by("pk")

    for stream in (True, False):
        blocks = list(capture.row_blocks(queryset, ["id", "name"], stream=stream))

        assert max(len(block) for block in blocks) == capture.BLOCK_ROWS
        assert [row for block in blocks for row in block] == orm_rows(queryset, ["id", "name"])
