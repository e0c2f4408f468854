import pytest

FAST_USER_HASHERS = [
    # User passwords hash fast in tests; the server license's secrets stay argon2 because
    # licensing.services asks for argon2 by name.
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
]


@pytest.fixture(autouse=True)
def _fast_user_hashers(settings, tmp_path):
    settings.PASSWORD_HASHERS = FAST_USER_HASHERS
    settings.FAILSAFE_BACKUP_DIR = str(tmp_path / "backups")
    settings.FAILSAFE_KEYSET_FILE = str(tmp_path / "failsafe.keyset")
    settings.FAILSAFE_KEYSET = ""
    settings.FAILSAFE_AUDIT_KEY = "test-audit-key-not-in-the-database"
