"""One damaged chunk shared by many backups: the next backup heals it or fails, never reuses
it; the chunk index bounds what is trusted unread; verify --repair rewrites damaged chunks
from the live rows and names the backups that stay damaged."""

import datetime
import errno
import io
import json
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import InMemoryStorage
from django.core.management import CommandError, call_command
from django.utils import timezone

from failsafe import archives, services
from failsafe.archive import files, get_store, healing
from failsafe.exceptions import FailsafeError
from failsafe.models import Backup, VerifiedChunk
from licensing.models import License
from tests.helpers import run

from .test_chunked_store import TABLE_SPEC, table, write

USERS = "accounts.user"
LICENSES = "licensing.license"


@pytest.fixture
def live(superadmin, population):
    """root, five users and four licenses, each model small enough to be one chunk."""
    return population


def backup(actor) -> Backup:
    return services.create_backup(actor=actor, reason="test")


def chunk_of(backup_row: Backup, label: str) -> str:
    """The one chunk holding the model's rows in this backup."""
    manifest = get_store().read_manifest(
        name=backup_row.archive_name,
        sha256=backup_row.archive_sha256,
        backup_id=str(backup_row.id),
    )
    [entry] = [entry for entry in manifest.models if entry.spec.label == label]
    [ref] = entry.chunks
    return ref.id.hex()


def chunk_path(settings, chunk_hex: str) -> Path:
    return Path(settings.FAILSAFE_BACKUP_DIR) / files.ChunkFiles.name(chunk_hex)


