"""The settings a deployment relies on, read from raos/settings.py itself.

conftest.py overrides some of them in django.conf.settings, so these tests read the module
(or run it afresh with a chosen environment) instead.
"""

import os
import runpy
import secrets
import subprocess
import sys
from pathlib import Path

import raos.settings

BASE_DIR = Path(raos.settings.__file__).resolve().parent.parent
SETTINGS_FILE = BASE_DIR / "raos" / "settings.py"


def _settings_with(monkeypatch, **environ):
    for name, value in environ.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_argon2_hashes_passwords_first():
    assert raos.settings.PASSWORD_HASHERS[0] == ("django.contrib.auth.hashers.Argon2PasswordHasher")


def test_djangos_password_validators_are_on():
    validators = raos.settings.AUTH_PASSWORD_VALIDATORS
    names = {validator["NAME"].rsplit(".", 1)[-1] for validator in validators}
    assert {"MinimumLengthValidator", "CommonPasswordValidator"} <= names


def test_the_default_database_is_sqlite_under_var(monkeypatch):
    database = _settings_with(monkeypatch, DATABASE_URL=None)["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(database["NAME"]) == BASE_DIR / "var" / "db.sqlite3"


def test_a_postgres_url_selects_postgresql_unchanged(monkeypatch):
    url = "postgres://raos:pw@db.example.com:5433/raos"
    database = _settings_with(monkeypatch, DATABASE_URL=url)["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["HOST"], database["PORT"]) == (
        "raos",
        "db.example.com",
        5433,
    )


def test_deploy_checks_pass_with_production_values():
    production = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "FAILSAFE_AUDIT_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "example.com",
        "SECURE_SSL_REDIRECT": "true",
        "SESSION_COOKIE_SECURE": "true",
        "CSRF_COOKIE_SECURE": "true",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "SECURE_HSTS_PRELOAD": "true",
    }
    completed = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env={**os.environ, **production},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "no issues" in completed.stdout


def test_the_embedded_sqlite_database_is_readable_by_its_owner_only(tmp_path):
    database = tmp_path / "db.sqlite3"
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "SECRET_KEY": secrets.token_urlsafe(50),
    }
    # Under a permissive umask, as a service manager may start it.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; os.umask(0o022); "
            "from django.core.management import execute_from_command_line as run; "
            "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'raos.settings'); "
            "run(['manage.py', 'migrate', '--noinput'])",
        ],
        cwd=BASE_DIR,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert database.stat().st_mode & 0o777 == 0o600


def test_make_test_says_what_to_install_when_chromium_is_missing_and_it_cannot():
    """Without Chromium and without root, `make test` stops with one line, never skips."""
    if os.geteuid() != 0:
        command = ["make", "--no-print-directory", "browser", "CHROMIUM=/nonexistent/chromium"]
    else:
        # As root it would install Chromium: run it as nobody to see the refusal.
        command = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "make",
            "--no-print-directory",
            "browser",
            "CHROMIUM=/nonexistent/chromium",
        ]
    done = subprocess.run(command, cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "make test needs Chromium" in done.stderr
    assert "apt-get install -y chromium" in done.stderr
