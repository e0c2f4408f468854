from django.contrib.auth.models import AbstractUser
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models


class Role(models.TextChoices):
    USER = "USER", "User"
    ADMIN = "ADMIN", "Admin"
    SUPERADMIN = "SUPERADMIN", "SuperAdmin"


class UserManager(DjangoUserManager):
    def create_superuser(self, username, email=None, password=None, **extra_fields):
        # `createsuperuser` passes the Django flags; the role is what decides them.
        extra_fields.pop("is_staff", None)
        extra_fields.pop("is_superuser", None)
        extra_fields["role"] = Role.SUPERADMIN
        return self._create_user(username, email, password, **extra_fields)


class User(AbstractUser):
    """A RaOS account. `role` is the one source of truth for Django's staff flags."""

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    must_change_password = models.BooleanField(
        default=False, help_text="Send the user to the password-change page before anything else."
    )

    objects = UserManager()

    def save(self, *args, **kwargs):
        self.sync_flags_from_role()
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and "role" in update_fields:
            kwargs["update_fields"] = {*update_fields, "is_staff", "is_superuser"}
        super().save(*args, **kwargs)

    def sync_flags_from_role(self):
        self.is_staff = self.role in (Role.ADMIN, Role.SUPERADMIN)
        self.is_superuser = self.role == Role.SUPERADMIN

    @property
    def is_superadmin(self) -> bool:
        return self.is_active and self.role == Role.SUPERADMIN
