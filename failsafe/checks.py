"""System checks of the failsafe's deployment, run by `manage.py check --deploy`."""

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.utils.crypto import constant_time_compare

from . import keys
from .exceptions import FailsafeError

W001_AUDIT_KEY = Warning(
    "FAILSAFE_AUDIT_KEY is not set apart from SECRET_KEY, so the audit chain's key comes "
    "from SECRET_KEY: whoever learns SECRET_KEY and can write the database can re-sign "
    "the audit trail.",
    hint=(
        "Set FAILSAFE_AUDIT_KEY to its own random value (python -c 'import secrets; "
        "print(secrets.token_urlsafe(50))'), kept where SECRET_KEY is not. Set it at "
        "installation: events already written under the old key would verify as modified."
    ),
    id="failsafe.W001",
)


def _imported_audit_key() -> bool:
    """Whether `failsafe_keys import` installed the audit key (then it is not SECRET_KEY's)."""
    try:
        return keys.audit_key_source().startswith("imported")
    except FailsafeError:
        return False  # an unreadable key file: the key falls back to SECRET_KEY's


@register(Tags.security, deploy=True)
def audit_key_set_apart(app_configs, **kwargs):
    """Warns when the audit key is SECRET_KEY's: unset (and not imported), or the very same
    value."""
    audit_key = getattr(settings, "FAILSAFE_AUDIT_KEY", "") or ""
    if audit_key:
        same = constant_time_compare(audit_key, settings.SECRET_KEY)
        return [W001_AUDIT_KEY] if same else []
    return [] if _imported_audit_key() else [W001_AUDIT_KEY]
