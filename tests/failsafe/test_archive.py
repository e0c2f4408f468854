"""Format 1, the single-file archive: new backups are chunked (test_chunked_store.py), but
archives written before still have to open, verify and restore exactly."""

import datetime
import decimal
import hashlib
import math
import os
import random
import uuid
from pathlib import Path

import pytest
import zstandard

from failsafe import keys
from failsafe.archive import codec, get_store, single_file
from failsafe.exceptions import ArchiveCorrupt, InvalidBackupId
from failsafe.snapshot import ModelSpec, Section

UTC = datetime.UTC
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
BRT = datetime.timezone(datetime.timedelta(hours=-3))

USER_SPEC = ModelSpec(
    "accounts.user",
    (
        "id",
        "username",
        "last_login",
        "local_stamp",
        "birthday",
        "alarm",
        "alarm_tz",
        "grace",
        "balance",
        "ratio",
        "token",
        "avatar",
        "empty_blob",
        "is_active",
        "is_staff",
        "notes",
        "score",
        "profile",
    ),
    ("groups", "user_permissions"),
)
GROUP_SPEC = ModelSpec("auth.group", ("id", "name"), ("permissions",))
LICENSE_SPEC = ModelSpec("licensing.license", ("id", "key", "status"))
COUNTER_SPEC = ModelSpec("test.counter", ("id", "value"))


def user_rows() -> list[list]:
    return [
        [
            1,
            "evelyn_superadmin",
            datetime.datetime(2024, 5, 17, 13, 45, 12, 123456, tzinfo=UTC),
            datetime.datetime(2001, 2, 3, 4, 5, 6),
            datetime.date(1999, 12, 31),
            datetime.time(23, 59, 58, 999999),
            datetime.time(8, 0, tzinfo=BRT),
            datetime.timedelta(days=-3, seconds=5, microseconds=7),
            decimal.Decimal("1.10"),
            decimal.Decimal("-0.000"),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            b"\x00\xffbinary\x00",
            b"",
            True,
            False,
            "",
            0.1,
            {
                "joined": "2024-01-01T00:00:00Z",
                "nested": [1, "2.50", {"deep": None, "flag": True}],
                "ratio": 1.5,
                "huge": 2**70,
                "name": "ünïcødé ✓",
            },
            [1, 5, 9],
            [],
        ],
        [
            2**64,
            "x" * 150,
            datetime.datetime(1970, 1, 1, 5, 30, tzinfo=IST),
            datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
            datetime.date(1, 1, 1),
            datetime.time(0, 0),
            None,
            datetime.timedelta(0),
            decimal.Decimal("12345678901234567890.123456789"),
            decimal.Decimal("1E+3"),
            uuid.uuid4(),
            bytes(range(256)),
            None,
            False,
            True,
            None,
            float("inf"),
            [],
            [],
            [3],
        ],
        [
            2**64 + 1,
            "edge_ints",
            None,
            None,
            None,
            None,
            None,
            datetime.timedelta(days=999999999, seconds=86399, microseconds=999999),
            decimal.Decimal("-7"),
            None,
            None,
            None,
            None,
            None,
            None,
            "2024-05-17",
            -2.5e-300,
            [2**63 - 1, -(2**63), 2**64 - 1, -(2**63) - 1, 10**40, -(10**40), 0, -1],
            [],
            [],
        ],
    ]


def group_rows() -> list[list]:
    return [[1, "Admins", [4, 8, 15]], [2, "Empty", []], [3, "Readers", [16]]]


def snapshot() -> list[Section]:
    return [
        Section(GROUP_SPEC, iter(group_rows())),
        Section(USER_SPEC, iter(user_rows())),
        Section(LICENSE_SPEC, iter([])),
    ]


