"""Format 2, the chunked store: exact round trips, chunks that change only where the rows
change, each chunk stored once, damage found by verify and refused by restore, compare of
two backups that skips what they share, and format-1 archives still usable."""

import datetime
import hashlib
import random
import uuid
from pathlib import Path

import pytest
import zstandard
from django.contrib.auth import get_user_model

from failsafe import archives, capture, keys, services
from failsafe.archive import chunked, codec, get_store, shared_chunks
from failsafe.compare import compare as compare_snapshots
from failsafe.exceptions import ArchiveCorrupt, ServerFailure
from failsafe.models import Backup
from failsafe.render import seed
from failsafe.snapshot import ModelSpec, Section
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD

from .test_archive import (
    COUNTER_SPEC,
    GROUP_SPEC,
    LICENSE_SPEC,
    USER_SPEC,
    assert_identical,
    group_rows,
    snapshot,
    user_rows,
)

User = get_user_model()

TABLE_SPEC = ModelSpec(
    "accounts.user", ("id", "username", "email", "password", "is_active"), ("groups",)
)


def table_row(pk: int) -> list:
    return [
        pk,
        f"user{pk:06d}",
        f"user{pk:06d}@example.com",
        f"pbkdf2_sha256$1000000${(pk * 7919) % 100_003:06d}$hash",
        pk % 5 != 0,
        [pk % 3 + 1],
    ]


def table(pks) -> list[list]:
    return [table_row(pk) for pk in pks]


@pytest.fixture(autouse=True)
def keyset():
    keys.ensure_keyset_file()


@pytest.fixture
def store():
    return get_store()


def backup_dir(settings) -> Path:
    return Path(settings.FAILSAFE_BACKUP_DIR)


def chunk_files(settings) -> dict[str, Path]:
    return {path.name: path for path in (backup_dir(settings) / "chunks").glob("*/*")}


def write(store, rows_by_spec, **kwargs):
    backup_id = str(uuid.uuid4())
    sections = [Section(spec, iter(rows)) for spec, rows in rows_by_spec]
    info = store.write(backup_id=backup_id, meta={}, sections=sections, **kwargs)
    return backup_id, info


def manifest_of(store, backup_id, info) -> chunked.Manifest:
    return store.read_manifest(name=info.name, sha256=info.sha256, backup_id=backup_id)


def chunk_ids(store, backup_id, info, label="accounts.user") -> list[bytes]:
    [entry] = [e for e in manifest_of(store, backup_id, info).models if e.spec.label == label]
    return [ref.id for ref in entry.chunks]


def read_all(store, backup_id, info) -> list:
    with store.open(name=info.name, sha256=info.sha256, backup_id=backup_id) as reader:
        return [[section.spec.label, list(section.rows)] for section in reader.sections()]


# --- the format ----------------------------------------------------------------------


def test_every_value_type_round_trips_exactly(store):
    backup_id = str(uuid.uuid4())
    meta = {"Timestamp": "2024-05-17T13:45:12Z", "taken_at": datetime.datetime(2024, 5, 17)}
    info = store.write(backup_id=backup_id, meta=meta, sections=snapshot())

    with store.open(name=info.name, sha256=info.sha256, backup_id=backup_id) as reader:
        assert reader.format_version == 2
        assert_identical(reader.meta, meta)
        sections = [(section.spec, list(section.rows)) for section in reader.sections()]
    assert [spec for spec, _ in sections] == [GROUP_SPEC, USER_SPEC, LICENSE_SPEC]
    assert_identical(sections[0][1], group_rows(), "groups")
    expected_users = user_rows()
    expected_users[1][10] = sections[1][1][1][10]  # the uuid4 of row 2, as written
    assert_identical(sections[1][1], expected_users, "users")
    assert sections[1][1][0][2].tzinfo is datetime.UTC
    assert sections[2][1] == []
    assert reader.counts == {"auth.group": 3, "accounts.user": 3, "licensing.license": 0}


