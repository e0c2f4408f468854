import json
import os
import uuid
from pathlib import Path

import pytest
import tink
from tink import secret_key_access, streaming_aead

from failsafe import keys
from failsafe.archive import get_store
from failsafe.exceptions import FailsafeError
from failsafe.snapshot import ModelSpec, Section

SPEC = ModelSpec("accounts.user", ("id", "username"))


def new_keyset_json() -> str:
    streaming_aead.register()
    handle = tink.new_keyset_handle(streaming_aead.streaming_aead_key_templates.AES256_GCM_HKDF_1MB)
    return tink.json_proto_keyset_format.serialize(handle, secret_key_access.TOKEN)


def key_ids(path: Path) -> list[int]:
    return [key["keyId"] for key in json.loads(path.read_text())["key"]]


@pytest.fixture
def keyset_path(settings, tmp_path) -> Path:
    """A keyset path nothing has created yet, whatever other fixtures set up."""
    settings.FAILSAFE_KEYSET = ""
    settings.FAILSAFE_KEYSET_FILE = str(tmp_path / "fresh" / "failsafe.keyset")
    return Path(settings.FAILSAFE_KEYSET_FILE)


def test_ensure_keyset_file_creates_a_private_keyset(settings, tmp_path):
    settings.FAILSAFE_KEYSET_FILE = str(tmp_path / "etc" / "raos" / "failsafe.keyset")
    previous_umask = os.umask(0)  # a careless umask must not make the key world-readable
    try:
        created = keys.ensure_keyset_file()
    finally:
        os.umask(previous_umask)

    path = Path(settings.FAILSAFE_KEYSET_FILE)
    assert created == str(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert keys.primary_key_id() in key_ids(path)
    # Only the keyset itself is left in its directory.
    assert os.listdir(path.parent) == [path.name]


def test_ensure_keyset_file_is_idempotent(keyset_path):
    assert keys.ensure_keyset_file() == str(keyset_path)
    first = keyset_path.read_text()
    assert keys.ensure_keyset_file() is None
    assert keyset_path.read_text() == first


def test_no_keyset_is_a_clear_error(keyset_path):
    with pytest.raises(FailsafeError) as excinfo:
        keys.load_keyset_handle()
    assert str(excinfo.value) == keys.NO_KEYSET
    # Never only "run raos_bootstrap": with backups, a new keyset would orphan them all.
    assert "failsafe_keys import" in keys.NO_KEYSET
    with pytest.raises(FailsafeError, match="raos_bootstrap"):
        get_store().write(backup_id=str(uuid.uuid4()), meta={}, sections=[])
    assert not keyset_path.exists()


def test_unreadable_keyset_error_does_not_echo_the_file(keyset_path):
    keyset_path.parent.mkdir()
    keyset_path.write_text('{"primaryKeyId": 1, "key": "c2VjcmV0LW1hdGVyaWFs"}')
    with pytest.raises(FailsafeError) as excinfo:
        keys.streaming_aead()
    assert "not a valid Tink streaming AEAD keyset" in str(excinfo.value)
    assert "c2VjcmV0" not in str(excinfo.value)
    assert excinfo.value.__cause__ is None


def test_inline_keyset_works_without_a_file(settings, keyset_path):
    settings.FAILSAFE_KEYSET = new_keyset_json()
    inline_primary = json.loads(settings.FAILSAFE_KEYSET)["primaryKeyId"]

    assert keys.ensure_keyset_file() is None
    assert not keyset_path.exists()

    store = get_store()
    backup_id = str(uuid.uuid4())
    info = store.write(backup_id=backup_id, meta={}, sections=[Section(SPEC, iter([[1, "a"]]))])
    assert info.key_id == inline_primary
    assert store.verify(name=info.name, sha256=info.sha256, backup_id=backup_id) == {
        "accounts.user": 1
    }


def test_inline_keyset_is_not_rotated_here(settings, keyset_path):
    settings.FAILSAFE_KEYSET = new_keyset_json()
    with pytest.raises(FailsafeError, match="rotate it where it is kept"):
        keys.rotate_keyset()


def test_rotation_adds_a_primary_key_and_keeps_the_old_ones(keyset_path):
    keys.ensure_keyset_file()
    original = keys.primary_key_id()

    first_rotation = keys.rotate_keyset()
    assert keys.primary_key_id() == first_rotation != original
    second_rotation = keys.rotate_keyset()

    assert keys.primary_key_id() == second_rotation
    assert key_ids(keyset_path) == [original, first_rotation, second_rotation]
    assert keyset_path.stat().st_mode & 0o777 == 0o600
    leftovers = {p.name for p in keyset_path.parent.iterdir()} - {
        keyset_path.name,
        keyset_path.name + ".lock",
    }
    assert not any(name.startswith(".keyset-") for name in leftovers)


def test_rotation_without_a_keyset_is_refused(settings, tmp_path):
    settings.FAILSAFE_KEYSET_FILE = str(tmp_path / "not-created-yet" / "failsafe.keyset")
    with pytest.raises(FailsafeError, match="No failsafe keyset"):
        keys.rotate_keyset()
    assert not (tmp_path / "not-created-yet").exists()


def test_a_changed_keyset_setting_is_seen(settings, tmp_path, keyset_path):
    keys.ensure_keyset_file()
    first = keys.primary_key_id()
    other = tmp_path / "other.keyset"
    other.write_text(new_keyset_json())
    settings.FAILSAFE_KEYSET_FILE = str(other)
    assert keys.primary_key_id() == key_ids(other)[0] != first


def test_configured_audit_key_is_used(settings):
    settings.FAILSAFE_AUDIT_KEY = "chain-key-from-the-environment"
    assert keys.audit_key() == b"chain-key-from-the-environment"


def test_audit_key_is_derived_from_secret_key_when_unset(settings):
    settings.FAILSAFE_AUDIT_KEY = ""
    settings.SECRET_KEY = "first-secret-key-for-the-audit-test"
    derived = keys.audit_key()
    assert derived == keys.audit_key()
    assert len(derived) == 32
    assert settings.SECRET_KEY.encode() not in derived

    settings.SECRET_KEY = "second-secret-key-for-the-audit-test"
    assert keys.audit_key() != derived
