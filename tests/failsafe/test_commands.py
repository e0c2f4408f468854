"""The manage.py doors: arguments, --json shapes, secrets from stdin, one-line refusals."""

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from failsafe.models import AuditEvent, Backup
from licensing import services as licensing
from tests.factories import FAILSAFE_PASSWORD
from tests.helpers import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_setpassword_from_stdin_then_change_needs_the_current_one(superadmin):
    payload = json.loads(
        run("failsafe_setpassword", "--password-stdin", "--json", stdin="Longer-Secret-1\n")
    )
    assert payload["Message"] == "Failsafe password set successfully"
    with pytest.raises(CommandError, match="Current failsafe password is required"):
        run("failsafe_setpassword", "--password-stdin", stdin="Another-Secret-2\nwrong-one\n")
    payload = json.loads(
        run(
            "failsafe_setpassword",
            "--password-stdin",
            "--json",
            stdin="Another-Secret-2\nLonger-Secret-1\n",
        )
    )
    assert payload["Message"] == "Failsafe password changed successfully"
    assert licensing.failsafe_password_is_valid("Another-Secret-2")


@pytest.mark.django_db
def test_too_short_password_is_refused_in_one_line(superadmin):
    with pytest.raises(CommandError) as refused:
        run("failsafe_setpassword", "--password-stdin", stdin="short\n")
    assert str(refused.value) == "Failsafe password must be at least 8 characters long"
    assert not licensing.failsafe_password_is_set()


@pytest.mark.django_db
def test_backup_marksafe_compare_and_restore_commands(superadmin, armed, population):
    created = json.loads(run("failsafe_backup", "--reason", "before upgrade", "--json"))
    assert created["Success"] is True and created["State"]["TotalUsers"] == 6
    backup_id = created["BackupId"]
    marked = run(
        "failsafe_marksafe", backup_id, "--json", "--password-stdin", stdin=FAILSAFE_PASSWORD
    )
    assert json.loads(marked)["Message"] == "Backup marked as safe environment"
    population[0][0].delete()  # alice

    compared = json.loads(run("failsafe_compare", "--json"))
    assert compared["SafeBackupId"] == backup_id
    assert "User count decreased: 6 -> 5" in compared["Issues"]

    restored = json.loads(
        run(
            "failsafe_restore",
            backup_id,
            "--yes",
            "--password-stdin",
            "--json",
            stdin=FAILSAFE_PASSWORD + "\n",
        )
    )
    assert restored["Verification"]["Identical"] is True
    listed = json.loads(run("failsafe_backups", "--json"))
    assert [b["Type"] for b in listed["Backups"]] == ["PRE_RESTORE", "MANUAL"]


@pytest.mark.django_db
def test_trigger_reads_the_passkey_from_stdin_never_argv(superadmin, armed):
    payload = json.loads(run("failsafe_trigger", "--passkey-stdin", "--json", stdin=armed + "\n"))
    assert payload["Message"] == "Emergency failsafe backup created"
    with pytest.raises(CommandError, match="^Invalid server license passkey$"):
        run("failsafe_trigger", "--passkey-stdin", stdin="SERVER-NOPE\n")
    for event in AuditEvent.objects.all():
        assert armed not in json.dumps(event.details)


@pytest.mark.django_db
def test_terminal_refuses_secrets_in_argv_but_asks_for_them(superadmin, armed):
    with pytest.raises(CommandError, match="Secrets are not accepted on the command line"):
        run("failsafe_terminal", "-c", f"help_failsafe -start {armed}")
    payload = json.loads(run("failsafe_terminal", "-c", "help_failsafe -start", stdin=armed + "\n"))
    assert payload["Success"] is True


@pytest.mark.django_db
def test_terminal_reads_lines_from_stdin(superadmin, armed):
    out = run("failsafe_terminal", stdin="failsafe status\nfailsafe backups\nexit\n")
    decoder = json.JSONDecoder()
    first, end = decoder.raw_decode(out)
    second, _ = decoder.raw_decode(out[end:].lstrip())
    assert first["FailsafePasswordSet"] is True
    assert second == {"TotalBackups": 0, "Backups": []}


