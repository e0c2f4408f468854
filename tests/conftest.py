import pytest

from failsafe import services
from failsafe.models import AuditEvent
from licensing import services as licensing
from tests.factories import FAILSAFE_PASSWORD, LicenseFactory, SuperAdminFactory, UserFactory

# The real S3, SFTP and file servers of the replica tests, for any test that asks for them.
# The SMTP server and webhook endpoint of the notification tests.
from tests.receivers import mailbox, smtp_server, webhook_receiver  # noqa: F401
from tests.servers import (  # noqa: F401
    file_replica_url,
    s3,
    s3_replica_url,
    s3_server,
    sftp_replica_url,
    sftp_server,
)

FAST_USER_HASHERS = [
    # User passwords hash fast in tests; the server license's secrets stay argon2 because
    # licensing.services asks for argon2 by name, here at argon2's smallest cost.
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "tests.hashers.CheapArgon2PasswordHasher",
]


@pytest.fixture(autouse=True)
def _fast_user_hashers(settings, tmp_path):
    settings.PASSWORD_HASHERS = FAST_USER_HASHERS
    settings.FAILSAFE_BACKUP_DIR = str(tmp_path / "backups")
    settings.FAILSAFE_KEYSET_FILE = str(tmp_path / "failsafe.keyset")
    settings.FAILSAFE_KEYSET = ""
    settings.FAILSAFE_AUDIT_KEY = "test-audit-key-not-in-the-database"


@pytest.fixture
def keyset():
    """As raos_bootstrap does on a real server: an archive keyset exists before any backup."""
    from failsafe.keys import ensure_keyset_file

    ensure_keyset_file()


@pytest.fixture
def superadmin(db):
    return SuperAdminFactory(username="root")


@pytest.fixture
def actor(superadmin):
    """The SuperAdmin acting from the command line."""
    return services.Actor(user=superadmin, source=AuditEvent.Source.CLI)


@pytest.fixture
def passkey(db):
    return licensing.issue_passkey()


@pytest.fixture
def armed(superadmin, passkey):
    """A failsafe ready for use: passkey issued, failsafe password set."""
    licensing.set_failsafe_password(password=FAILSAFE_PASSWORD, user=superadmin)
    return passkey


@pytest.fixture
def population(db):
    """Five users besides the SuperAdmin 'root', four of them with a license."""
    users = [UserFactory(username=name) for name in ("alice", "bob", "carol", "dave", "erin")]
    licenses = [LicenseFactory(owner=users[i]) for i in range(4)]
    return users, licenses
