"""Delta chunks: a changed chunk stored as its differences from the previous backup's chunk
over the same keys. What a user sees: a backup after scattered updates writes a small
fraction of a full one, restores and compares exactly, and stays whole when the backup it
was taken after is deleted, when a base is damaged (found, named, healed), when copied to a
replica that alone recovers it, and after any number of backups (the chain is bounded)."""

import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model

from failsafe import services
from failsafe.archive import chunked, get_store
from failsafe.archive.healing import SnapshotSource
from failsafe.exceptions import ArchiveCorrupt
from failsafe.models import AuditEvent, Backup
from failsafe.render import seed
from failsafe.snapshot import Section
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run

from .test_chunked_store import (
    TABLE_SPEC,
    bulk_users,
    chunk_files,
    manifest_of,
    read_all,
    table,
    write,
)

User = get_user_model()


@pytest.fixture(autouse=True)
def _keyset(keyset):
    """Every test here writes backups."""


@pytest.fixture
def store():
    return get_store()


def location(backup_id: str, info) -> dict:
    return {"name": info.name, "sha256": info.sha256, "backup_id": backup_id}


def noisy_table(pks) -> list[list]:
    """Rows with unique password hashes, as real users have: rows that do not compress to
    next to nothing, as the plain test table does."""
    noise = random.Random(pks[0])
    return [[*row[:3], f"argon2$v=19${noise.randbytes(24).hex()}", *row[4:]] for row in table(pks)]


def scattered_update(rows: list[list], fraction: float, seed: int) -> list[list]:
    """A copy of `rows` with `fraction` of them, drawn at random, given a new email."""
    changed = [list(row) for row in rows]
    for index in random.Random(seed).sample(range(len(rows)), int(len(rows) * fraction)):
        changed[index][2] = f"moved{seed}-{index}@example.org"
    return changed


def entries(store, backup_id, info) -> list[chunked.ChunkRef]:
    [entry] = manifest_of(store, backup_id, info).models
    return entry.chunks


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def age(paths) -> None:
    then = time.time() - 2 * 60 * 60
    for path in paths:
        os.utime(path, (then, then))


# --- the store ------------------------------------------------------------------------