def test_tuples_come_back_as_lists(store):
    backup_id, info = write(store, [(COUNTER_SPEC, [(1, {"pair": (1, "a")})])])
    assert_identical(
        read_all(store, backup_id, info), [["test.counter", [[1, {"pair": [1, "a"]}]]]]
    )


def test_write_reports_what_the_backup_row_records(store, settings):
    backup_id, info = write(store, [(TABLE_SPEC, table(range(1, 3001)))])
    manifest_path = backup_dir(settings) / info.name
    chunks = chunk_files(settings)

    assert info.name == f"{backup_id}.manifest"
    assert info.format_version == 2
    assert info.key_id == keys.primary_key_id()
    assert info.sha256 == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    assert info.counts == {"accounts.user": 3000}
    assert info.chunks == info.chunks_written == len(chunks) > 5
    stored = manifest_path.stat().st_size + sum(path.stat().st_size for path in chunks.values())
    assert info.size == info.bytes_written == stored
    assert {path.stat().st_mode & 0o777 for path in [manifest_path, *chunks.values()]} == {0o600}
    assert not [path for path in backup_dir(settings).iterdir() if path.name.endswith(".partial")]


def test_nothing_stored_holds_plaintext_or_names_it(store, settings):
    rows = [[pk, f"evelyn_{pk}", f"secret-hash-{pk}", True, "", []] for pk in range(1, 400)]
    backup_id, info = write(store, [(TABLE_SPEC, rows)])
    stored = [backup_dir(settings) / info.name, *chunk_files(settings).values()]
    for path in stored:
        data = path.read_bytes()
        for plaintext in (b"evelyn_", b"secret-hash", b"accounts.user"):
            assert plaintext not in data
    # Names are a keyed hash: not the plain hash of anything a reader could rebuild.
    packer = codec.new_packer()
    unkeyed = hashlib.blake2b(packer.pack(rows[0]), digest_size=32).hexdigest()
    assert unkeyed not in chunk_files(settings)


def test_chunks_have_a_few_hundred_rows_between_the_bounds(store):
    backup_id, info = write(store, [(TABLE_SPEC, table(range(1, 20_001)))])
    [entry] = manifest_of(store, backup_id, info).models
    sizes = [ref.rows for ref in entry.chunks]
    assert sum(sizes) == 20_000
    assert all(chunked.MIN_ROWS <= size <= chunked.MAX_ROWS for size in sizes[:-1])
    assert 150 <= sum(sizes) / len(sizes) <= 600


def _digest_low_bits(row) -> int:
    # Cut points depend on the primary key only, so an update never moves one.
    return chunked.key_boundary_bits(codec.new_packer().pack(row[0]))


def test_rows_that_never_cut_still_make_bounded_chunks(store):
    # Keys whose digest never calls for a boundary: MAX_ROWS cuts them anyway.
    rows = [row for row in table(range(1, 6000)) if _digest_low_bits(row)][:5000]
    backup_id, info = write(store, [(TABLE_SPEC, rows)])
    [entry] = manifest_of(store, backup_id, info).models
    assert [ref.rows for ref in entry.chunks] == [2048, 2048, 904]


def test_rows_that_all_cut_still_make_chunks_of_the_minimum(store):
    rows = [row for row in table(range(1, 120_000)) if not _digest_low_bits(row)][:200]
    assert len(rows) == 200
    backup_id, info = write(store, [(TABLE_SPEC, rows)])
    [entry] = manifest_of(store, backup_id, info).models
    assert [ref.rows for ref in entry.chunks] == [64, 64, 64, 8]


def test_huge_rows_are_cut_by_size(store):
    noise = random.Random(3)
    rows = [[pk, noise.randbytes(512 * 1024)] for pk in range(1, 21)]
    backup_id, info = write(store, [(COUNTER_SPEC, rows)])
    [entry] = manifest_of(store, backup_id, info).models
    assert [ref.rows for ref in entry.chunks] == [8, 8, 4]
    assert read_all(store, backup_id, info) == [["test.counter", rows]]