@pytest.mark.django_db
def test_verify_reports_a_corrupt_archive_and_exits_non_zero(superadmin, armed, settings):
    good = json.loads(run("failsafe_backup", "--json"))["BackupId"]
    bad = Backup.objects.get(pk=json.loads(run("failsafe_backup", "--json"))["BackupId"])
    path = Path(settings.FAILSAFE_BACKUP_DIR) / bad.archive_name
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CommandError, match="1 of 2 backups failed verification"):
        run("failsafe_verify", "--all")
    assert json.loads(run("failsafe_verify", good, "--json"))["Valid"] is True


@pytest.mark.django_db
def test_audit_verify_detects_an_edited_event(superadmin, armed):
    run("failsafe_status")
    run("failsafe_backups")
    assert json.loads(run("failsafe_audit", "--verify", "--json"))["Valid"] is True
    first = AuditEvent.objects.order_by("seq").first()
    AuditEvent.objects.filter(pk=first.pk).update(action="failsafe.nothing-to-see")
    with pytest.raises(CommandError, match=f"Audit chain broken at event #{first.seq}"):
        run("failsafe_audit", "--verify")


@pytest.mark.django_db
def test_unlock_lifts_a_lockout(superadmin, armed):
    for _ in range(5):
        with pytest.raises(CommandError):
            run("failsafe_trigger", "--passkey-stdin", stdin="SERVER-NOPE\n")
    with pytest.raises(CommandError, match="Too many failed attempts"):
        run("failsafe_trigger", "--passkey-stdin", stdin=armed + "\n")
    unlocked = run(
        "failsafe_unlock",
        "--account",
        "root",
        "--json",
        "--password-stdin",
        stdin=FAILSAFE_PASSWORD,
    )
    assert json.loads(unlocked)["Lifted"] == 1
    assert json.loads(run("failsafe_trigger", "--passkey-stdin", "--json", stdin=armed + "\n"))[
        "Success"
    ]


@pytest.mark.django_db
def test_a_non_superadmin_named_with_user_is_refused(superadmin):
    from tests.factories import AdminFactory

    AdminFactory(username="staffer")
    with pytest.raises(CommandError, match="^SuperAdmin only$"):
        run("failsafe_status", "--user", "staffer")


def _database_url_for_subprocess(tmp_path):
    if connection.vendor == "postgresql":
        name = f"raos_proc_{uuid.uuid4().hex[:8]}"
        return f"postgres://postgres@127.0.0.1:5432/{name}", name
    return f"sqlite:///{tmp_path / 'proc.sqlite3'}", None


@pytest.mark.django_db(transaction=True)
def test_backups_survive_a_new_process(tmp_path):
    """Everything a backup needs is on disk and in the database, not in a process."""
    url, pg_name = _database_url_for_subprocess(tmp_path)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "FAILSAFE_BACKUP_DIR": str(tmp_path / "backups"),
        "FAILSAFE_KEYSET_FILE": str(tmp_path / "keyset.json"),
        "RAOS_SUPERADMIN_PASSWORD": "First-Login-Password-9",
    }

    def manage(*args, stdin=""):
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    if pg_name:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", pg_name], check=True)
    try:
        manage("migrate", "--noinput")
        boot = json.loads(
            manage("raos_bootstrap", "--superadmin", "root", "--demo", "6", "--json", "--no-input")
        )
        manage("failsafe_setpassword", "--password-stdin", stdin=FAILSAFE_PASSWORD + "\n")
        backup_id = json.loads(
            manage(
                "failsafe_trigger",
                "--passkey-stdin",
                "--json",
                stdin=boot["ServerLicensePasskey"] + "\n",
            )
        )["BackupId"]
        manage(
            "shell",
            "--no-imports",
            "-c",
            "from accounts.models import User; "
            "User.objects.filter(username__startswith='demo').delete()",
        )

        # A new process finds the backup, reads it and restores from it.
        listed = json.loads(manage("failsafe_backups", "--json"))
        assert [b["Id"] for b in listed["Backups"]] == [backup_id]
        assert json.loads(manage("failsafe_verify", backup_id, "--json"))["Valid"] is True
        manage(
            "failsafe_restore",
            backup_id,
            "--yes",
            "--password-stdin",
            stdin=FAILSAFE_PASSWORD + "\n",
        )
        count = manage(
            "shell",
            "--no-imports",
            "-c",
            "from accounts.models import User; print(User.objects.count())",
        )
        assert count.strip() == "7"
    finally:
        if pg_name:
            subprocess.run(
                ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", pg_name], check=False
            )