def test_a_scattered_update_writes_deltas_a_small_fraction_of_a_full_backup(store):
    rows = noisy_table(range(1, 20_001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    updated = scattered_update(rows, 0.01, seed=1)

    second_id, second = write(store, [(TABLE_SPEC, updated)], previous=location(first_id, first))

    # Nearly every chunk holds a changed row, yet each is stored as its few differences.
    changed = set(entries(store, second_id, second)) - set(entries(store, first_id, first))
    assert len(changed) > 0.8 * len(entries(store, first_id, first))
    assert second.chunks_as_deltas == second.chunks_written > 0
    assert second.bytes_written < 0.10 * first.bytes_written
    assert read_all(store, second_id, second) == [["accounts.user", updated]]
    # Its bases are named in the manifest: the first backup's chunks over the same keys.
    first_ids = {ref.id for ref in entries(store, first_id, first)}
    deltas = [ref for ref in entries(store, second_id, second) if ref.needs]
    assert len(deltas) == second.chunks_as_deltas
    assert all(ref.needs[0] in first_ids for ref in deltas)
    # An update never moves a cut point: the same chunks over the same keys.
    assert [ref.rows for ref in entries(store, second_id, second)] == [
        ref.rows for ref in entries(store, first_id, first)
    ]


def test_a_delta_names_its_chunk_by_its_rows_as_a_full_chunk_would(store, settings):
    rows = table(range(1, 3001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    updated = scattered_update(rows, 0.01, seed=2)
    second_id, second = write(store, [(TABLE_SPEC, updated)], previous=location(first_id, first))
    assert second.chunks_as_deltas > 0
    names = [ref.id for ref in entries(store, second_id, second)]

    # The same rows written into an empty store, in full, get the same names.
    shutil.rmtree(Path(settings.FAILSAFE_BACKUP_DIR))
    alone_id, alone = write(store, [(TABLE_SPEC, updated)])
    assert alone.chunks_as_deltas == 0
    assert [ref.id for ref in entries(store, alone_id, alone)] == names


def test_changes_to_many_rows_of_a_chunk_or_no_previous_backup_write_it_whole(store):
    rows = table(range(1, 3001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    rewritten = [[*row[:2], f"new-{row[0]}@example.org", *row[3:]] for row in rows]

    second_id, second = write(store, [(TABLE_SPEC, rewritten)], previous=location(first_id, first))

    assert second.chunks_written == second.chunks and second.chunks_as_deltas == 0
    assert not any(ref.needs for ref in entries(store, second_id, second))
    assert read_all(store, second_id, second) == [["accounts.user", rewritten]]


def test_a_delta_that_would_not_rebuild_the_rows_exactly_is_not_written(store):
    rows = noisy_table(range(1, 2001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    # 1 == True in Python, so a comparison of values sees no change; the bytes differ, and
    # only the writer's rebuild of its delta notices.
    retyped = [list(row) for row in rows]
    retyped[1000][4] = 1 if retyped[1000][4] else 0

    second_id, second = write(store, [(TABLE_SPEC, retyped)], previous=location(first_id, first))

    assert second.chunks_written == 1 and second.chunks_as_deltas == 0
    [[_label, read_back]] = read_all(store, second_id, second)
    assert read_back == retyped and type(read_back[1000][4]) is int


def test_the_chain_of_bases_stays_within_its_bound(store):
    rows = table(range(1, 4001))
    backup_id, info = write(store, [(TABLE_SPEC, rows)])
    depths = []
    for round_number in range(chunked.MAX_CHAIN + 3):
        # One row in 50 each time: every chunk (64 rows or more) changes every time.
        rows = [
            [*row[:2], f"round{round_number}@example.org", *row[3:]] if index % 50 == 0 else row
            for index, row in enumerate(rows)
        ]
        backup_id, info = write(store, [(TABLE_SPEC, rows)], previous=location(backup_id, info))
        depths.append({len(ref.needs) for ref in entries(store, backup_id, info)})
        assert read_all(store, backup_id, info) == [["accounts.user", rows]]
    # Each delta is one link longer than its base's chain, until the bound; then the
    # chunk is written whole again, and the next deltas start over on it.
    assert depths == [{depth} for depth in range(1, chunked.MAX_CHAIN + 1)] + [{0}, {1}, {2}]


def test_inserts_and_deletes_make_deltas_too_and_read_back_exactly(store):
    rows = noisy_table(range(1, 6001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    gone = set(random.Random(5).sample(range(1, 6001), 30))
    changed = [row for row in rows if row[0] not in gone] + noisy_table(range(6001, 6011))
    changed = scattered_update(changed, 0.005, seed=6)

    second_id, second = write(store, [(TABLE_SPEC, changed)], previous=location(first_id, first))

    assert second.chunks_as_deltas > 0
    assert second.bytes_written < 0.25 * first.bytes_written
    assert read_all(store, second_id, second) == [["accounts.user", changed]]


def test_deleting_the_previous_backup_and_collecting_keeps_the_later_one_whole(store, settings):
    rows = table(range(1, 5001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    # The first thousand rows all change (their chunks are written whole), the rest here
    # and there (deltas over the first backup's chunks).
    updated = scattered_update(rows, 0.01, seed=3)
    updated[:1000] = [[row[0], "renamed", *row[2:]] for row in updated[:1000]]
    second_id, second = write(store, [(TABLE_SPEC, updated)], previous=location(first_id, first))
    bases = {base for ref in entries(store, second_id, second) for base in ref.needs}
    assert bases

    store.delete(first.name)
    age(chunk_files(settings).values())
    report = store.collect_garbage(manifests=[location(second_id, second)], grace_seconds=60)

    # The first backup's chunks are gone, except those the second's deltas need.
    assert report.deleted > 0
    assert {bytes.fromhex(name) for name in chunk_files(settings)} == manifest_of(
        store, second_id, second
    ).object_ids()
    assert bases <= {bytes.fromhex(name) for name in chunk_files(settings)}
    assert store.verify(**location(second_id, second)) == {"accounts.user": len(updated)}
    assert read_all(store, second_id, second) == [["accounts.user", updated]]


def test_a_chunk_held_from_an_older_backup_brings_the_bases_it_needs(store, settings):
    rows = table(range(1, 3001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    updated = scattered_update(rows, 0.01, seed=4)
    second_id, second = write(store, [(TABLE_SPEC, updated)], previous=location(first_id, first))
    # Back to the first rows (held, whole), then to the second's again: held as deltas
    # that the previous backup (the third) does not name, so read from their headers.
    third_id, third = write(store, [(TABLE_SPEC, rows)], previous=location(second_id, second))
    fourth_id, fourth = write(store, [(TABLE_SPEC, updated)], previous=location(third_id, third))
    assert fourth.chunks_written == 0
    assert entries(store, fourth_id, fourth) == entries(store, second_id, second)

    for name in (first.name, second.name, third.name):
        store.delete(name)
    age(chunk_files(settings).values())
    store.collect_garbage(manifests=[location(fourth_id, fourth)], grace_seconds=60)

    assert store.verify(**location(fourth_id, fourth)) == {"accounts.user": len(updated)}


def test_a_damaged_base_is_named_by_verify_and_healed_by_the_next_backup(store, settings):
    rows = table(range(1, 3001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    updated = scattered_update(rows, 0.01, seed=7)
    second_id, second = write(store, [(TABLE_SPEC, updated)], previous=location(first_id, first))
    [delta, *_] = [ref for ref in entries(store, second_id, second) if ref.needs]
    base_hex = delta.needs[0].hex()
    flip_a_byte(chunk_files(settings)[base_hex])

    with pytest.raises(ArchiveCorrupt) as found:
        store.verify(**location(second_id, second))
    assert f"chunk {delta.id.hex()} of accounts.user whose base chunk {base_hex}" in str(
        found.value
    )
    assert "cannot be decrypted" in str(found.value)

    # The next backup of the same rows reads what it would reuse, finds the base damaged,
    # and seals the chunk whole under its name: the second backup is whole again.
    third_id, third = write(store, [(TABLE_SPEC, updated)], previous=location(second_id, second))
    assert third.chunks_rewritten >= 1
    assert not any(ref.needs for ref in entries(store, third_id, third) if ref.id == delta.id)
    assert store.verify(**location(second_id, second)) == {"accounts.user": len(updated)}
    assert read_all(store, second_id, second) == [["accounts.user", updated]]


def test_repair_rewrites_a_chunk_whose_base_is_missing_from_the_rows_still_held(store, settings):
    rows = table(range(1, 3001))
    first_id, first = write(store, [(TABLE_SPEC, rows)])
    updated = scattered_update(rows, 0.01, seed=8)
    second_id, second = write(store, [(TABLE_SPEC, updated)], previous=location(first_id, first))
    [delta, *_] = [ref for ref in entries(store, second_id, second) if ref.needs]
    chunk_files(settings)[delta.needs[0].hex()].unlink()

    class Rows:
        def __enter__(self):
            return [Section(TABLE_SPEC, iter(updated))]

        def __exit__(self, *exc_info):
            return False

    report = store.repair(
        archives=[location(second_id, second)],
        checked_chunks=set(),
        sources=[SnapshotSource("the rows", Rows)],
    )

    assert delta.id.hex() in report.damaged
    assert f"whose base chunk {delta.needs[0].hex()} is missing" in report.damaged[delta.id.hex()]
    assert report.rewritten[delta.id.hex()] == "the rows"
    assert store.verify(**location(second_id, second)) == {"accounts.user": len(updated)}


def test_a_version_2_manifest_still_reads(store, monkeypatch):
    # What the previous release wrote: no base ids, every chunk whole.
    monkeypatch.setattr(chunked, "MANIFEST_VERSION", 2)
    rows = table(range(1, 2001))
    old_id, old = write(store, [(TABLE_SPEC, rows)])
    monkeypatch.undo()
    assert read_all(store, old_id, old) == [["accounts.user", rows]]

    # A new backup after it makes deltas over its chunks all the same.
    updated = scattered_update(rows, 0.01, seed=9)
    new_id, new = write(store, [(TABLE_SPEC, updated)], previous=location(old_id, old))
    assert new.chunks_as_deltas > 0
    assert read_all(store, new_id, new) == [["accounts.user", updated]]


def test_a_manifest_naming_malformed_base_ids_is_refused(store, monkeypatch):
    rows = table(range(1, 500))
    real = chunked.ChunkRef.to_record
    monkeypatch.setattr(chunked.ChunkRef, "to_record", lambda ref: [*real(ref), [b"short"]])
    backup_id, info = write(store, [(TABLE_SPEC, rows)])
    with pytest.raises(ArchiveCorrupt, match="is malformed: a chunk entry with bad base ids"):
        manifest_of(store, backup_id, info)


# --- backups of the database ----------------------------------------------------------


def noisy_users(count: int) -> None:
    """Users with unique password hashes, as real ones have (bulk_users' compress to
    next to nothing, which leaves a delta's fixed costs looking large)."""
    noise = random.Random(count)
    User.objects.bulk_create(
        User(
            username=f"bulk{n:05d}",
            email=f"bulk{n:05d}@example.com",
            password=f"argon2$argon2id$v=19$m=102400,t=2,p=8${noise.randbytes(32).hex()}",
        )
        for n in range(count)
    )


def _scatter_users(fraction: float, seed: int) -> list[int]:
    pks = list(User.objects.filter(username__startswith="bulk").values_list("pk", flat=True))
    chosen = random.Random(seed).sample(pks, int(len(pks) * fraction))
    for pk in chosen:
        User.objects.filter(pk=pk).update(first_name=f"Scattered {seed}")
    return chosen


def _stored(backup: Backup) -> set[bytes]:
    return (
        get_store()
        .read_manifest(
            name=backup.archive_name, sha256=backup.archive_sha256, backup_id=str(backup.id)
        )
        .object_ids()
    )


@pytest.mark.django_db
def test_a_backup_after_scattered_updates_restores_and_compares_exactly(
    actor, armed, population, settings
):
    noisy_users(3000)
    first = services.create_backup(actor=actor)
    _scatter_users(0.01, seed=1)
    second = services.create_backup(actor=actor)
    assert len(_stored(second) - _stored(first)) > 0
    new_bytes = sum(
        chunk_files(settings)[object_id.hex()].stat().st_size
        for object_id in _stored(second) - _stored(first)
    )
    assert new_bytes < 0.05 * first.archive_size

    comparison = services.compare(actor=actor, backup_id=second.id, against=first.id)
    users = seed.comparison(comparison)["Details"]["accounts.user"]
    assert users["Modified"]["Count"] == 30
    assert users["Added"]["Count"] == users["Removed"]["Count"] == 0

    live_before = sorted(User.objects.values_list("pk", "username", "first_name"))
    User.objects.filter(username__startswith="bulk00").update(first_name="Overwritten")
    services.restore(actor=actor, backup_id=second.id, password=FAILSAFE_PASSWORD)
    assert sorted(User.objects.values_list("pk", "username", "first_name")) == live_before
    assert services.compare(actor=actor, against=second.id).changes == []


@pytest.mark.django_db
def test_deleting_the_backup_before_keeps_the_later_one_verifiable_and_restorable(
    actor, armed, population, settings
):
    bulk_users(2000)
    first = services.create_backup(actor=actor)
    _scatter_users(0.01, seed=2)
    second = services.create_backup(actor=actor)
    live = sorted(User.objects.values_list("pk", "first_name"))

    services.delete_backup(actor=actor, password=FAILSAFE_PASSWORD, backup_id=first.id)
    age(chunk_files(settings).values())
    report = services.collect_garbage(actor=actor, password=FAILSAFE_PASSWORD)

    assert report.missing == 0
    assert set(chunk_files(settings)) == {object_id.hex() for object_id in _stored(second)}
    assert services.verify(actor=actor, backup_id=second.id)[0].ok
    User.objects.filter(username__startswith="bulk01").delete()
    services.restore(actor=actor, backup_id=second.id, password=FAILSAFE_PASSWORD)
    assert sorted(User.objects.values_list("pk", "first_name")) == live


@pytest.mark.django_db
def test_a_replica_alone_recovers_a_backup_whose_previous_one_was_deleted(
    superadmin, armed, population, settings, file_replica_url
):
    bulk_users(2000)
    first = Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])
    _scatter_users(0.01, seed=3)
    second = Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])
    bases = _stored(second) - {
        ref.id
        for entry in get_store()
        .read_manifest(
            name=second.archive_name, sha256=second.archive_sha256, backup_id=str(second.id)
        )
        .models
        for ref in entry.chunks
    }
    assert bases
    run("failsafe_delete", str(first.id), "--yes", "--password-stdin", stdin=FAILSAFE_PASSWORD)

    # Configured only now: the first backup (whose chunks are the bases) never reaches it.
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    run("failsafe_replicate", "--replica", "nas")
    replica_dir = Path(file_replica_url.removeprefix("file://"))
    assert not (replica_dir / f"{first.id}.manifest").exists()
    on_replica = {path.name for path in (replica_dir / "chunks").glob("*/*")}
    assert {base.hex() for base in bases} <= on_replica

    expected = sorted(User.objects.values_list("pk", "first_name"))
    Backup.objects.all().delete()
    shutil.rmtree(django_settings.FAILSAFE_BACKUP_DIR)
    recovered = json.loads(
        run(
            "failsafe_recover",
            "--from",
            file_replica_url,
            "--json",
            "--password-stdin",
            stdin=f"{FAILSAFE_PASSWORD}\n",
        )
    )
    assert [entry["Id"] for entry in recovered["Added"]] == [str(second.id)]
    assert recovered["Damaged"] == []
    assert json.loads(run("failsafe_verify", "--all", "--json"))["Valid"] is True
    User.objects.filter(username__startswith="bulk").update(first_name="Lost")
    services.restore(
        actor=services.Actor(user=superadmin, source=AuditEvent.Source.CLI),
        backup_id=second.id,
        password=FAILSAFE_PASSWORD,
    )
    assert sorted(User.objects.values_list("pk", "first_name")) == expected
