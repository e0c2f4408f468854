"""Progress: what the services report while they read and write archives, and what the
commands show of it (on a terminal only)."""

import io
import json
import re
import sys
from dataclasses import dataclass, field

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from rich.console import Console

from failsafe import progress, services
from failsafe.archive import get_store
from failsafe.exceptions import CascadeRefused
from failsafe.models import Backup
from failsafe.progress import NO_PROGRESS, TerminalProgress
from tests.factories import FAILSAFE_PASSWORD, UserFactory

from .test_chunked_store import bulk_users, take_format1_backup

User = get_user_model()

pytestmark = pytest.mark.django_db


@dataclass
class Stage:
    label: str
    total: int | None
    advances: list[tuple[int, int]] = field(default_factory=list)
    finished: bool = False

    @property
    def rows(self) -> int:
        return sum(rows for rows, _ in self.advances)

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.advances)


class RecordingProgress:
    """A Progress that keeps every call, and refuses calls out of order."""

    def __init__(self):
        self.stages: list[Stage] = []

    @property
    def _open(self) -> Stage | None:
        if self.stages and not self.stages[-1].finished:
            return self.stages[-1]
        return None

    def start(self, label, total_rows):
        assert self._open is None, f"{label} started inside {self._open.label}"
        self.stages.append(Stage(label, total_rows))

    def advance(self, rows, byte_count=0):
        assert self._open is not None, "advance outside a stage"
        self._open.advances.append((rows, byte_count))

    def finish(self):
        assert self._open is not None, "finish without a stage"
        self._open.finished = True

    def labels(self) -> list[str]:
        """The stages' labels, without the short backup id a verification names."""
        return [re.sub(r" [0-9a-f]{8}$", "", stage.label) for stage in self.stages]

    def stage(self, prefix: str) -> Stage:
        (found,) = [stage for stage in self.stages if stage.label.startswith(prefix)]
        return found


def captured_rows(backup: Backup) -> int:
    return sum(backup.state["SystemMetrics"]["ModelCounts"].values())


def chunk_sizes(backup: Backup) -> dict[bytes, int]:
    manifest = get_store().read_manifest(
        name=backup.archive_name, sha256=backup.archive_sha256, backup_id=str(backup.id)
    )
    return {ref.id: ref.size for entry in manifest.models for ref in entry.chunks}


def chunk_count(backup: Backup) -> int:
    return len(chunk_sizes(backup))


# --- the services ---------------------------------------------------------------------


def test_a_backup_reports_every_row_and_stored_byte_once_per_chunk(actor, population):
    bulk_users(1500)
    recorder = RecordingProgress()

    backup = services.create_backup(actor=actor, progress=recorder)

    (stage,) = recorder.stages
    assert stage.label == "Manual backup"
    assert stage.total == captured_rows(backup) == User.objects.count() + 4
    assert stage.rows == stage.total and stage.finished
    # The stored bytes of the chunks: everything the backup holds but its manifest.
    assert 0 < stage.bytes < backup.archive_size
    # Advanced per chunk, never per row.
    assert len(stage.advances) == chunk_count(backup) < stage.rows / 50


def test_verify_reports_each_backup_and_counts_the_chunks_it_skips(actor, population):
    bulk_users(1500)
    first = services.create_backup(actor=actor)
    second = services.create_backup(actor=actor)
    recorder = RecordingProgress()

    results = services.verify(actor=actor, all_backups=True, progress=recorder)

    assert all(result.ok for result in results)
    assert len(recorder.stages) == 2
    for stage, backup in zip(recorder.stages, (second, first), strict=True):
        assert stage.label == f"Verify backup {str(backup.id)[:8]}"
        assert stage.rows == stage.total == captured_rows(backup)
    # The second backup shares every chunk with the first, checked a moment before.
    assert recorder.stages[0].bytes > 0
    assert recorder.stages[1].bytes == 0


