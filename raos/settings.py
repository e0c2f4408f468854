"""Project settings, read from the environment (and `.env`) with django-environ."""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Run `make run` (it writes one to .env) or export SECRET_KEY."
    )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_celery_beat",
    # /health/ (failsafe/monitoring.py): its templates and `manage.py health_check`.
    "health_check",
    "accounts",
    "licensing",
    "failsafe",
    # The project itself (raos_bootstrap); last, so the apps' commands resolve as before.
    "raos",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.ForcePasswordChangeMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "raos.urls"
WSGI_APPLICATION = "raos.wsgi.application"
ASGI_APPLICATION = "raos.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for a writer instead of failing at once with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("timeout", 30)
# The change journal (journal/): PostgreSQL row triggers record every change to the captured
# models, with the database role, the time and the Django user of the request; SQLite has no
# such triggers, so there the app is not installed at all.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    INSTALLED_APPS[INSTALLED_APPS.index("raos") : INSTALLED_APPS.index("raos")] = [
        "pgtrigger",
        "pghistory",
        "journal",
    ]
    MIDDLEWARE.insert(
        MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
        "journal.middleware.JournalMiddleware",
    )
    # The triggers live on other apps' tables (auth, accounts, licensing), so they are not
    # written into those apps' migrations: `migrate` installs them afterwards, every time
    # (journal/apps.py, where their tables exist).
    PGTRIGGER_MIGRATIONS = False
    # The moment of each change, not of its transaction's start.
    PGHISTORY_CREATED_AT_FUNCTION = "CLOCK_TIMESTAMP()"
    # Only requests that may write carry their user into the journal.
    PGHISTORY_MIDDLEWARE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

AUTH_USER_MODEL = "accounts.User"
# django-axes' check first: a locked-out login is refused before its password is tested.
AUTHENTICATION_BACKENDS = [
    "failsafe.logins.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve the admin's CSS and JS straight from the apps, so the admin is styled
# whatever DEBUG is and before any collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Production hardening, switched on from the environment (see .env.example).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# The client's address, for every door (failsafe.web.client_ip): REMOTE_ADDR, unless N
# reverse proxies that each append to X-Forwarded-For stand in front; then the Nth from the
# right. Behind a proxy, leaving it 0 makes every client share the proxy's address.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# Login lockouts at every login door (admin, site, API token), by django-axes: a username,
# or an address, with LOGIN_FAILURE_LIMIT failed logins is refused for LOGIN_COOLOFF_MINUTES
# after the last one, without its password being tested. Lifted by the cool-off or by
# manage.py failsafe_unlock --logins USERNAME; failures and lockouts are audited.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
if TRUSTED_PROXY_COUNT < 0 or AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME.total_seconds() < 60:
    raise ImproperlyConfigured(
        "TRUSTED_PROXY_COUNT must be 0 or more, LOGIN_FAILURE_LIMIT and LOGIN_COOLOFF_MINUTES "
        "1 or more."
    )
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "failsafe.web.client_ip"
AXES_LOCKOUT_CALLABLE = "failsafe.web.login_lockout_response"
# A lockout ends when its cool-off does: refused logins neither count nor extend it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# No axes pages in the admin: deleting an attempt there would unlock without an audit event.
AXES_ENABLE_ADMIN = False
# No table of successful logins (it would open a session for every API token login).
AXES_DISABLE_ACCESS_LOG = True

REST_FRAMEWORK = {
    # Tokens first, so an anonymous caller gets 401 with a WWW-Authenticate header.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "failsafe.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {"login": env.str("API_LOGIN_RATE", default="10/minute")},
    # Never the client's own X-Forwarded-For; the login throttle uses client_ip() itself.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env.int("API_TOKEN_TTL_HOURS", default=10)),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
API_SCHEMA_PUBLIC = env.bool("API_SCHEMA_PUBLIC", default=False)

SPECTACULAR_SETTINGS = {
    "TITLE": "RaOS Failsafe API",
    "DESCRIPTION": "Snapshots, comparison, investigation and restore of a RaOS server's data.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Signed-in users only, unless API_SCHEMA_PUBLIC (read per request) opens them.
    "SERVE_PERMISSIONS": ["failsafe.api.permissions.SchemaAccess"],
    # Swagger UI's files come from drf-spectacular-sidecar: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}

# Failsafe tunables; defaults live in failsafe/conf.py.
FAILSAFE = {}
FAILSAFE_KEYSET = env.str("FAILSAFE_KEYSET", default="")
FAILSAFE_KEYSET_FILE = env.str("FAILSAFE_KEYSET_FILE", default=str(VAR_DIR / "failsafe.keyset"))
FAILSAFE_AUDIT_KEY = env.str("FAILSAFE_AUDIT_KEY", default="")
FAILSAFE_CHUNK_KEY = env.str("FAILSAFE_CHUNK_KEY", default="")
FAILSAFE_BACKUP_DIR = env.str("FAILSAFE_BACKUP_DIR", default=str(VAR_DIR / "backups"))
# Replicas of the backup store: storage URLs (file://, s3://, sftp://), comma-separated;
# an entry may be named NAME=URL (see README "Storage and replicas").
FAILSAFE_REPLICAS = env.list("FAILSAFE_REPLICAS", default=[])

# --- Jobs (Celery) -----------------------------------------------------------------------
# The embedded default needs nothing installed: kombu's filesystem transport, its queue under
# var/celery/. CELERY_BROKER_URL=redis://127.0.0.1:6379/0 moves it to Redis (any number of
# workers). Schedules are django-celery-beat rows, edited in the admin.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_QUEUE_DIR = Path(env.str("CELERY_QUEUE_DIR", default=str(VAR_DIR / "celery")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_QUEUE_DIR / "queue"),
        "data_folder_out": str(CELERY_QUEUE_DIR / "queue"),
        "control_folder": str(CELERY_QUEUE_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
DJANGO_CELERY_BEAT_TZ_AWARE = True

# --- Telling someone ---------------------------------------------------------------------
# EMAIL_URL, e.g. smtp://user:pass@mail.example.com:587/?tls=True (django-environ); by default
# mail goes to the console, so nothing is lost silently on a fresh machine.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="raos-failsafe@localhost")
# Who else gets the failsafe's notifications (SuperAdmins with an address always do), and
# JSON webhooks, comma-separated; each request is signed with the HMAC key in
# FAILSAFE_NOTIFY_WEBHOOK_SECRET, read from the environment when a message is sent (README
# "Notifications"). FAILSAFE["NOTIFY_WEBHOOKS"] may also give each webhook its own key.
FAILSAFE["NOTIFY_EMAILS"] = env.list("FAILSAFE_NOTIFY_EMAILS", default=[])
FAILSAFE["NOTIFY_WEBHOOKS"] = [
    {"url": url, "secret_env": "FAILSAFE_NOTIFY_WEBHOOK_SECRET"}
    for url in env.list("FAILSAFE_NOTIFY_WEBHOOKS", default=[])
]
# /health/ and /metrics answer a request with this bearer token, or from these addresses
# (IPs or networks); with neither set they answer loopback only.
MONITORING_TOKEN = env.str("MONITORING_TOKEN", default="")
MONITORING_ALLOW = env.list("MONITORING_ALLOW", default=["127.0.0.1", "::1"])