def assert_identical(actual, expected, where="value"):
    """Equal and of the same type, all the way down; Decimals keep their digits."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} is not {type(expected)}"
    if isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_identical(a, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_identical(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, decimal.Decimal):
        assert str(actual) == str(expected), where
    elif isinstance(expected, datetime.datetime | datetime.time):
        assert actual == expected, where
        assert actual.utcoffset() == expected.utcoffset(), where
        assert actual.isoformat() == expected.isoformat(), where
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), where
    else:
        assert actual == expected, where


def read_everything(store, info, backup_id) -> list[list]:
    with store.open(name=info.name, sha256=info.sha256, backup_id=backup_id) as reader:
        return [[section.spec.label, list(section.rows)] for section in reader.sections()]


def stored_path(info) -> Path:
    return Path(get_store().storage.path(info.name))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def keyset():
    keys.ensure_keyset_file()


@pytest.fixture
def store():
    return get_store()


@pytest.fixture
def backup_id():
    return str(uuid.uuid4())


@pytest.fixture
def written(store, backup_id):
    meta = {"Timestamp": "2024-05-17T13:45:12Z", "taken_at": datetime.datetime(2024, 5, 17)}
    return store.write(format_version=1, backup_id=backup_id, meta=meta, sections=snapshot())


def test_every_value_type_round_trips_exactly(store, backup_id, written):
    with store.open(name=written.name, sha256=written.sha256, backup_id=backup_id) as reader:
        assert_identical(
            reader.meta,
            {"Timestamp": "2024-05-17T13:45:12Z", "taken_at": datetime.datetime(2024, 5, 17)},
        )
        sections = [(section.spec, list(section.rows)) for section in reader.sections()]

    assert [spec for spec, _ in sections] == [GROUP_SPEC, USER_SPEC, LICENSE_SPEC]
    assert_identical(sections[0][1], group_rows(), "groups")
    expected_users = user_rows()
    # uuid4 in row 2 differs per call: take the written one.
    expected_users[1][10] = sections[1][1][1][10]
    assert_identical(sections[1][1], expected_users, "users")
    assert sections[2][1] == []
    # The database hands back UTC as datetime.UTC; restored values must look the same.
    assert sections[1][1][0][2].tzinfo is UTC
    assert reader.counts == {"auth.group": 3, "accounts.user": 3, "licensing.license": 0}


def test_write_reports_what_the_backup_row_records(written):
    path = stored_path(written)
    assert written.name == path.name
    assert written.size == path.stat().st_size
    assert written.sha256 == file_sha256(path)
    assert written.format_version == 1
    assert written.key_id == keys.primary_key_id()
    assert written.counts == {"auth.group": 3, "accounts.user": 3, "licensing.license": 0}
    assert path.stat().st_mode & 0o777 == 0o600


def test_tuples_come_back_as_lists(store, backup_id):
    rows = iter([(1, {"pair": (1, "a")})])
    info = store.write(
        format_version=1, backup_id=backup_id, meta={}, sections=[Section(COUNTER_SPEC, rows)]
    )
    [(_, read_rows)] = read_everything(store, info, backup_id)
    assert_identical(read_rows, [[1, {"pair": [1, "a"]}]])


def test_verify_decodes_everything_and_returns_counts(store, backup_id, written):
    counts = store.verify(name=written.name, sha256=written.sha256, backup_id=backup_id)
    assert counts == {"auth.group": 3, "accounts.user": 3, "licensing.license": 0}


def test_archive_holds_no_plaintext(written, backup_id):
    raw = stored_path(written).read_bytes()
    for secret in (b"evelyn_superadmin", b"Admins", "ünïcødé".encode(), b"accounts.user"):
        assert secret not in raw
    assert "evelyn" not in written.name
    assert written.name == f"{backup_id}.rfs"


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_fails_the_stored_checksum(store, backup_id, written, where):
    path = stored_path(written)
    flip_byte(path, where)
    with pytest.raises(ArchiveCorrupt, match="checksum mismatch"):
        read_everything(store, written, backup_id)
    with pytest.raises(ArchiveCorrupt, match="checksum mismatch"):
        store.verify(name=written.name, sha256=written.sha256, backup_id=backup_id)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_byte_fails_decryption_even_with_a_matching_checksum(
    store, backup_id, written, where
):
    path = stored_path(written)
    flip_byte(path, where)
    written.sha256 = file_sha256(path)  # an attacker who also rewrote the Backup row
    with pytest.raises(ArchiveCorrupt, match="cannot be decrypted"):
        read_everything(store, written, backup_id)


def flip_byte(path: Path, where: str) -> None:
    data = bytearray(path.read_bytes())
    index = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("keep", [0, 1, 40, -1])
def test_truncated_archive_is_corrupt(store, backup_id, written, keep):
    path = stored_path(written)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(ArchiveCorrupt, match="checksum mismatch"):
        read_everything(store, written, backup_id)
    written.sha256 = file_sha256(path)
    with pytest.raises(ArchiveCorrupt):
        read_everything(store, written, backup_id)


def test_archive_copied_onto_another_backup_does_not_open(store, backup_id, written):
    other_id = str(uuid.uuid4())
    target = stored_path(written).with_name(f"{other_id}.rfs")
    target.write_bytes(stored_path(written).read_bytes())
    with (
        pytest.raises(ArchiveCorrupt, match="cannot be decrypted"),
        store.open(name=target.name, sha256=written.sha256, backup_id=other_id),
    ):
        pass
    # The original still opens under its own id.
    assert read_everything(store, written, backup_id)[0][0] == "auth.group"


def test_missing_archive_is_corrupt(store, backup_id, written):
    stored_path(written).unlink()
    with pytest.raises(ArchiveCorrupt, match="missing"):
        store.verify(name=written.name, sha256=written.sha256, backup_id=backup_id)
    with pytest.raises(ArchiveCorrupt, match="missing"):
        store.verify(name="", sha256=written.sha256, backup_id=backup_id)


def test_old_archive_opens_after_key_rotation(store, backup_id, written):
    new_key_id = keys.rotate_keyset()
    assert new_key_id != written.key_id

    assert store.verify(name=written.name, sha256=written.sha256, backup_id=backup_id)
    later_id = str(uuid.uuid4())
    later = store.write(format_version=1, backup_id=later_id, meta={}, sections=snapshot())
    assert later.key_id == new_key_id
    assert store.verify(name=later.name, sha256=later.sha256, backup_id=later_id)


def test_failure_while_writing_leaves_nothing_stored(store, backup_id, settings):
    def rows_until_the_database_goes_away():
        yield [1, "first"]
        yield [2, "second"]
        raise ConnectionError("server closed the connection unexpectedly")

    sections = [Section(COUNTER_SPEC, rows_until_the_database_goes_away())]
    with pytest.raises(ConnectionError):
        store.write(format_version=1, backup_id=backup_id, meta={}, sections=sections)

    assert not store.exists(f"{backup_id}.rfs")
    backup_dir = Path(settings.FAILSAFE_BACKUP_DIR)
    assert not backup_dir.exists() or os.listdir(backup_dir) == []


def test_row_of_the_wrong_width_is_refused_and_nothing_stored(store, backup_id):
    sections = [Section(COUNTER_SPEC, iter([[1, 2], [3]]))]
    with pytest.raises(ValueError, match="1 values for 2 columns"):
        store.write(format_version=1, backup_id=backup_id, meta={}, sections=sections)
    assert not store.exists(f"{backup_id}.rfs")


def test_large_stream_round_trips(store, backup_id):
    def rows():
        start = datetime.datetime(2020, 1, 1, tzinfo=UTC)
        for pk in range(1, 50_001):
            yield [pk, f"user{pk}", start + datetime.timedelta(seconds=pk), [pk % 7, pk % 11]]

    spec = ModelSpec("accounts.user", ("id", "username", "joined"), ("groups",))
    info = store.write(
        format_version=1, backup_id=backup_id, meta={}, sections=[Section(spec, rows())]
    )
    assert info.counts == {"accounts.user": 50_000}

    with store.open(name=info.name, sha256=info.sha256, backup_id=backup_id) as reader:
        sections = reader.sections()
        section = next(sections)
        for read_row, expected_row in zip(section.rows, rows(), strict=True):
            assert read_row == expected_row
        assert next(sections, None) is None
    assert reader.counts == {"accounts.user": 50_000}


def test_damage_deep_in_a_large_archive_is_found_while_streaming(store, backup_id):
    # Incompressible rows make several 1 MB Tink segments, so the early rows decrypt
    # before the damaged last segment is reached.
    noise = random.Random(7)
    rows = ([pk, noise.randbytes(200)] for pk in range(1, 20_001))
    info = store.write(
        format_version=1, backup_id=backup_id, meta={}, sections=[Section(COUNTER_SPEC, rows)]
    )
    path = stored_path(info)
    assert info.size > 3 * 1024 * 1024
    flip_byte(path, "last")
    info.sha256 = file_sha256(path)

    rows_read = 0
    with (
        pytest.raises(ArchiveCorrupt, match="cannot be decrypted"),
        store.open(name=info.name, sha256=info.sha256, backup_id=backup_id) as reader,
    ):
        for section in reader.sections():
            for _row in section.rows:
                rows_read += 1
    assert 0 < rows_read < 20_000


def test_unread_sections_are_skipped_in_step(store, backup_id, written):
    with store.open(name=written.name, sha256=written.sha256, backup_id=backup_id) as reader:
        labels = [section.spec.label for section in reader.sections()]
        with pytest.raises(RuntimeError):
            next(reader.sections())
    assert labels == ["auth.group", "accounts.user", "licensing.license"]
    assert reader.counts == {"auth.group": 3, "accounts.user": 3, "licensing.license": 0}


def store_crafted_archive(store, backup_id: str, records: list) -> tuple[str, str]:
    """Encrypts records exactly as the writer would, for streams the writer never makes."""
    packer = codec.new_packer()
    plaintext = zstandard.ZstdCompressor().compress(b"".join(packer.pack(r) for r in records))
    path = Path(store.storage.path(f"{backup_id}.rfs"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as destination:
        encrypted = keys.streaming_aead().new_encrypting_stream(
            single_file._KeepOpen(destination), backup_id.encode()
        )
        with encrypted:
            encrypted.write(plaintext)
    return path.name, file_sha256(path)


HEADER = {"format": "raos-failsafe-archive", "version": 1, "meta": {}}
COUNTER_HEADER = {"section": COUNTER_SPEC.to_header()}


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ([HEADER, COUNTER_HEADER, [1, 2], {"end": "test.counter", "rows": 1}], "truncated"),
        ([HEADER, COUNTER_HEADER, [1, 2]], "truncated"),
        ([HEADER], "truncated"),
        ([], "is empty"),
        ([{"format": "zip", "version": 1, "meta": {}}], "not a failsafe archive"),
        ([{**HEADER, "version": 2}, {"trailer": {"counts": {}}}], "format version 2"),
        (
            [HEADER, COUNTER_HEADER, [1, 2], {"end": "test.counter", "rows": 2}],
            "end marker says 2",
        ),
        (
            [
                HEADER,
                COUNTER_HEADER,
                [1, 2],
                {"end": "test.counter", "rows": 1},
                {"trailer": {"counts": {"test.counter": 5}}},
            ],
            "row counts in its trailer",
        ),
        ([HEADER, COUNTER_HEADER, [1, 2, 3]], "3 values for 2 columns"),
        (
            [HEADER, {"trailer": {"counts": {}}}, {"trailer": {"counts": {}}}],
            "data after its trailer",
        ),
        ([HEADER, [1, 2], {"trailer": {"counts": {}}}], "row outside any section"),
    ],
)
def test_malformed_streams_are_corrupt(store, backup_id, records, problem):
    name, sha256 = store_crafted_archive(store, backup_id, records)
    with pytest.raises(ArchiveCorrupt, match=problem):
        store.verify(name=name, sha256=sha256, backup_id=backup_id)


def test_crafted_stream_helper_makes_a_readable_archive(store, backup_id):
    # Guards the test above: a well-formed crafted stream must open.
    records = [
        HEADER,
        COUNTER_HEADER,
        [1, 2],
        {"end": "test.counter", "rows": 1},
        {"trailer": {"counts": {"test.counter": 1}}},
    ]
    name, sha256 = store_crafted_archive(store, backup_id, records)
    assert store.verify(name=name, sha256=sha256, backup_id=backup_id) == {"test.counter": 1}


def test_configured_failsafe_storage_is_used(settings, backup_id):
    settings.STORAGES = {
        **settings.STORAGES,
        "failsafe": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    store = get_store()
    info = store.write(format_version=1, backup_id=backup_id, meta={}, sections=snapshot())

    assert store.exists(info.name)
    assert not Path(settings.FAILSAFE_BACKUP_DIR).exists()
    assert store.verify(name=info.name, sha256=info.sha256, backup_id=backup_id) == info.counts
    store.delete(info.name)
    assert not store.exists(info.name)


def test_delete_removes_the_archive(store, backup_id, written):
    assert store.exists(written.name)
    store.delete(written.name)
    assert not store.exists(written.name)
    assert not stored_path(written).exists()


def test_backup_id_must_be_a_uuid(store):
    with pytest.raises(InvalidBackupId):
        store.write(backup_id="../../etc/passwd", meta={}, sections=[])


@pytest.mark.django_db
def test_live_snapshot_comes_back_identical(store, backup_id):
    from django.contrib.auth.models import Group

    from failsafe.capture import live_sections
    from tests.factories import LicenseFactory, UserFactory

    readers = Group.objects.create(name="Readers")
    alice = UserFactory(username="alice_in_the_archive")
    alice.groups.add(readers)
    LicenseFactory(owner=alice)
    UserFactory()

    info = store.write(format_version=1, backup_id=backup_id, meta={}, sections=live_sections())
    archived = read_everything(store, info, backup_id)
    live = [[section.spec.label, list(section.rows)] for section in live_sections()]

    assert_identical(archived, live)
    assert info.counts == {"auth.group": 1, "accounts.user": 2, "licensing.license": 1}
    assert b"alice_in_the_archive" not in stored_path(info).read_bytes()