# --- chunks change only where the rows change ------------------------------------------


def _changed(before: list[bytes], after: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    return [i for i in after if i not in before], [i for i in before if i not in after]


@pytest.mark.parametrize(
    "change",
    ["update", "insert", "delete", "update at the start", "delete at the end"],
)
def test_a_change_in_a_table_changes_one_or_two_chunks(store, change):
    pks = list(range(2, 12_002, 2))
    before = table(pks)
    after = [list(row) for row in before]
    if change == "update":
        after[3000][2] = "changed@example.com"
    elif change == "insert":
        after.insert(3000, table_row(pks[3000] - 1))
    elif change == "delete":
        del after[3000]
    elif change == "update at the start":
        after[0][4] = not after[0][4]
    else:
        del after[-1]

    first_id, first = write(store, [(TABLE_SPEC, before)])
    second_id, second = write(store, [(TABLE_SPEC, after)])
    old_ids, new_ids = chunk_ids(store, first_id, first), chunk_ids(store, second_id, second)

    added, dropped = _changed(old_ids, new_ids)
    assert len(old_ids) > 10
    assert 1 <= len(added) <= 2
    assert 1 <= len(dropped) <= 2
    # Everything else is the same chunks in the same order, and was not written again.
    assert [i for i in old_ids if i not in dropped] == [i for i in new_ids if i not in added]
    assert second.chunks_written == len(added)
    assert read_all(store, second_id, second) == [["accounts.user", after]]


def test_an_identical_snapshot_shares_every_chunk_and_writes_only_its_manifest(store, settings):
    rows = table(range(1, 5001))
    first_id, first = write(store, [(TABLE_SPEC, rows), (LICENSE_SPEC, [[1, "K-1", "ACTIVE"]])])
    files_before = {name: path.stat().st_mtime_ns for name, path in chunk_files(settings).items()}

    second_id, second = write(store, [(TABLE_SPEC, rows), (LICENSE_SPEC, [[1, "K-1", "ACTIVE"]])])

    assert manifest_of(store, second_id, second).chunk_ids() == (
        manifest_of(store, first_id, first).chunk_ids()
    )
    assert second.chunks_written == 0
    assert second.bytes_written == (backup_dir(settings) / second.name).stat().st_size
    assert second.bytes_written < first.bytes_written * 0.05
    chunk_bytes = sum(path.stat().st_size for path in chunk_files(settings).values())
    assert second.size == second.bytes_written + chunk_bytes
    files_after = {name: path.stat().st_mtime_ns for name, path in chunk_files(settings).items()}
    assert files_after == files_before


def test_sizes_of_shared_chunks_come_from_the_previous_manifest(store, settings, monkeypatch):
    rows = table(range(1, 3001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    previous = {"name": first.name, "sha256": first.sha256, "backup_id": first_id}
    storage_sizes = []
    original_size = store.storage.size
    monkeypatch.setattr(
        store.storage, "size", lambda name: storage_sizes.append(name) or original_size(name)
    )

    _, with_previous = write(store, [(TABLE_SPEC, rows)], previous=previous)
    assert storage_sizes == []
    _, without = write(store, [(TABLE_SPEC, rows)])
    assert len(storage_sizes) == first.chunks
    chunk_bytes = sum(path.stat().st_size for path in chunk_files(settings).values())
    assert with_previous.size == without.size == chunk_bytes + with_previous.bytes_written


# --- reading: skipping, damage ---------------------------------------------------------


def test_skipped_chunks_leave_out_exactly_their_rows(store):
    rows = table(range(1, 5001))
    backup_id, info = write(store, [(TABLE_SPEC, rows)])
    [entry] = manifest_of(store, backup_id, info).models
    skipped = {entry.chunks[1].id, entry.chunks[3].id}
    bounds = []
    start = 0
    for ref in entry.chunks:
        bounds.append((ref.id, rows[start : start + ref.rows]))
        start += ref.rows
    expected = [row for chunk_id, part in bounds if chunk_id not in skipped for row in part]

    with store.open(name=info.name, sha256=info.sha256, backup_id=backup_id) as reader:
        [section] = reader.sections(skip_chunks={"accounts.user": skipped})
        assert list(section.rows) == expected
    assert reader.chunks_skipped == 2
    assert reader.chunks_read == len(entry.chunks) - 2
    assert reader.counts == {"accounts.user": 5000}


def test_shared_chunks_are_those_both_backups_name(store):
    rows = table(range(1, 5001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    changed = [list(row) for row in rows]
    changed[2500][1] = "renamed"
    second_id, second = write(store, [(TABLE_SPEC, changed)])
    with (
        store.open(name=first.name, sha256=first.sha256, backup_id=first_id) as old,
        store.open(name=second.name, sha256=second.sha256, backup_id=second_id) as new,
    ):
        shared = shared_chunks(old, new)
    old_ids = chunk_ids(store, first_id, first)
    new_ids = chunk_ids(store, second_id, second)
    assert shared == {"accounts.user": frozenset(old_ids) & frozenset(new_ids)}
    assert len(shared["accounts.user"]) == len(old_ids) - 1


def _first_chunk(store, backup_id, info, settings) -> Path:
    first_id = chunk_ids(store, backup_id, info)[0].hex()
    return chunk_files(settings)[first_id]


@pytest.fixture
def stored_table(store):
    backup_id, info = write(store, [(TABLE_SPEC, table(range(1, 3001)))])
    return backup_id, info


def test_a_missing_chunk_is_named_by_verify(store, settings, stored_table):
    backup_id, info = stored_table
    chunk = _first_chunk(store, backup_id, info, settings)
    chunk.unlink()
    with pytest.raises(ArchiveCorrupt, match=f"is missing chunk {chunk.name} of accounts.user"):
        store.verify(name=info.name, sha256=info.sha256, backup_id=backup_id)


@pytest.mark.parametrize("where", [0, 40, -1])
def test_a_flipped_byte_in_a_chunk_is_found_by_verify(store, settings, stored_table, where):
    backup_id, info = stored_table
    chunk = _first_chunk(store, backup_id, info, settings)
    data = bytearray(chunk.read_bytes())
    data[where] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(
        ArchiveCorrupt, match=f"chunk {chunk.name} of accounts.user that cannot be decrypted"
    ):
        store.verify(name=info.name, sha256=info.sha256, backup_id=backup_id)


def test_a_chunk_swapped_for_another_does_not_decrypt(store, settings, stored_table):
    backup_id, info = stored_table
    first, second = chunk_ids(store, backup_id, info)[:2]
    paths = chunk_files(settings)
    paths[first.hex()].write_bytes(paths[second.hex()].read_bytes())
    with pytest.raises(ArchiveCorrupt, match="swapped for another chunk"):
        store.verify(name=info.name, sha256=info.sha256, backup_id=backup_id)


def test_a_chunk_whose_content_is_not_its_name_is_refused(store, settings, stored_table):
    # Encrypted with the right key and associated data, but holding other rows: what a
    # writer bug would produce. The keyed hash recomputed on reading catches it.
    backup_id, info = stored_table
    target = chunk_ids(store, backup_id, info)[0].hex()
    packer = codec.new_packer()
    plaintext = packer.pack(["accounts.user", table(range(1, 65))])
    sealed = chunked.seal(
        keys.streaming_aead(),
        zstandard.ZstdCompressor().compress(plaintext),
        target.encode("ascii"),
    )
    chunk_files(settings)[target].write_bytes(sealed)
    with pytest.raises(ArchiveCorrupt, match="content does not match its name"):
        store.verify(name=info.name, sha256=info.sha256, backup_id=backup_id)


def test_a_damaged_manifest_fails_its_checksum_and_its_decryption(store, settings, stored_table):
    backup_id, info = stored_table
    path = backup_dir(settings) / info.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveCorrupt, match="checksum mismatch"):
        store.verify(name=info.name, sha256=info.sha256, backup_id=backup_id)
    forged_sha256 = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ArchiveCorrupt, match="Manifest of .* cannot be decrypted"):
        store.verify(name=info.name, sha256=forged_sha256, backup_id=backup_id)


def test_a_manifest_copied_onto_another_backup_does_not_open(store, settings, stored_table):
    backup_id, info = stored_table
    other_id = str(uuid.uuid4())
    copy = backup_dir(settings) / f"{other_id}.manifest"
    copy.write_bytes((backup_dir(settings) / info.name).read_bytes())
    with pytest.raises(ArchiveCorrupt, match="cannot be decrypted"):
        store.verify(name=copy.name, sha256=info.sha256, backup_id=other_id)


def test_a_failed_write_leaves_no_manifest_and_no_partial_files(store, settings):
    def rows_until_the_database_goes_away():
        yield from table(range(1, 2001))
        raise ConnectionError("server closed the connection unexpectedly")

    backup_id = str(uuid.uuid4())
    with pytest.raises(ConnectionError):
        store.write(
            backup_id=backup_id,
            meta={},
            sections=[Section(TABLE_SPEC, rows_until_the_database_goes_away())],
        )
    assert not store.exists(f"{backup_id}.manifest")
    leftovers = [p for p in backup_dir(settings).rglob("*") if p.is_file()]
    assert all(p.parent.parent.name == "chunks" for p in leftovers)
    assert all(len(p.name) == 64 for p in leftovers)


def test_a_row_of_the_wrong_width_is_refused_and_no_manifest_stored(store):
    backup_id = str(uuid.uuid4())
    with pytest.raises(ValueError, match="1 values for 2 columns"):
        store.write(
            backup_id=backup_id, meta={}, sections=[Section(COUNTER_SPEC, iter([[1, 2], [3]]))]
        )
    assert not store.exists(f"{backup_id}.manifest")


def test_a_large_table_streams_back_identical(store):
    def rows():
        start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        for pk in range(1, 50_001):
            yield [pk, f"user{pk}", start + datetime.timedelta(seconds=pk), [pk % 7, pk % 11]]

    spec = ModelSpec("accounts.user", ("id", "username", "joined"), ("groups",))
    backup_id = str(uuid.uuid4())
    info = store.write(backup_id=backup_id, meta={}, sections=[Section(spec, rows())])
    assert info.counts == {"accounts.user": 50_000}
    with store.open(name=info.name, sha256=info.sha256, backup_id=backup_id) as reader:
        [section] = reader.sections()
        for read_row, expected_row in zip(section.rows, rows(), strict=True):
            assert read_row == expected_row
    assert reader.chunks_read == info.chunks > 100


def test_old_backups_open_after_a_key_rotation_and_new_ones_use_the_new_key(store, settings):
    rows = table(range(1, 2001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    new_key_id = keys.rotate_keyset()

    second_id, second = write(store, [(TABLE_SPEC, rows)])
    assert store.verify(name=first.name, sha256=first.sha256, backup_id=first_id)
    assert store.verify(name=second.name, sha256=second.sha256, backup_id=second_id)
    # Same rows, but chunks under the new key are new chunks: nothing is reused from
    # before the rotation.
    assert second.key_id == new_key_id
    assert second.chunks_written == second.chunks == first.chunks
    assert not set(chunk_ids(store, first_id, first)) & set(chunk_ids(store, second_id, second))


def test_a_changed_chunk_key_costs_deduplication_only(store, settings):
    rows = table(range(1, 2001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    settings.FAILSAFE_CHUNK_KEY = "another-chunk-key-not-in-the-database"

    assert store.verify(name=first.name, sha256=first.sha256, backup_id=first_id) == {
        "accounts.user": 2000
    }
    second_id, second = write(store, [(TABLE_SPEC, rows)])
    assert second.chunks_written == second.chunks
    assert read_all(store, second_id, second) == read_all(store, first_id, first)


def test_a_configured_storage_holds_the_chunks(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "failsafe": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    store = get_store()
    rows = table(range(1, 3001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    second_id, second = write(store, [(TABLE_SPEC, rows)])

    assert not backup_dir(settings).exists()
    assert second.chunks_written == 0
    assert store.storage.listdir("chunks")[0]
    assert store.verify(name=second.name, sha256=second.sha256, backup_id=second_id) == {
        "accounts.user": 3000
    }
    store.storage.delete(chunked_name(chunk_ids(store, first_id, first)[0]))
    with pytest.raises(ArchiveCorrupt, match="is missing chunk"):
        store.verify(name=first.name, sha256=first.sha256, backup_id=first_id)


def chunked_name(chunk_id: bytes) -> str:
    return f"chunks/{chunk_id.hex()[:2]}/{chunk_id.hex()}"


# --- through the services --------------------------------------------------------------


def bulk_users(count: int) -> None:
    User.objects.bulk_create(
        User(
            username=f"bulk{n:05d}",
            email=f"bulk{n:05d}@example.com",
            password=f"md5$salt{n}${n:032x}",
        )
        for n in range(count)
    )


def archive_files(settings, backup: Backup) -> tuple[Path, list[Path]]:
    manifest = get_store().read_manifest(
        name=backup.archive_name, sha256=backup.archive_sha256, backup_id=str(backup.id)
    )
    paths = chunk_files(settings)
    return backup_dir(settings) / backup.archive_name, [
        paths[ref.id.hex()] for entry in manifest.models for ref in entry.chunks
    ]


@pytest.mark.django_db
def test_a_backup_is_a_manifest_and_a_second_one_writes_little(actor, population, settings):
    bulk_users(2000)
    first = services.create_backup(actor=actor)
    second = services.create_backup(actor=actor)

    manifest, chunks = archive_files(settings, first)
    assert (first.format_version, first.archive_name) == (2, f"{first.id}.manifest")
    assert (
        first.archive_size
        == first.bytes_written
        == manifest.stat().st_size + sum(path.stat().st_size for path in chunks)
    )
    second_manifest, second_chunks = archive_files(settings, second)
    assert second_chunks == chunks
    assert second.bytes_written == second_manifest.stat().st_size
    payload = seed.verification(services.verify(actor=actor, backup_id=second.id))["Backups"][0]
    assert payload["Valid"] is True
    assert payload["Counts"]["accounts.user"] == 2006


@pytest.mark.django_db
def test_an_update_in_the_middle_of_the_users_changes_one_or_two_chunks(
    actor, population, settings
):
    bulk_users(4000)
    first = services.create_backup(actor=actor)
    middle = User.objects.order_by("pk")[2000]
    middle.first_name = "Changed"
    middle.save()
    second = services.create_backup(actor=actor)

    store = get_store()

    def user_chunks(backup):
        manifest = store.read_manifest(
            name=backup.archive_name, sha256=backup.archive_sha256, backup_id=str(backup.id)
        )
        return [e for e in manifest.models if e.spec.label == "accounts.user"][0].chunks

    before, after = user_chunks(first), user_chunks(second)
    added, dropped = _changed([r.id for r in before], [r.id for r in after])
    assert len(before) > 5
    assert 1 <= len(added) <= 2 and 1 <= len(dropped) <= 2
    # Only the new chunks and the manifest were written.
    assert second.bytes_written == (
        backup_dir(settings) / second.archive_name
    ).stat().st_size + sum(ref.size for ref in after if ref.id in added)


@pytest.fixture
def counted_chunk_reads(monkeypatch):
    reads = []
    original = chunked.ChunkedReader.read_chunk

    def counting(self, spec, ref):
        reads.append(ref.id)
        return original(self, spec, ref)

    monkeypatch.setattr(chunked.ChunkedReader, "read_chunk", counting)
    return reads


@pytest.mark.django_db
def test_comparing_two_backups_skips_shared_chunks_and_finds_the_same(
    actor, population, settings, counted_chunk_reads
):
    users, licenses = population
    bulk_users(4000)
    first = services.create_backup(actor=actor)
    middle = User.objects.order_by("pk")[2000]
    middle.email = "moved@example.com"
    middle.save()
    User.objects.filter(username="bulk03999").delete()
    User.objects.create(username="newcomer", email="newcomer@example.com")
    License.objects.filter(pk__in=[lic.pk for lic in licenses[:3]]).update(
        status=License.Status.REVOKED
    )
    second = services.create_backup(actor=actor)
    first_chunks = len(archive_files(settings, first)[1])
    second_chunks = len(archive_files(settings, second)[1])

    skipping = services.compare(actor=actor, backup_id=second.id, against=first.id)
    reads_skipping = len(counted_chunk_reads)
    counted_chunk_reads.clear()
    with archives.open_snapshot(first) as old, archives.open_snapshot(second) as new:
        reading_all = compare_snapshots(baseline=old, current=new, baseline_backup_id=str(first.id))
    reads_all = len(counted_chunk_reads)

    reading_all.safe_backup_created_at = first.created_at  # as the service adds it
    assert seed.comparison(skipping) == seed.comparison(reading_all)
    assert skipping.findings == reading_all.findings
    assert skipping.affected_pks == reading_all.affected_pks
    users_detail = seed.comparison(skipping)["Details"]["accounts.user"]
    assert users_detail["Modified"]["Records"][0]["Record"] == middle.username
    assert users_detail["Added"]["Records"] == ["newcomer"]
    assert users_detail["Removed"]["Records"] == ["bulk03999"]
    assert any("3 licenses revoked or suspended" in issue for issue in skipping.issues)
    assert reads_all == first_chunks + second_chunks
    # Which chunks hold the changed rows depends on the random keys; the shared ones are
    # skipped whatever they are.
    assert reads_skipping < reads_all / 2


@pytest.mark.django_db
@pytest.mark.parametrize("damage", ["missing", "flipped"])
def test_a_damaged_chunk_is_reported_by_verify_and_refused_by_restore(
    actor, armed, population, settings, damage
):
    bulk_users(1500)
    backup = services.create_backup(actor=actor)
    _, chunks = archive_files(settings, backup)
    damaged = chunks[len(chunks) // 2]
    if damage == "missing":
        damaged.unlink()
    else:
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0x01
        damaged.write_bytes(bytes(data))
    User.objects.filter(username__startswith="bulk0001").delete()
    live_before = sorted(User.objects.values_list("pk", "username", "email"))

    [result] = services.verify(actor=actor, backup_id=backup.id)
    assert not result.ok
    assert f"chunk {damaged.name} of accounts.user" in result.error
    with pytest.raises(ArchiveCorrupt, match=damaged.name):
        services.restore(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)
    assert sorted(User.objects.values_list("pk", "username", "email")) == live_before
    assert not Backup.objects.filter(type=Backup.Type.PRE_RESTORE).exists()


@pytest.mark.django_db
def test_a_failed_capture_leaves_a_failed_backup_and_no_manifest(
    actor, population, settings, monkeypatch
):
    bulk_users(1500)
    real_sections = capture.live_sections

    def sections_then_failure():
        for section in real_sections():
            if section.spec.label == "licensing.license":
                raise ConnectionError("server closed the connection unexpectedly")
            yield section

    monkeypatch.setattr(capture, "live_sections", sections_then_failure)
    # Every door gets it as one line naming the failure.
    with pytest.raises(ServerFailure, match="The backup failed: ConnectionError: server closed"):
        services.create_backup(actor=actor)

    backup = Backup.objects.get()
    assert (backup.status, backup.archive_name) == (Backup.Status.FAILED, "")
    assert "server closed the connection" in backup.error
    assert not list(backup_dir(settings).glob("*.manifest"))
    assert not list(backup_dir(settings).glob(".*.partial"))


def take_format1_backup(actor) -> Backup:
    """What _take_backup did before format 2: one single-file archive."""
    backup = Backup.objects.create(type=Backup.Type.MANUAL, created_by_username=actor.username)
    with capture.consistent_read():
        state = capture.system_state()
        info = get_store().write(
            format_version=1,
            backup_id=str(backup.id),
            meta={"backup_id": str(backup.id), "state": state},
            sections=capture.live_sections(),
        )
    Backup.objects.filter(pk=backup.pk).update(
        state=state,
        archive_name=info.name,
        archive_size=info.size,
        archive_sha256=info.sha256,
        format_version=info.format_version,
        key_id=info.key_id,
        status=Backup.Status.COMPLETE,
    )
    return Backup.objects.get(pk=backup.pk)


@pytest.mark.django_db
def test_a_format_1_backup_still_verifies_compares_and_restores(actor, armed, population):
    old = take_format1_backup(actor)
    assert old.archive_name == f"{old.id}.rfs"
    User.objects.filter(username="carol").delete()
    User.objects.filter(username="bob").update(email="bob@elsewhere.example")
    newer = services.create_backup(actor=actor)
    assert newer.format_version == 2

    assert services.verify(actor=actor, backup_id=old.id)[0].ok
    mixed = services.compare(actor=actor, backup_id=newer.id, against=old.id)
    live = services.compare(actor=actor, against=old.id)
    for result in (mixed, live):
        users_detail = seed.comparison(result)["Details"]["accounts.user"]
        assert users_detail["Removed"]["Records"] == ["carol"]
        assert users_detail["Modified"]["Count"] == 1

    result = services.restore(actor=actor, backup_id=old.id, password=FAILSAFE_PASSWORD)
    assert result.pre_restore_backup.format_version == 2
    assert User.objects.filter(username="carol").exists()
    assert User.objects.get(username="bob").email == "bob@example.com"
    assert services.restore(actor=actor, backup_id=old.id, dry_run=True).plan.is_noop


@pytest.mark.django_db
def test_a_format_2_backup_restores_after_changes(actor, armed, population):
    bulk_users(1200)
    backup = services.create_backup(actor=actor)
    User.objects.filter(username__startswith="bulk000").delete()
    User.objects.filter(username="alice").update(first_name="Mallory")

    services.restore(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)

    assert User.objects.filter(username__startswith="bulk000").count() == 100
    assert User.objects.get(username="alice").first_name == ""
    out = services.compare(actor=actor, against=backup.id)
    assert out.changes == [] and out.issues == []


@pytest.mark.django_db
def test_verifying_all_backups_reads_each_shared_chunk_once(
    actor, population, settings, counted_chunk_reads
):
    bulk_users(1500)
    first = services.create_backup(actor=actor)
    second = services.create_backup(actor=actor)
    _, chunks = archive_files(settings, first)

    results = services.verify(actor=actor, all_backups=True)
    assert [r.ok for r in results] == [True, True]
    assert results[0].counts == results[1].counts
    assert len(counted_chunk_reads) == len(chunks)

    # A damaged shared chunk is reported for every backup that holds it.
    chunks[0].unlink()
    results = services.verify(actor=actor, all_backups=True)
    assert {str(r.backup.id): r.ok for r in results} == {
        str(first.id): False,
        str(second.id): False,
    }
    assert all(chunks[0].name in r.error for r in results)