def flip(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


def flip_file(path: Path) -> None:
    path.write_bytes(flip(path.read_bytes()))


def hide_damage_from_the_stamp(chunk_hex: str) -> None:
    """As bit rot under an unchanged file looks: the index's stamp agrees with the file."""
    stamp = files.ChunkFiles(get_store().storage).stamp(chunk_hex)
    VerifiedChunk.objects.filter(chunk_id=chunk_hex).update(stamp=stamp)


def verify_all(actor) -> dict[str, bool]:
    """Whether each backup verifies, by id."""
    return {str(r.backup.id): r.ok for r in services.verify(actor=actor, all_backups=True)}


def verify_repair(*args) -> tuple[str, str | None]:
    """What `failsafe_verify --repair` printed, and its one-line refusal if it exited non-zero."""
    out = io.StringIO()
    try:
        call_command("failsafe_verify", "--repair", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), None


# --- the next backup ------------------------------------------------------------------


def test_a_flipped_byte_in_a_shared_chunk_is_healed_by_the_next_backup(actor, live, settings):
    first = backup(actor)
    second = backup(actor)
    shared = chunk_of(first, USERS)
    assert chunk_of(second, USERS) == shared
    flip_file(chunk_path(settings, shared))

    # Well within the re-verification age, and with no verification in between: the
    # file's changed stamp is enough for the backup to read it, find it bad and rewrite it.
    third = backup(actor)

    assert third.is_complete
    assert chunk_of(third, USERS) == shared
    assert verify_all(actor) == {str(first.id): True, str(second.id): True, str(third.id): True}
    out = run("failsafe_verify", "--all")
    assert out.count("  OK (") == 3 and "CORRUPT" not in out


def test_damage_the_stamp_cannot_show_is_healed_once_the_entry_is_older_than_the_age(
    actor, live, settings
):
    first = backup(actor)
    shared = chunk_of(first, USERS)
    flip_file(chunk_path(settings, shared))
    hide_damage_from_the_stamp(shared)
    long_ago = timezone.now() - datetime.timedelta(seconds=25 * 60 * 60)
    VerifiedChunk.objects.filter(chunk_id=shared).update(verified_at=long_ago)

    second = backup(actor)

    assert verify_all(actor) == {str(first.id): True, str(second.id): True}
    entry = VerifiedChunk.objects.get(chunk_id=shared)
    assert entry.verified_at > long_ago
    assert entry.stamp == files.ChunkFiles(get_store().storage).stamp(shared)


def test_with_no_reverification_age_every_reused_chunk_is_read(actor, live, settings):
    settings.FAILSAFE = {"CHUNK_REVERIFY_SECONDS": 0}
    first = backup(actor)
    shared = chunk_of(first, USERS)
    flip_file(chunk_path(settings, shared))
    hide_damage_from_the_stamp(shared)  # a fresh entry, a matching stamp: still read

    second = backup(actor)

    assert verify_all(actor) == {str(first.id): True, str(second.id): True}


def test_a_chunk_verify_found_damaged_is_not_trusted_by_the_next_backup(actor, live, settings):
    first = backup(actor)
    shared = chunk_of(first, USERS)
    flip_file(chunk_path(settings, shared))
    hide_damage_from_the_stamp(shared)  # fresh, and the file looks untouched

    with pytest.raises(CommandError, match="1 of 1 backups failed verification"):
        run("failsafe_verify", str(first.id))
    assert not VerifiedChunk.objects.filter(chunk_id=shared).exists()

    second = backup(actor)
    assert verify_all(actor) == {str(first.id): True, str(second.id): True}


def test_a_fresh_index_spares_the_reads_and_age_zero_reads_everything(db, settings):
    store = get_store()
    index = archives.DatabaseChunkIndex()
    rows = [(TABLE_SPEC, table(range(1, 3001)))]
    _, first = write(store, rows, chunk_index=index, reverify_seconds=3600)
    assert first.chunks_written == first.chunks > 5
    assert VerifiedChunk.objects.count() == first.chunks

    _, fresh = write(store, rows, chunk_index=index, reverify_seconds=3600)
    _, reread = write(store, rows, chunk_index=index, reverify_seconds=0)
    _, unindexed = write(store, rows)

    assert (fresh.chunks_written, fresh.chunks_rechecked) == (0, 0)
    assert (reread.chunks_written, reread.chunks_rechecked) == (0, first.chunks)
    assert (unindexed.chunks_written, unindexed.chunks_rechecked) == (0, first.chunks)


def test_a_store_larger_than_the_index_window_is_still_reused_unread(db, settings, monkeypatch):
    # The index is looked up a window of the previous backup's chunks at a time, and only
    # that window is kept: memory stays flat however big the store grows.
    monkeypatch.setattr(healing, "PREFETCH_WINDOW", 2)
    store = get_store()
    index = archives.DatabaseChunkIndex()
    rows = [(TABLE_SPEC, table(range(1, 3001)))]
    _, first = write(store, rows, chunk_index=index, reverify_seconds=3600)
    assert first.chunks > 3 * healing.PREFETCH_WINDOW

    _, again = write(store, rows, chunk_index=index, reverify_seconds=3600)

    assert (again.chunks_written, again.chunks_rechecked) == (0, 0)


# --- verify --repair ------------------------------------------------------------------


def test_repair_rewrites_live_chunks_and_names_the_backups_that_stay_damaged(actor, live, settings):
    users, licenses = live
    older = backup(actor)
    # The licenses' rows of the older backup stop being live; the users' rows stay.
    License.objects.filter(pk=licenses[0].pk).update(status=License.Status.REVOKED)
    newer = backup(actor)
    shared = chunk_of(older, USERS)
    assert chunk_of(newer, USERS) == shared
    gone = chunk_of(older, LICENSES)
    assert gone != chunk_of(newer, LICENSES)
    flip_file(chunk_path(settings, shared))
    flip_file(chunk_path(settings, gone))

    out, refusal = verify_repair()

    assert refusal == "1 of 2 backups stay damaged after repair"
    assert f"{newer.id}  OK (" in out
    assert f"{older.id}  CORRUPT: " in out
    # The newer backup's licenses chunk is a delta over the damaged one (one license of
    # four changed): damaged through it, and rewritten whole from the live rows.
    assert "2 of 3 damaged chunks rewritten from live data; 1 backups stay damaged" in out
    assert f"Stays damaged: backup {older.id} (1 of its chunks hold rows that are no longer" in out
    assert verify_all(actor) == {str(older.id): False, str(newer.id): True}


def test_repair_heals_every_backup_whose_rows_are_live(actor, live, settings):
    first = backup(actor)
    second = backup(actor)
    flip_file(chunk_path(settings, chunk_of(first, USERS)))
    flip_file(chunk_path(settings, chunk_of(first, LICENSES)))

    out, refusal = verify_repair("--json")

    assert refusal is None
    report = json.loads(out)
    assert report["Valid"] is True
    assert [b["Valid"] for b in report["Backups"]] == [True, True]
    assert report["Repair"]["DamagedChunks"] == 2
    assert report["Repair"]["RewrittenChunks"] == 2
    assert report["Repair"]["RewrittenFrom"] == ["live data"]
    assert report["Repair"]["StillDamaged"] == []
    assert verify_all(actor) == {str(first.id): True, str(second.id): True}


def test_repair_of_sound_backups_rewrites_nothing(actor, live, settings):
    first = backup(actor)
    before = chunk_path(settings, chunk_of(first, USERS)).stat().st_mtime_ns
    out, refusal = verify_repair()
    assert refusal is None
    assert "Every backup verified: nothing to repair" in out
    assert chunk_path(settings, chunk_of(first, USERS)).stat().st_mtime_ns == before


# --- any Django storage ---------------------------------------------------------------


class ChunkWritesFail(InMemoryStorage):
    """Backup storage in memory whose chunk writes fail once `full` is set (a full disk)."""

    full = False

    def _save(self, name, content):
        if type(self).full and name.startswith(files.CHUNK_DIR):
            raise OSError(errno.ENOSPC, "No space left on device")
        return super()._save(name, content)


@pytest.fixture
def memory_storage(settings):
    ChunkWritesFail.full = False
    settings.STORAGES = {
        **settings.STORAGES,
        "failsafe": {"BACKEND": f"{__name__}.ChunkWritesFail"},
    }
    yield get_store().storage
    ChunkWritesFail.full = False


def flip_stored(storage, chunk_hex: str) -> None:
    name = files.ChunkFiles.name(chunk_hex)
    with storage.open(name, "rb") as stored:
        data = stored.read()
    storage.delete(name)
    storage.save(name, ContentFile(flip(data)))


def test_in_an_object_store_verify_then_backup_heals(actor, live, memory_storage):
    first = backup(actor)
    shared = chunk_of(first, USERS)
    flip_stored(memory_storage, shared)
    # No stamp without a request per chunk: within the age, a fresh entry is trusted...
    assert verify_all(actor) == {str(first.id): False}
    # ...until a verification finds the chunk damaged and forgets it.
    second = backup(actor)
    assert verify_all(actor) == {str(first.id): True, str(second.id): True}


def test_in_an_object_store_repair_rewrites_the_chunk(actor, live, memory_storage):
    first = backup(actor)
    flip_stored(memory_storage, chunk_of(first, USERS))
    out, refusal = verify_repair()
    assert refusal is None
    assert "1 of 1 damaged chunks rewritten from live data; every backup verifies now" in out
    assert verify_all(actor) == {str(first.id): True}


def test_in_an_object_store_repair_puts_back_a_missing_chunk(actor, live, memory_storage):
    first = backup(actor)
    memory_storage.delete(files.ChunkFiles.name(chunk_of(first, LICENSES)))
    assert verify_all(actor) == {str(first.id): False}
    out, refusal = verify_repair(str(first.id))
    assert refusal is None
    assert "1 of 1 damaged chunks rewritten from live data" in out
    assert verify_all(actor) == {str(first.id): True}


def test_a_damaged_chunk_that_cannot_be_rewritten_fails_the_backup(actor, live, memory_storage):
    first = backup(actor)
    shared = chunk_of(first, USERS)
    flip_stored(memory_storage, shared)
    ChunkWritesFail.full = True
    assert verify_all(actor) == {str(first.id): False}

    with pytest.raises((OSError, FailsafeError)):
        backup(actor)

    failed = Backup.objects.order_by("-created_at").first()
    assert failed.status == Backup.Status.FAILED
    assert "No space left on device" in failed.error
    assert not memory_storage.exists(f"{failed.id}.manifest")


# --- the garbage collector ------------------------------------------------------------


def test_collected_chunks_leave_the_index(db, settings):
    store = get_store()
    index = archives.DatabaseChunkIndex()
    _, info = write(store, [(TABLE_SPEC, table(range(1, 1001)))], chunk_index=index)
    assert VerifiedChunk.objects.count() == info.chunks
    report = store.collect_garbage(manifests=[], grace_seconds=0, chunk_index=index)
    # The manifest of that write is in the storage, so its chunks are still referenced.
    assert report.deleted == 0
    store.delete(info.name)
    report = store.collect_garbage(manifests=[], grace_seconds=0, chunk_index=index)
    assert report.deleted == info.chunks
    assert not VerifiedChunk.objects.exists()
