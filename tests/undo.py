"""Two admins at work in the Django admin after a safe backup: for the tests of the
selective restore by actor and time (--undo-actor, --since) at every door."""

from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from failsafe import services
from tests.factories import FAILSAFE_PASSWORD, SuperAdminFactory, UserFactory

User = get_user_model()
SIGN_UPS = 5


def edit_user(client, username, **changes):
    user = User.objects.get(username=username)
    form = {
        "username": user.username,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": user.role,
        "is_active": "on",
        **changes,
    }
    reply = client.post(reverse("admin:accounts_user_change", args=[user.pk]), form)
    assert reply.status_code == 302, reply.content[:2000]


def delete_users(client, usernames):
    doomed = list(User.objects.filter(username__in=usernames).values_list("pk", flat=True))
    reply = client.post(
        reverse("admin:accounts_user_changelist"),
        {"action": "delete_selected", "_selected_action": doomed, "post": "yes"},
    )
    assert reply.status_code == 302
    assert not User.objects.filter(username__in=usernames).exists()


def two_admins_at_work(client, actor):
    """Two admins at work in the Django admin after a safe backup.

    Before T, mallory renames bob (first name "Robert"): before the window, so it stays.
    After T, mallory deletes dave and erin and promotes carol; alice, the other admin,
    changes bob's e-mail; then five people sign up.
    """
    mallory = SuperAdminFactory(username="mallory")
    alice = User.objects.get(username="alice")
    alice.role = Role.SUPERADMIN
    alice.save()
    safe = services.create_backup(actor=actor, reason="known good")
    services.mark_safe(actor=actor, backup_id=safe.pk, password=FAILSAFE_PASSWORD)

    client.force_login(mallory)
    edit_user(client, "bob", first_name="Robert")
    since = timezone.now()
    delete_users(client, ["dave", "erin"])
    edit_user(client, "carol", role=Role.SUPERADMIN)
    assert User.objects.get(username="carol").role == Role.SUPERADMIN

    client.force_login(alice)
    edit_user(client, "bob", email="bob@new.example.com")
    client.logout()
    for number in range(SIGN_UPS):
        UserFactory(username=f"signup{number:02d}")
    return safe, since
