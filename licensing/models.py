import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

# License keys and the server passkey: no 0/O, 1/I, so a key read aloud or typed is unambiguous.
KEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def generate_license_key() -> str:
    groups = ("".join(secrets.choice(KEY_ALPHABET) for _ in range(5)) for _ in range(4))
    return "LIC-" + "-".join(groups)


class License(models.Model):
    class Type(models.TextChoices):
        TRIAL = "TRIAL", "Trial"
        STANDARD = "STANDARD", "Standard"
        PROFESSIONAL = "PROFESSIONAL", "Professional"
        ENTERPRISE = "ENTERPRISE", "Enterprise"

    class Status(models.TextChoices):
        ACTIVE = "ACTIVE", "Active"
        SUSPENDED = "SUSPENDED", "Suspended"
        REVOKED = "REVOKED", "Revoked"
        EXPIRED = "EXPIRED", "Expired"

    key = models.CharField(max_length=32, unique=True, default=generate_license_key, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="licenses",
    )
    license_type = models.CharField(max_length=16, choices=Type.choices, default=Type.STANDARD)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    max_users = models.PositiveIntegerField(default=1)
    issued_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    instance_name = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self):
        return self.key


class ServerLicense(models.Model):
    """The one row that holds the server's secrets, as argon2 hashes only."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    passkey_hash = models.CharField(max_length=256, blank=True)
    passkey_set_at = models.DateTimeField(null=True, blank=True)
    failsafe_password_hash = models.CharField(max_length=256, blank=True)
    failsafe_password_set_at = models.DateTimeField(null=True, blank=True)
    failsafe_password_set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # The SuperAdmin who acts at the command line when several exist (an attacker may have
    # created the second one): recorded by the first run's bootstrap.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="server_license_singleton"),
        ]

    def __str__(self):
        return "Server license"

    def __repr__(self):
        # Keep the hashes out of tracebacks and debug output.
        return f"<ServerLicense passkey={'set' if self.passkey_hash else 'not set'}>"

    @property
    def passkey_is_set(self) -> bool:
        return bool(self.passkey_hash)

    @property
    def failsafe_password_is_set(self) -> bool:
        return bool(self.failsafe_password_hash)