def test_a_format_1_backup_reports_its_rows_while_verified(actor, population):
    bulk_users(2500)
    old = take_format1_backup(actor)
    recorder = RecordingProgress()

    services.verify(actor=actor, backup_id=old.id, progress=recorder)

    (stage,) = recorder.stages
    assert stage.rows == stage.total == captured_rows(old)
    assert len(stage.advances) < stage.rows / 100


def test_a_restore_reports_its_checks_its_safety_backup_its_writes_and_verification(
    actor, armed, population
):
    bulk_users(800)
    backup = services.create_backup(actor=actor)
    User.objects.filter(username__startswith="bulk00").delete()
    live_rows = User.objects.count() + 4
    recorder = RecordingProgress()

    services.restore(
        actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD, progress=recorder
    )

    assert recorder.labels() == ["Verify backup", "Pre-restore backup", "Restore", "Verify restore"]
    assert all(stage.finished for stage in recorder.stages)
    assert recorder.stage("Pre-restore").rows == recorder.stage("Pre-restore").total == live_rows
    for label in ("Verify backup", "Restore", "Verify restore"):
        stage = recorder.stage(label)
        assert stage.rows == stage.total == captured_rows(backup), label


def test_a_dry_run_reports_the_check_and_the_plan_only(actor, population):
    backup = services.create_backup(actor=actor)
    recorder = RecordingProgress()

    services.restore(actor=actor, backup_id=backup.id, dry_run=True, progress=recorder)

    assert recorder.labels() == ["Verify backup", "Plan restore"]
    assert recorder.stage("Plan restore").rows == captured_rows(backup)


def test_a_refused_restore_still_finishes_every_stage_it_started(actor, armed, population):
    backup = services.create_backup(actor=actor)
    mallory = UserFactory(username="mallory")
    LogEntry.objects.create(
        user=mallory,
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(mallory.pk),
        object_repr="mallory was here",
        action_flag=ADDITION,
    )
    recorder = RecordingProgress()

    with pytest.raises(CascadeRefused):
        services.restore(
            actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD, progress=recorder
        )

    assert recorder.labels() == ["Verify backup", "Pre-restore backup", "Restore", "Plan restore"]
    assert all(stage.finished for stage in recorder.stages)


def test_compare_counts_the_rows_of_the_archives_it_reads(actor, population):
    bulk_users(1500)
    first = services.create_backup(actor=actor)
    User.objects.filter(username="bulk00700").update(first_name="Changed")
    second = services.create_backup(actor=actor)

    against_live = RecordingProgress()
    services.compare(actor=actor, against=first.id, progress=against_live)
    two_backups = RecordingProgress()
    services.compare(actor=actor, backup_id=second.id, against=first.id, progress=two_backups)

    (live_stage,) = against_live.stages
    assert live_stage.label == "Compare"
    assert live_stage.rows == live_stage.total == captured_rows(first)
    (stage,) = two_backups.stages
    # Both archives, the chunks they share included: skipped, but counted as done...
    assert stage.rows == stage.total == captured_rows(first) + captured_rows(second)
    # ...while the bytes are those of the chunks read: the ones only one of them holds.
    first_chunks, second_chunks = chunk_sizes(first), chunk_sizes(second)
    shared = first_chunks.keys() & second_chunks.keys()
    assert shared
    assert stage.bytes == sum(
        size
        for chunks in (first_chunks, second_chunks)
        for chunk_id, size in chunks.items()
        if chunk_id not in shared
    )


def test_the_trigger_reports_its_backup_then_its_compare(actor, armed, population):
    safe = services.create_backup(actor=actor)
    services.mark_safe(actor=actor, backup_id=safe.id, password=FAILSAFE_PASSWORD)
    recorder = RecordingProgress()

    services.trigger(actor=actor, passkey=armed, progress=recorder)

    assert recorder.labels() == ["Emergency backup", "Compare"]
    assert all(stage.rows == stage.total for stage in recorder.stages)


def test_without_a_progress_the_services_report_to_nobody(actor, population):
    backup = services.create_backup(actor=actor)

    assert services.verify(actor=actor, backup_id=backup.id)[0].ok
    assert progress.current() is NO_PROGRESS


