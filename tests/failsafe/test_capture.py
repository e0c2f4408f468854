"""Reading the live database: the rows a snapshot holds are exactly what the ORM reads."""

import datetime
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session

from failsafe import audit, capture
from failsafe.models import AuditEvent, Backup
from licensing.models import License
from tests.factories import LicenseFactory, UserFactory

pytestmark = pytest.mark.django_db


def orm_rows(queryset, fields) -> list[list]:
    return [list(row) for row in queryset.values_list(*fields)]


def read(queryset, fields, **options) -> list[list]:
    return [row for block in capture.row_blocks(queryset, fields, **options) for row in block]


def assert_same_values(ours: list[list], orm: list[list]) -> None:
    assert ours == orm
    for our_row, orm_row in zip(ours, orm, strict=True):
        for ours_value, orm_value in zip(our_row, orm_row, strict=True):
            assert type(ours_value) is type(orm_value)
            if isinstance(orm_value, datetime.datetime):
                assert ours_value.tzinfo == orm_value.tzinfo
                assert ours_value.utcoffset() == orm_value.utcoffset()


def field_names(model) -> list[str]:
    return list(capture.spec_for(model).fields)


@pytest.fixture
def varied_backups():
    """Backups with every kind of value their columns hold, nulls included."""
    moment = datetime.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=datetime.UTC)
    Backup.objects.create(
        id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        type=Backup.Type.MANUAL,
        reason="línea\nzwei",
        created_at=moment,
        finished_at=None,
        created_by_id=2**40,
        is_safe=True,
        state={"TotalUsers": 3, "nested": {"list": [1, 2.5, None, "x"]}, "ünïcode": True},
        format_version=2,
        key_id=-(2**31),
    )
    Backup.objects.create(
        type=Backup.Type.PRE_RESTORE,
        created_at=moment - datetime.timedelta(days=400),
        finished_at=moment,
        state={},
    )
    audit.record(
        action="failsafe.test", outcome="SUCCESS", source="cli", details={"n": 1}, ip="::1"
    )


def test_rows_hold_exactly_the_values_and_types_the_orm_reads(varied_backups):
    for model in (Backup, AuditEvent):
        queryset = model.objects.order_by("pk")
        fields = field_names(model)

        assert_same_values(read(queryset, fields), orm_rows(queryset, fields))


def test_the_captured_models_and_sessions_read_as_the_orm_does(db):
    UserFactory(
        username="alice", last_login=datetime.datetime(2023, 5, 1, 8, 30, tzinfo=datetime.UTC)
    )
    LicenseFactory(expires_at=None)
    SessionStore().create()
    for model in (Group, get_user_model(), License, Session):
        queryset = model._default_manager.order_by("pk")
        fields = field_names(model)

        assert_same_values(read(queryset, fields), orm_rows(queryset, fields))


def test_live_rows_append_each_rows_sorted_memberships(db):
    editors, auditors = Group.objects.create(name="editors"), Group.objects.create(name="auditors")
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    bob.groups.add(auditors, editors)
    bob.user_permissions.add(*Permission.objects.order_by("-pk")[:2])
    User = type(alice)
    spec = capture.spec_for(User)

    rows = list(capture.live_rows(User, spec))

    assert [row[: len(spec.fields)] for row in rows] == orm_rows(
        User.objects.order_by("pk"), spec.fields
    )
    assert rows[0][len(spec.fields) :] == [[], []]
    assert rows[1][len(spec.fields) :] == [
        sorted([editors.pk, auditors.pk]),
        sorted(bob.user_permissions.values_list("pk", flat=True)),
    ]


def test_rows_come_in_blocks_of_the_fetch_size(db, settings):
    settings.FAILSAFE = {"FETCH_SIZE": 3}
    for n in range(7):
        Group.objects.create(name=f"group{n}")

    for stream in (True, False):
        blocks = list(
            capture.row_blocks(Group.objects.order_by("pk"), ["id", "name"], stream=stream)
        )

        assert [len(block) for block in blocks] == [3, 3, 1]


def test_a_query_that_can_match_nothing_reads_nothing(db):
    Group.objects.create(name="editors")

    assert read(Group.objects.none(), ["id", "name"]) == []
    assert read(Group.objects.filter(pk__in=[]), ["id", "name"]) == []
    assert read(Group.objects.filter(name="nobody"), ["id", "name"]) == []
