"""An emergency trigger after an attack, whose investigation has something in every part:
issues and changes, modified records with a secret column, SuperAdmins named, and who did
what (audit events and admin log entries). For the tests of stored investigations."""

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType

from accounts.models import Role
from failsafe import services
from licensing.models import License
from tests.factories import FAILSAFE_PASSWORD, UserFactory

User = get_user_model()


def attacked_trigger(actor, passkey) -> services.TriggerResult:
    """A safe backup of the population (conftest's), then the seed's attack, then a trigger."""
    for number in range(5):
        UserFactory(username=f"staff{number}")
    safe = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)

    mallory = User.objects.get(username="carol")
    User.objects.filter(username__in=["dave", "erin"]).delete()
    mallory.role = Role.SUPERADMIN
    mallory.save()
    for user in User.objects.filter(username__startswith="staff"):
        user.set_password(f"taken over {user.username}")
        user.save()
    License.objects.exclude(owner=None).update(status=License.Status.REVOKED)
    LogEntry.objects.create(
        user=mallory,
        content_type=ContentType.objects.get_for_model(User),
        object_id=str(mallory.pk),
        object_repr=mallory.username,
        action_flag=CHANGE,
        change_message="Changed role.",
    )
    return services.trigger(actor=actor, passkey=passkey, reason="the seed's attack")