def test_reporting_none_keeps_the_progress_already_current():
    outer = RecordingProgress()
    with progress.reporting(outer):
        with progress.reporting(None) as inner:
            assert inner is outer
        with progress.stage("Pass", 3) as current:
            current.advance(3)
    assert progress.current() is NO_PROGRESS
    assert [(s.label, s.rows, s.finished) for s in outer.stages] == [("Pass", 3, True)]


# --- the terminal display -------------------------------------------------------------


def terminal_console() -> tuple[Console, io.StringIO]:
    screen = io.StringIO()
    return Console(file=screen, force_terminal=True, width=140, color_system=None), screen


def test_the_terminal_display_shows_rows_bytes_and_rate():
    console, screen = terminal_console()
    with TerminalProgress(console=console) as display:
        display.start("Manual backup", 3000)
        display.advance(1000, 250_000)
        display.advance(2000, 500_000)
        display.finish()
        display.start("Compare", None)
        display.advance(40)

    shown = screen.getvalue()
    assert "Manual backup" in shown
    assert "3,000/3,000 rows" in shown
    assert "750.0 kB" in shown
    assert "rows/s" in shown
    # A stage with nothing counted beforehand ends full at what it did.
    assert "40/40 rows" in shown


def test_a_stage_that_fails_half_way_stays_half_full():
    console, screen = terminal_console()
    with TerminalProgress(console=console) as display:
        display.start("Restore", 1000)
        display.advance(400)
        display.finish()

    assert "400/1,000 rows" in screen.getvalue()


# --- the commands ---------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def run_command(name, *args, stdout, stderr, stdin=""):
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command(name, *args, stdout=stdout, stderr=stderr)
    finally:
        sys.stdin = old_stdin
    return stdout.getvalue(), stderr.getvalue()


@pytest.fixture
def backup_id(actor, population):
    return str(services.create_backup(actor=actor).id)


COMMANDS = [
    ("failsafe_backup",),
    ("failsafe_verify",),
    ("failsafe_compare", "--against", "{backup}"),
    ("failsafe_restore", "{backup}", "--dry-run"),
    ("failsafe_restore", "{backup}", "--yes", "--password-stdin"),
    ("failsafe_trigger", "--passkey-stdin"),
]


def _secrets_for(command: tuple, passkey: str) -> str:
    if "--password-stdin" in command:
        return FAILSAFE_PASSWORD + "\n"
    if "--passkey-stdin" in command:
        return passkey + "\n"
    return ""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_commands_without_a_terminal_print_only_their_result(command, armed, backup_id):
    name, *args = (part.format(backup=backup_id) for part in command)
    out, err = run_command(
        name, *args, stdout=io.StringIO(), stderr=io.StringIO(), stdin=_secrets_for(command, armed)
    )

    assert out and err == ""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_commands_with_json_print_only_the_json_even_on_a_terminal(command, armed, backup_id):
    name, *args = (part.format(backup=backup_id) for part in command)
    out, err = run_command(
        name,
        *args,
        "--json",
        stdout=Terminal(),
        stderr=Terminal(),
        stdin=_secrets_for(command, armed),
    )

    json.loads(out)
    assert err == ""


def test_a_backup_on_a_terminal_shows_its_progress_on_stderr(armed, population):
    out, err = run_command("failsafe_backup", stdout=Terminal(), stderr=Terminal())

    assert "Backup created: " in out
    assert "Manual backup" in err and "rows" in err
    assert "Manual backup" not in out


def test_a_restore_on_a_terminal_shows_each_stage(armed, backup_id):
    out, err = run_command(
        "failsafe_restore",
        backup_id,
        "--yes",
        "--password-stdin",
        stdout=Terminal(),
        stderr=Terminal(),
        stdin=FAILSAFE_PASSWORD + "\n",
    )

    for label in ("Verify backup", "Pre-restore backup", "Restore", "Verify restore"):
        assert label in err
    assert "rows" not in out
