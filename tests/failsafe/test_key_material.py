"""The failsafe's key material: what bootstrap may create, what status says when keys are
missing, rotation, and the recovery file that lets a new checkout open old backups."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.models import Role
from failsafe import keys, services
from failsafe.checks import audit_key_set_apart
from failsafe.models import AuditEvent, Backup
from licensing.models import ServerLicense
from tests.factories import FAILSAFE_PASSWORD, UserFactory
from tests.helpers import run

pytestmark = pytest.mark.django_db

PASSPHRASE = "kept in the safe, not with the backups"
User = get_user_model()


@pytest.fixture
def keyset_file(settings) -> Path:
    return Path(settings.FAILSAFE_KEYSET_FILE)


@pytest.fixture
def backup(actor, armed, population) -> Backup:
    return services.create_backup(actor=actor, reason="before the disk went bad")


def _secrets(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def export(path: Path, *, password: str = FAILSAFE_PASSWORD) -> dict:
    printed = run(
        "failsafe_keys",
        "export",
        str(path),
        "--password-stdin",
        "--passphrase-stdin",
        "--json",
        stdin=_secrets(password, PASSPHRASE),
    )
    return json.loads(printed)


def import_keys(path: Path, *, passphrase: str = PASSPHRASE, password: str | None = None):
    stdin = _secrets(passphrase) if password is None else _secrets(password, passphrase)
    args = ["--passphrase-stdin", "--json"] + (["--password-stdin"] if password else [])
    return json.loads(run("failsafe_keys", "import", str(path), *args, stdin=stdin))


def lose_the_key_material(settings, tmp_path, keyset_file: Path) -> Path:
    """What a new checkout on a new host has: no keyset, no key settings, another
    SECRET_KEY; the keyset is to live in a new place."""
    keyset_file.unlink()
    settings.FAILSAFE_KEYSET_FILE = str(tmp_path / "new-checkout" / "var" / "failsafe.keyset")
    settings.FAILSAFE_AUDIT_KEY = ""
    settings.FAILSAFE_CHUNK_KEY = ""
    settings.SECRET_KEY = "the new checkout's own secret key, nothing like the old one"
    return Path(settings.FAILSAFE_KEYSET_FILE)


def verify_all() -> dict:
    """What failsafe_verify --all --json prints (it also exits non-zero when one fails)."""
    out = io.StringIO()
    with contextlib.suppress(CommandError):
        call_command("failsafe_verify", "--all", "--json", stdout=out)
    return json.loads(out.getvalue())


def status() -> dict:
    return json.loads(run("failsafe_status", "--json"))


# --- bootstrap never writes over what backups need ---------------------------------------


def test_bootstrap_refuses_a_new_keyset_while_backups_need_the_lost_one(backup, keyset_file):
    keyset_file.unlink()
    with pytest.raises(CommandError) as refused:
        run("raos_bootstrap", "--superadmin", "newroot", "--json", "--no-input")

    message = str(refused.value)
    assert f"need key(s) {backup.key_id}" in message
    assert "manage.py failsafe_keys import" in message
    assert "Nothing was changed" in message and "\n" not in message
    # Nothing was written: no keyset that would look like a repair, no new account.
    assert not keyset_file.exists()
    assert not User.objects.filter(username="newroot").exists()


def test_bootstrap_after_the_import_goes_on_and_creates_no_keyset(
    backup, keyset_file, settings, tmp_path
):
    recovery = tmp_path / "offline" / "keys.recovery"
    recovery.parent.mkdir()
    export(recovery)
    new_keyset = lose_the_key_material(settings, tmp_path, keyset_file)
    import_keys(recovery, password=FAILSAFE_PASSWORD)

    printed = json.loads(run("raos_bootstrap", "--superadmin", "root", "--json", "--no-input"))
    assert printed["FailsafeKeysetCreated"] is None
    assert printed["Notes"] == []
    assert keys.keyset_info().key_ids == (backup.key_id,)
    assert keys.keyset_info().source == str(new_keyset)


# --- errors and status name the missing key ----------------------------------------------


def test_a_backup_whose_key_is_not_in_the_keyset_names_the_key(backup, actor, keyset_file):
    # What the old advice did: a new keyset in place of the one the backups need.
    keyset_file.unlink()
    keys.ensure_keyset_file()
    new_key = keys.primary_key_id()

    checked = verify_all()
    expected = (
        f"Backup {backup.id} was encrypted with key {backup.key_id} which the keyset does "
        "not hold: import the key material (manage.py failsafe_keys import)"
    )
    assert checked["Valid"] is False
    assert checked["Backups"][0]["Error"] == expected
    with pytest.raises(CommandError) as refused:
        run(
            "failsafe_restore",
            str(backup.id),
            "--yes",
            "--password-stdin",
            stdin=_secrets(FAILSAFE_PASSWORD),
        )
    assert str(refused.value) == expected

    shown = json.loads(run("failsafe_keys", "status", "--json"))
    assert shown["MissingKeyIds"] == [backup.key_id]
    assert {(k["KeyId"], k["Held"], k["Primary"], k["Backups"]) for k in shown["Keys"]} == {
        (backup.key_id, False, False, 1),
        (new_key, True, True, 0),
    }
    assert f"key {backup.key_id}: MISSING, 1 backup(s)" in run("failsafe_keys", "status")


def test_status_is_degraded_while_backups_need_a_key_the_keyset_lacks(
    backup, actor, keyset_file, tmp_path
):
    assert status()["SystemStatus"] == "Operational"
    assert status()["Problems"] == []

    kept = tmp_path / "kept.keyset"
    shutil.move(keyset_file, kept)
    no_keyset = status()
    assert no_keyset["SystemStatus"] == "Degraded"
    assert no_keyset["Problems"] == [
        f"No usable failsafe keyset, and 1 backup(s) need key(s) {backup.key_id}: "
        "import the key material (manage.py failsafe_keys import)"
    ]

    keys.ensure_keyset_file()  # another keyset, without the key the backup needs
    wrong_keyset = status()
    assert wrong_keyset["SystemStatus"] == "Degraded"
    assert wrong_keyset["Problems"] == [
        f"The keyset lacks key {backup.key_id}, which 1 backup(s) need: "
        "import the key material (manage.py failsafe_keys import)"
    ]
    text = run("failsafe_status")
    assert "System status: Degraded" in text and f"lacks key {backup.key_id}" in text

    # The API says the same.
    _, token = AuthToken.objects.create(user=actor.user)
    client = APIClient(REMOTE_ADDR="203.0.113.7")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    answer = client.get("/api/failsafe/status/").json()
    assert answer["system_status"] == "Degraded"
    assert answer["problems"] == wrong_keyset["Problems"]

    shutil.move(kept, keyset_file)
    assert status()["SystemStatus"] == "Operational"


def test_status_is_degraded_after_a_failed_backup_until_one_succeeds(
    backup, actor, keyset_file, tmp_path
):
    kept = tmp_path / "kept.keyset"
    shutil.move(keyset_file, kept)
    with pytest.raises(CommandError):
        run("failsafe_backup")
    shutil.move(kept, keyset_file)
    failed = Backup.objects.get(status=Backup.Status.FAILED)

    shown = status()
    assert shown["SystemStatus"] == "Degraded"
    assert len(shown["Problems"]) == 1
    assert shown["Problems"][0].startswith(f"The last backup ({failed.id}, ")
    assert "failed: No failsafe keyset" in shown["Problems"][0]

    run("failsafe_backup")
    assert status()["SystemStatus"] == "Operational"


def test_status_is_degraded_when_the_last_check_found_the_audit_chain_broken(backup, actor):
    # Status does not walk the chain: only a check finds the edit, and status shows its result.
    AuditEvent.objects.filter(seq=1).update(target="edited behind the failsafe's back")
    assert status()["SystemStatus"] == "Operational"

    with pytest.raises(CommandError, match="Audit chain broken at event #1"):
        run("failsafe_audit", "--verify")
    shown = status()
    assert shown["SystemStatus"] == "Degraded"
    assert shown["Problems"][0].startswith("The audit chain is broken at event #1:")


# --- rotation -----------------------------------------------------------------------------


def test_rotation_makes_a_new_primary_and_old_backups_still_open(backup, actor, keyset_file):
    rotated = json.loads(
        run("failsafe_keys", "rotate", "--password-stdin", "--json", stdin=FAILSAFE_PASSWORD)
    )
    assert rotated["PreviousPrimaryKeyId"] == backup.key_id
    assert rotated["PrimaryKeyId"] != backup.key_id
    assert sorted(rotated["KeyIds"]) == sorted([backup.key_id, rotated["PrimaryKeyId"]])
    assert "Export the key material again" in rotated["Note"]

    after = services.create_backup(actor=actor)
    assert after.key_id == rotated["PrimaryKeyId"]
    checked = verify_all()
    assert checked["Valid"] is True and checked["Checked"] == 2
    event = AuditEvent.objects.filter(action="failsafe.keys.rotate").get()
    assert event.outcome == AuditEvent.Outcome.SUCCESS
    assert event.details["primary"] == rotated["PrimaryKeyId"]


def test_an_inline_keyset_is_not_rotated_here(backup, settings, keyset_file):
    settings.FAILSAFE_KEYSET = keyset_file.read_text()
    with pytest.raises(CommandError, match="set inline by FAILSAFE_KEYSET"):
        run("failsafe_keys", "rotate", "--password-stdin", stdin=FAILSAFE_PASSWORD)


# --- the trust-changing operations need the failsafe password ----------------------------


def test_rotation_and_export_are_refused_without_the_failsafe_password(
    backup, keyset_file, tmp_path
):
    keyset_before = keyset_file.read_text()
    recovery = tmp_path / "keys.recovery"

    with pytest.raises(CommandError, match="^Invalid failsafe password$"):
        run("failsafe_keys", "rotate", "--password-stdin", stdin="not the password\n")
    with pytest.raises(CommandError, match="^Invalid failsafe password$"):
        export(recovery, password="not the password")

    assert keyset_file.read_text() == keyset_before
    assert not recovery.exists()
    denied = AuditEvent.objects.filter(outcome=AuditEvent.Outcome.DENIED).values_list(
        "action", flat=True
    )
    assert sorted(denied) == ["failsafe.keys.export", "failsafe.keys.rotate"]
    for event in AuditEvent.objects.all():
        assert "not the password" not in json.dumps(event.details)


def test_rotation_is_refused_while_no_failsafe_password_is_set(actor, keyset_file):
    keyset_before = keyset_file.read_text()
    with pytest.raises(CommandError, match="^Failsafe password not set$"):
        run("failsafe_keys", "rotate", "--password-stdin", stdin="anything\n")
    assert keyset_file.read_text() == keyset_before


# --- export and import --------------------------------------------------------------------


def test_export_then_import_opens_old_backups_on_a_fresh_checkout(
    backup, actor, keyset_file, settings, tmp_path
):
    old_chunk_key = keys.chunk_id_key(backup.key_id)
    recovery = tmp_path / "offline" / "keys.recovery"
    recovery.parent.mkdir()
    exported = export(recovery)
    assert exported["KeyIds"] == [backup.key_id]
    assert recovery.stat().st_mode & 0o777 == 0o600
    # Sealed: neither the passphrase nor any key is readable in the file.
    sealed = recovery.read_text()
    assert PASSPHRASE not in sealed
    assert json.loads(keyset_file.read_text())["key"][0]["keyData"]["value"] not in sealed
    assert json.loads(sealed)["kdf"]["name"] == "argon2id"

    new_keyset = lose_the_key_material(settings, tmp_path, keyset_file)
    imported = import_keys(recovery, password=FAILSAFE_PASSWORD)
    assert imported["KeysetCreated"] is True
    assert imported["Keyset"] == str(new_keyset)
    assert imported["AuditKeyInstalled"] is True
    assert imported["ChunkKeysInstalled"] == [backup.key_id]
    assert imported["StillMissing"] == []
    assert new_keyset.stat().st_mode & 0o777 == 0o600

    # The old backup opens, and restores.
    assert verify_all()["Valid"] is True
    User.objects.filter(username="alice").delete()
    services.restore(actor=actor, backup_id=backup.id, password=FAILSAFE_PASSWORD)
    assert User.objects.filter(username="alice").exists()
    # The old chunk names still hold: a new backup reuses the chunks it shares.
    assert keys.chunk_id_key(backup.key_id) == old_chunk_key
    # The audit trail signed with the old key still verifies, events since included.
    assert json.loads(run("failsafe_audit", "--verify", "--json"))["Valid"] is True
    assert status()["SystemStatus"] == "Operational"
    # The imported audit key is not SECRET_KEY's: `check --deploy` does not warn about it.
    assert not settings.FAILSAFE_AUDIT_KEY
    assert audit_key_set_apart(None) == []


def test_import_on_a_new_installation_needs_no_superadmin_and_is_audited_as_the_system(
    backup, superadmin, keyset_file, settings, tmp_path
):
    recovery = tmp_path / "keys.recovery"
    export(recovery)
    # A new installation: nobody, no failsafe password, no keys.
    superadmin.delete()
    ServerLicense.objects.update(failsafe_password_hash="")
    lose_the_key_material(settings, tmp_path, keyset_file)

    imported = import_keys(recovery)
    assert imported["KeysetCreated"] is True
    event = AuditEvent.objects.filter(action="failsafe.keys.import").get()
    assert (event.source, event.actor_username, event.outcome) == ("system", "system", "SUCCESS")

    # Then the set-up of the new installation goes on, with the imported keyset.
    run("raos_bootstrap", "--superadmin", "root", "--json", "--no-input")
    assert keys.keyset_info().key_ids == (backup.key_id,)
    User.objects.filter(username="root").update(must_change_password=False)  # logged in once
    assert verify_all()["Valid"] is True


def test_a_wrong_passphrase_is_refused_and_changes_nothing(backup, keyset_file, settings, tmp_path):
    recovery = tmp_path / "keys.recovery"
    export(recovery)
    new_keyset = lose_the_key_material(settings, tmp_path, keyset_file)

    with pytest.raises(CommandError) as refused:
        import_keys(recovery, passphrase="a guess that is long enough", password=FAILSAFE_PASSWORD)
    assert str(refused.value) == (
        "The recovery passphrase is wrong, or the file was altered: nothing was changed"
    )
    with pytest.raises(CommandError, match="^Invalid failsafe password$"):
        import_keys(recovery, password="not the password")
    # Nothing was written anywhere near the new keyset's place.
    assert not new_keyset.parent.exists()
    with pytest.raises(CommandError, match="No failsafe keyset"):
        run("failsafe_backup")
    # The refusals above were recorded under the new checkout's own audit key; the trail
    # began under the old one, which the right passphrase then brings back.
    imported = import_keys(recovery, password=FAILSAFE_PASSWORD)
    assert imported["AuditKeyInstalled"] is True
    assert verify_all()["Valid"] is True


def test_an_altered_recovery_file_is_refused(backup, keyset_file, settings, tmp_path):
    recovery = tmp_path / "keys.recovery"
    export(recovery)
    sealed = json.loads(recovery.read_text())
    sealed["kdf"]["time_cost"] = 1  # weaker than written: bound to the ciphertext
    recovery.write_text(json.dumps(sealed))
    new_keyset = lose_the_key_material(settings, tmp_path, keyset_file)

    with pytest.raises(CommandError, match="wrong, or the file was altered"):
        import_keys(recovery, password=FAILSAFE_PASSWORD)
    (tmp_path / "not-keys.json").write_text('{"hello": "world"}')
    with pytest.raises(CommandError, match="is not a failsafe key recovery file"):
        import_keys(tmp_path / "not-keys.json", password=FAILSAFE_PASSWORD)
    assert not new_keyset.parent.exists()


def test_import_adds_to_another_keyset_and_never_replaces_it(
    backup, actor, keyset_file, settings, tmp_path
):
    recovery = tmp_path / "keys.recovery"
    export(recovery)
    keyset_file.unlink()
    keys.ensure_keyset_file()  # someone made a new keyset meanwhile
    other_primary = keys.primary_key_id()

    imported = import_keys(recovery, password=FAILSAFE_PASSWORD)
    assert imported["KeysetCreated"] is False
    assert imported["AddedKeyIds"] == [backup.key_id]
    assert sorted(keys.keyset_info().key_ids) == sorted([backup.key_id, other_primary])
    assert keys.primary_key_id() == other_primary
    assert verify_all()["Valid"] is True

    again = import_keys(recovery, password=FAILSAFE_PASSWORD)
    assert again["Message"] == "Key material already in place: nothing was changed"


def test_import_refuses_a_keyset_holding_another_key_under_the_same_id(
    backup, keyset_file, tmp_path
):
    recovery = tmp_path / "keys.recovery"
    export(recovery)
    # A different key that happens to carry the same id.
    stranger = json.loads(keys._new_keyset_json())
    stranger["primaryKeyId"] = stranger["key"][0]["keyId"] = backup.key_id
    keyset_file.write_text(json.dumps(stranger))
    before = keyset_file.read_text()

    with pytest.raises(CommandError, match=f"Key {backup.key_id} of the recovery file differs"):
        import_keys(recovery, password=FAILSAFE_PASSWORD)
    assert keyset_file.read_text() == before


def test_export_asks_for_a_real_passphrase_and_never_overwrites(backup, tmp_path):
    recovery = tmp_path / "keys.recovery"
    with pytest.raises(CommandError, match="at least 12 characters"):
        run(
            "failsafe_keys",
            "export",
            str(recovery),
            "--password-stdin",
            "--passphrase-stdin",
            stdin=_secrets(FAILSAFE_PASSWORD, "short"),
        )
    assert not recovery.exists()
    recovery.write_text("something the operator keeps")
    with pytest.raises(CommandError, match="already exists"):
        export(recovery)
    assert recovery.read_text() == "something the operator keeps"


def test_key_operations_are_for_superadmins_only(backup, tmp_path):
    UserFactory(username="helpdesk", role=Role.ADMIN)
    for action in (["status"], ["rotate"], ["export", str(tmp_path / "k")]):
        with pytest.raises(CommandError, match="SuperAdmin only"):
            run(
                "failsafe_keys",
                *action,
                "--user",
                "helpdesk",
                "--password-stdin",
                "--passphrase-stdin",
                stdin=_secrets(FAILSAFE_PASSWORD, PASSPHRASE),
            )
    assert not (tmp_path / "k").exists()


def test_import_keeps_the_audit_key_this_databases_trail_began_under(
    actor, armed, keyset_file, settings, tmp_path
):
    settings.FAILSAFE_AUDIT_KEY = ""
    run("failsafe_status")  # this trail begins under the key derived from SECRET_KEY
    in_use = keys.audit_key()
    settings.FAILSAFE_AUDIT_KEY = "the audit key of another installation"
    recovery = tmp_path / "keys.recovery"
    export(recovery)
    settings.FAILSAFE_AUDIT_KEY = ""

    imported = import_keys(recovery, password=FAILSAFE_PASSWORD)
    assert imported["AuditKeyInstalled"] is False
    assert "began under the audit key in use" in imported["AuditKeyKept"]
    assert keys.audit_key() == in_use

    settings.FAILSAFE_AUDIT_KEY = "yet another audit key set by the operator"
    with pytest.raises(CommandError, match="FAILSAFE_AUDIT_KEY is set to another audit key"):
        import_keys(recovery, password=FAILSAFE_PASSWORD)