@pytest.mark.django_db
def test_a_superadmin_who_must_change_the_password_is_refused_at_the_command_line(db):
    from tests.factories import SuperAdminFactory

    SuperAdminFactory(username="fresh", must_change_password=True)
    with pytest.raises(CommandError, match="fresh must replace the one-time password first"):
        run("failsafe_status")
    with pytest.raises(CommandError, match="must replace the one-time password first"):
        run("failsafe_backup")
    assert not Backup.objects.exists()


@pytest.mark.django_db
def test_an_empty_filtered_list_says_what_it_filtered(superadmin, keyset):
    assert run("failsafe_backups").strip() == "No backups yet."
    run("failsafe_backup", "--reason", "one")
    printed = run("failsafe_backups", "--type", "EMERGENCY", "--safe").strip()
    assert printed == "No backups match --type EMERGENCY --safe."


@pytest.mark.django_db
def test_the_interactive_restore_shows_a_plan_before_asking(
    superadmin, armed, population, monkeypatch
):
    backup_id = json.loads(run("failsafe_backup", "--json"))["BackupId"]
    population[0][0].delete()  # alice
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "no")
    out = io.StringIO()
    with pytest.raises(CommandError, match="Restore cancelled; nothing was changed"):
        call_command("failsafe_restore", backup_id, stdout=out)
    printed = out.getvalue()
    assert printed.startswith(f"Restoring backup {backup_id} would change:")
    assert "accounts.user: 1 to insert" in printed
    assert "Dry run" not in printed
    assert asked == ["Restore this backup? Type 'yes' to go on: "]


@pytest.mark.django_db
def test_a_dry_run_names_the_records_it_would_change(superadmin, armed, population):
    backup_id = json.loads(run("failsafe_backup", "--json"))["BackupId"]
    population[0][0].delete()  # alice
    printed = run("failsafe_restore", backup_id, "--dry-run")
    assert "accounts.user: 1 to insert, 0 to update, 0 to delete" in printed
    assert "    insert: alice" in printed


@pytest.mark.django_db
def test_comparing_a_backup_with_live_reads_from_the_backup_to_now(superadmin, population):
    from accounts.models import Role

    backup_id = json.loads(run("failsafe_backup", "--json"))["BackupId"]
    bob = population[0][1]
    bob.role = Role.SUPERADMIN
    bob.save()
    compared = json.loads(
        run("failsafe_compare", backup_id, "--against", "live", "--json", "--user", "root")
    )
    assert "User promoted to SuperAdmin: bob" in compared["Issues"]
    assert not any("demoted" in issue for issue in compared["Issues"])
    assert (compared["Baseline"], compared["Current"]) == (f"backup {backup_id}", "live now")
    text = run("failsafe_compare", backup_id, "--against", "live", "--user", "root")
    assert f"From backup {backup_id} to live now" in text


@pytest.mark.django_db
def test_with_several_superadmins_the_license_owner_acts_and_is_named(keyset, capsys):
    from licensing import services as licensing
    from tests.factories import SuperAdminFactory

    owner = SuperAdminFactory(username="owner")
    licensing.set_owner(owner)
    SuperAdminFactory(username="intruder")  # created during the incident
    licensing.issue_passkey()

    run("failsafe_backup", "--reason", "by the owner")
    assert Backup.objects.get().created_by_username == "owner"
    assert "Acting as owner" in capsys.readouterr().err
    run("failsafe_backup", "--user", "intruder")
    assert Backup.objects.filter(created_by_username="intruder").exists()
    # A second bootstrap never hands the ownership to someone else.
    assert licensing.set_owner(SuperAdminFactory(username="third")) is False
    assert licensing.license_owner() == owner
