"""Telling someone: e-mail to a real SMTP server and signed webhooks to a real HTTP receiver.

Every event is checked as it arrives at the receivers: what it says, that its signature
verifies, that no secret is in it, that a repeat within the hour is held back, and that a
channel failing is recorded while the operation it reports on still succeeds.
"""

import datetime
import errno
import hashlib
import hmac
import io
import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import FileSystemStorage
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from failsafe import notify, schedules, services, tasks
from failsafe.exceptions import LockedOut, NotSuperAdmin, ServerFailure
from failsafe.models import AuditEvent, Backup, Notification
from licensing.exceptions import InvalidFailsafePassword, InvalidPasskey
from licensing.models import ServerLicense
from tests.factories import FAILSAFE_PASSWORD, AdminFactory
from tests.helpers import run
from tests.servers import free_port

User = get_user_model()

HOOK_SECRET_ENV = "RAOS_TEST_WEBHOOK_SECRET"
HOOK_SECRET = "webhook-hmac-key-for-the-tests"


@pytest.fixture
def channels(settings, mailbox, webhook_receiver, monkeypatch):
    """Both channels on: e-mail to the SuperAdmins (root@example.com) and one signed webhook."""
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    settings.FAILSAFE = {
        **settings.FAILSAFE,
        "NOTIFY_WEBHOOKS": [{"url": webhook_receiver.url, "secret_env": HOOK_SECRET_ENV}],
    }
    return mailbox, webhook_receiver


def verified_payload(request) -> dict:
    """The webhook body, after checking its signature as a receiver would."""
    timestamp = request.headers["X-RaOS-Timestamp"]
    expected = hmac.new(
        HOOK_SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(request.headers["X-RaOS-Signature"], f"sha256={expected}")
    return json.loads(request.body)


def mail_text(message) -> str:
    return message.as_string()


@pytest.fixture
def safe_baseline(actor, armed, population):
    backup = services.create_backup(actor=actor, reason="known good")
    return services.mark_safe(actor=actor, backup_id=backup.pk, password=FAILSAFE_PASSWORD)


# --- a person's emergency trigger ------------------------------------------------------


def test_a_trigger_mails_the_issues_and_signs_a_webhook_without_any_secret(
    actor, armed, safe_baseline, channels
):
    mailbox, receiver = channels
    passkey = armed
    User.objects.filter(username__in=["dave", "erin"]).delete()

    result = services.trigger(
        actor=actor, passkey=passkey, reason=f"users vanished; pasted by mistake: {passkey}"
    )

    assert len(mailbox) == 1
    mail = mailbox[0]
    assert mail.envelope_rcpt_tos == ["root@example.com"]
    assert mail["Subject"] == "[RaOS Failsafe] Emergency trigger by root: 1 issue found"
    body = mail.get_content()
    assert "User count decreased: 6 -> 4" in body
    assert f"Emergency backup: {result.backup.id}" in body
    assert f"Last safe backup: {safe_baseline.id}" in body
    assert "First recommendation: RECOMMENDED: Restore from last safe backup" in body
    assert "Reason: users vanished; pasted by mistake: [redacted]" in body

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.headers["X-RaOS-Event"] == "emergency"
    payload = verified_payload(request)
    assert payload["event"] == "emergency"
    assert payload["data"]["backup_id"] == str(result.backup.id)
    assert payload["data"]["issues"] == ["User count decreased: 6 -> 4"]
    assert payload["data"]["triggered_by"] == "root"

    server_license = ServerLicense.objects.get()
    secrets = [
        passkey,
        FAILSAFE_PASSWORD,
        User.objects.get(username="root").password,
        server_license.passkey_hash,
        server_license.failsafe_password_hash,
        HOOK_SECRET,
    ]
    stored = Notification.objects.get(event="emergency")
    for secret in secrets:
        assert secret and secret not in mail_text(mail)
        assert secret not in request.body.decode()
        assert secret not in stored.body + stored.subject + json.dumps(stored.deliveries)
    assert stored.outcome == Notification.Outcome.SENT


def test_the_same_event_within_the_hour_is_sent_once_then_again_after_it(superadmin, channels):
    mailbox, receiver = channels
    first = notify.send(event="anomaly", subject="40 users removed", lines=["usually 0-2"])
    second = notify.send(event="anomaly", subject="40 users removed", lines=["usually 0-2"])

    assert first.outcome == Notification.Outcome.SENT
    assert second.outcome == Notification.Outcome.SUPPRESSED and second.deliveries == []
    assert (len(mailbox), len(receiver.requests)) == (1, 1)

    Notification.objects.filter(pk=first.pk).update(
        created_at=timezone.now() - datetime.timedelta(hours=1, minutes=1)
    )
    third = notify.send(event="anomaly", subject="40 users removed", lines=["usually 0-2"])
    assert third.outcome == Notification.Outcome.SENT
    assert (len(mailbox), len(receiver.requests)) == (2, 2)


def test_failing_channels_are_recorded_and_the_trigger_still_succeeds(
    actor, armed, safe_baseline, channels, settings
):
    _mailbox, receiver = channels
    receiver.status = 500
    settings.EMAIL_PORT = free_port()  # nothing listens there

    result = services.trigger(actor=actor, passkey=armed, reason="check")

    assert Backup.objects.get(pk=result.backup.pk).status == Backup.Status.COMPLETE
    assert AuditEvent.objects.filter(action="failsafe.trigger").last().outcome == "SUCCESS"
    stored = Notification.objects.get(event="emergency")
    assert stored.outcome == Notification.Outcome.FAILED
    by_channel = {delivery["channel"]: delivery for delivery in stored.deliveries}
    assert by_channel["webhook"]["ok"] is False
    assert by_channel["webhook"]["error"] == "HTTP 500"
    assert by_channel["email"]["ok"] is False
    assert "ConnectionRefusedError" in by_channel["email"]["error"]
    assert len(receiver.requests) == 1  # it was tried


def test_one_channel_failing_is_a_partial_delivery(superadmin, channels):
    mailbox, receiver = channels
    receiver.status = 503

    sent = notify.send(event="anomaly", subject="spike", lines=["x"])

    assert sent.outcome == Notification.Outcome.PARTIAL
    assert len(mailbox) == 1
    assert notify.undelivered(sent) == [f"webhook {receiver.url}: HTTP 503"]


def test_a_broken_webhook_setting_is_a_failed_delivery_not_an_error(superadmin, settings, mailbox):
    settings.FAILSAFE = {
        **settings.FAILSAFE,
        "NOTIFY_WEBHOOKS": [{"secret_env": "X"}, "ftp://files.example.com/hook", "http://[::1"],
    }

    sent = notify.send(event="anomaly", subject="spike\r\nBcc: someone@example.com", lines=["x"])

    assert sent.outcome == Notification.Outcome.PARTIAL
    errors = [delivery["error"] for delivery in sent.deliveries if not delivery["ok"]]
    assert errors == [
        'NOTIFY_WEBHOOKS entry 1 is neither a URL nor {"url": ..., "secret_env": ...}',
        "not an http:// or https:// URL",
        "a malformed URL",
    ]
    # A line break cannot add a header.
    assert mailbox[0]["Subject"] == "[RaOS Failsafe] spike Bcc: someone@example.com"
    assert mailbox[0]["Bcc"] is None


# --- a failed backup, a restore -----------------------------------------------------------


class ReadOnlyStorage(FileSystemStorage):
    """A backup directory that can no longer be written (a remounted read-only disk)."""

    def save(self, name, content, max_length=None):
        raise OSError(errno.EROFS, "Read-only file system", name)


def test_a_failed_backup_notifies_with_its_one_line_error(actor, population, channels, settings):
    mailbox, receiver = channels
    settings.STORAGES = {
        **settings.STORAGES,
        "failsafe": {
            "BACKEND": f"{__name__}.ReadOnlyStorage",
            "OPTIONS": {"location": settings.FAILSAFE_BACKUP_DIR},
        },
    }

    with pytest.raises(ServerFailure, match="Read-only file system"):
        services.create_backup(actor=actor, reason="nightly")

    failed = Backup.objects.get(status=Backup.Status.FAILED)
    assert len(mailbox) == 1
    assert mailbox[0]["Subject"].startswith(
        "[RaOS Failsafe] Manual backup failed: OSError: [Errno 30] Read-only file system"
    )
    body = mailbox[0].get_content()
    assert f"The manual backup {failed.id} started by root" in body
    assert "Read-only file system" in body
    payload = verified_payload(receiver.requests[0])
    assert payload["event"] == "backup_failed"
    assert payload["data"]["backup_id"] == str(failed.id)


def test_a_restore_notifies_who_restored_what(actor, armed, safe_baseline, channels):
    mailbox, receiver = channels
    User.objects.filter(username="erin").delete()

    result = services.restore(actor=actor, backup_id=safe_baseline.pk, password=FAILSAFE_PASSWORD)

    restored = [m for m in mailbox if "restored by root" in m["Subject"]]
    assert len(restored) == 1
    body = restored[0].get_content()
    assert f"root (cli) restored backup {safe_baseline.id}" in body
    assert "accounts.user: 1 added, 0 changed, 0 removed" in body
    assert f"kept in backup {result.pre_restore_backup.id}" in body
    payload = verified_payload(
        next(r for r in receiver.requests if r.headers["X-RaOS-Event"] == "restore")
    )
    assert payload["data"]["changes"]["accounts.user"]["added"] == 1
    assert FAILSAFE_PASSWORD not in restored[0].as_string()


# --- lockouts ---------------------------------------------------------------------------


def test_a_failsafe_secret_lockout_notifies_once_without_the_attempts(actor, armed, channels):
    mailbox, receiver = channels
    guesses = [f"wrong-passkey-guess-{n}" for n in range(1, 7)]

    for guess in guesses[:4]:
        with pytest.raises(InvalidPasskey):
            services.trigger(actor=actor, passkey=guess)
    assert mailbox == []
    with pytest.raises(InvalidPasskey):
        services.trigger(actor=actor, passkey=guesses[4])
    with pytest.raises(LockedOut):
        services.trigger(actor=actor, passkey=guesses[5])
    with pytest.raises(LockedOut):
        services.trigger(actor=actor, passkey=armed)

    assert len(mailbox) == 1
    assert mailbox[0]["Subject"] == (
        "[RaOS Failsafe] failsafe.trigger locked for root after 5 wrong secrets"
    )
    assert "failsafe_unlock --account root" in mailbox[0].get_content()
    payload = verified_payload(receiver.requests[0])
    assert (payload["event"], payload["data"]["account"]) == ("lockout", "root")
    assert Notification.objects.filter(event="lockout").count() == 1
    for secret in [*guesses, armed]:
        assert (
            secret not in mailbox[0].as_string()
            and secret not in receiver.requests[0].body.decode()
        )


def test_a_failsafe_password_lockout_names_its_action(actor, armed, population, channels):
    mailbox, _receiver = channels
    backup = services.create_backup(actor=actor)
    for n in range(5):
        with pytest.raises(InvalidFailsafePassword):
            services.mark_safe(actor=actor, backup_id=backup.pk, password=f"not-it-{n}")

    assert [m["Subject"] for m in mailbox] == [
        "[RaOS Failsafe] failsafe.marksafe locked for root after 5 wrong secrets"
    ]


# --- the overdue check -------------------------------------------------------------------


def test_the_overdue_check_notifies_once_and_is_quiet_after_a_backup(actor, channels):
    mailbox, receiver = channels
    schedules.ensure_defaults()  # hourly scheduled backups: overdue after 2 hours

    first = services.check_overdue(actor=services.Actor.system())
    assert first.overdue is not None
    assert first.summary.startswith(
        "Backups are overdue: No backup has ever succeeded; backups are due every 60 minutes"
    )
    assert first.summary.endswith("notifications: 1 sent")
    assert len(mailbox) == 1 and mailbox[0]["Subject"] == "[RaOS Failsafe] Backups are overdue"
    assert verified_payload(receiver.requests[0])["event"] == "backup_overdue"

    again = services.check_overdue(actor=services.Actor.system())
    assert again.summary.endswith("notifications: 1 held back as repeats within the hour")
    assert len(mailbox) == 1

    backup = services.create_backup(actor=actor, reason="finally")
    quiet = services.check_overdue(actor=services.Actor.system())
    assert quiet.overdue is None and quiet.notifications == []
    assert quiet.summary == "Backups are on time"
    assert len(mailbox) == 1

    # Three hours without a new one is overdue again (the hour since the last message
    # has passed too).
    three_hours_ago = timezone.now() - datetime.timedelta(hours=3)
    Backup.objects.filter(pk=backup.pk).update(
        created_at=three_hours_ago, finished_at=three_hours_ago
    )
    Notification.objects.update(created_at=three_hours_ago)
    late = services.check_overdue(actor=services.Actor.system())
    assert "No backup succeeded in 3 hours" in late.summary
    assert len(mailbox) == 2
    event = AuditEvent.objects.filter(action="failsafe.overdue").last()
    assert (event.outcome, event.actor_username, event.details["overdue"]) == (
        "SUCCESS",
        "system",
        True,
    )


def test_without_a_schedule_nothing_is_overdue(superadmin, channels):
    mailbox, _receiver = channels
    result = services.check_overdue(actor=services.Actor.system())
    assert result.summary == "No scheduled backup is on, so backups cannot be overdue"
    assert mailbox == []


def test_turning_every_backup_schedule_off_is_itself_an_alarm(actor, channels):
    """Whoever can edit the schedules (a stolen SuperAdmin session) cannot silence backups
    by disabling them: the overdue check says so, even right after a good backup."""
    mailbox, receiver = channels
    schedules.ensure_defaults()
    services.create_backup(actor=actor, reason="fresh")
    PeriodicTask.objects.filter(task=schedules.SCHEDULED_BACKUP_TASK).update(enabled=False)

    result = services.check_overdue(actor=services.Actor.system())

    assert result.summary.startswith("Backups are overdue: Scheduled backups are turned off")
    assert len(mailbox) == 1 and "turned off" in mailbox[0].get_content()
    assert verified_payload(receiver.requests[0])["event"] == "backup_overdue"


def test_the_overdue_task_prints_the_summary(superadmin, channels):
    schedules.ensure_defaults()
    assert tasks.overdue().startswith("Backups are overdue: No backup has ever succeeded")


def test_the_overdue_check_is_for_superadmins_and_the_system(superadmin, channels):
    with pytest.raises(NotSuperAdmin, match="SuperAdmin only"):
        services.check_overdue(actor=services.Actor(user=AdminFactory()))
    with pytest.raises(NotSuperAdmin, match="SuperAdmin only"):
        services.send_test_notification(actor=services.Actor.system())
    assert Notification.objects.count() == 0


def test_a_failing_replica_notifies_once(actor, population, channels, settings, tmp_path):
    mailbox, receiver = channels
    settings.FAILSAFE_REPLICAS = [f"usb=file://{tmp_path / 'not-mounted'}"]
    services.create_backup(actor=actor)

    result = services.check_overdue(actor=services.Actor.system())
    assert [alarm.replica for alarm in result.replicas] == ["usb"]
    assert result.replicas[0].message.startswith(
        "Replica usb is failing: 1 backup failed to replicate (latest reason:"
    )
    assert [m["Subject"] for m in mailbox] == ["[RaOS Failsafe] Replica usb needs attention"]
    assert verified_payload(receiver.requests[0])["data"]["replica"] == "usb"

    services.check_overdue(actor=services.Actor.system())
    assert len(mailbox) == 1


def test_a_lagging_replica_notifies(actor, population, channels, settings, file_replica_url):
    mailbox, _receiver = channels
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    old = services.create_backup(actor=actor)
    three_hours_ago = timezone.now() - datetime.timedelta(hours=3)
    Backup.objects.filter(pk=old.pk).update(created_at=three_hours_ago)
    # The replica is unplugged while the next backup is taken, so it lacks that one.
    settings.FAILSAFE_REPLICAS = []
    services.create_backup(actor=actor)
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]

    result = services.check_overdue(actor=services.Actor.system())
    assert [alarm.message for alarm in result.replicas] == [
        "Replica nas is lagging: 1 backups behind, its newest copy 3.0 hours older than the "
        "newest backup"
    ]
    assert [m["Subject"] for m in mailbox] == ["[RaOS Failsafe] Replica nas needs attention"]


def test_an_up_to_date_replica_is_quiet(actor, population, channels, settings, file_replica_url):
    mailbox, _receiver = channels
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    services.create_backup(actor=actor)

    result = services.check_overdue(actor=services.Actor.system())
    assert result.replicas == []
    assert (
        result.summary
        == "No scheduled backup is on, so backups cannot be overdue; all 1 replicas are in sync"
    )
    assert mailbox == []


# --- the test message -------------------------------------------------------------------


def test_a_test_notification_goes_to_every_channel_even_twice(actor, channels):
    mailbox, receiver = channels
    first = services.send_test_notification(actor=actor)
    second = services.send_test_notification(actor=actor)

    assert first.outcome == second.outcome == Notification.Outcome.SENT
    assert len(mailbox) == 2 and len(receiver.requests) == 2
    assert mailbox[0]["Subject"] == "[RaOS Failsafe] Test notification from root"
    assert verified_payload(receiver.requests[1])["event"] == "test"
    event = AuditEvent.objects.filter(action="failsafe.notify.test").last()
    assert event.outcome == "SUCCESS" and event.details["outcome"] == "SENT"


def test_channels_are_described_without_credentials_or_secrets(db, settings, monkeypatch):
    monkeypatch.setenv(HOOK_SECRET_ENV, HOOK_SECRET)
    settings.FAILSAFE = {
        **settings.FAILSAFE,
        "NOTIFY_EMAILS": ["ops@example.com", "ops@example.com"],
        "NOTIFY_WEBHOOKS": [
            {
                "url": "https://user:pw@hooks.example.com/raos?token=abc",
                "secret_env": HOOK_SECRET_ENV,
            },
            {"url": "https://chat.example.com/in", "secret_env": "RAOS_UNSET_SECRET"},
        ],
    }

    described = notify.channels()

    assert [(c.kind, c.to, c.signed) for c in described] == [
        ("email", "ops@example.com", False),
        ("webhook", "https://hooks.example.com/raos", True),
        ("webhook", "https://chat.example.com/in", False),
    ]
    assert described[2].note == "unsigned: the environment variable RAOS_UNSET_SECRET is not set"
    assert "pw" not in repr(described) and "abc" not in repr(described)
    assert HOOK_SECRET not in repr(described)


# --- manage.py failsafe_notify ----------------------------------------------------------


def test_failsafe_notify_test_sends_to_both_channels_and_exits_zero(superadmin, channels):
    mailbox, receiver = channels

    output = run("failsafe_notify", "--test")

    assert output.splitlines() == [
        "email root@example.com: sent",
        f"webhook {receiver.url}: sent",
        "Test notification sent to every channel",
    ]
    assert len(mailbox) == 1 and len(receiver.requests) == 1
    verified_payload(receiver.requests[0])


def test_failsafe_notify_test_json(superadmin, channels):
    payload = json.loads(run("failsafe_notify", "--test", "--json"))

    assert payload["Success"] is True and payload["Problems"] == []
    assert payload["Notification"]["Event"] == "test"
    assert [d["Channel"] for d in payload["Notification"]["Deliveries"]] == ["email", "webhook"]
    assert all(d["Ok"] for d in payload["Notification"]["Deliveries"])


def test_failsafe_notify_test_without_a_channel_exits_non_zero_saying_how(superadmin, settings):
    User.objects.filter(pk=superadmin.pk).update(email="")

    with pytest.raises(CommandError) as refused:
        run("failsafe_notify", "--test")

    assert str(refused.value) == notify.HOW_TO_CONFIGURE
    assert "FAILSAFE_NOTIFY_WEBHOOKS" in str(refused.value)
    assert Notification.objects.get().outcome == Notification.Outcome.NO_CHANNEL


def test_failsafe_notify_test_with_a_failing_channel_exits_non_zero(superadmin, channels):
    _mailbox, receiver = channels
    receiver.status = 500
    out = io.StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("failsafe_notify", "--test", stdout=out)

    assert str(refused.value) == f"webhook {receiver.url}: HTTP 500"
    assert f"webhook {receiver.url}: FAILED: HTTP 500" in out.getvalue()
    assert "email root@example.com: sent" in out.getvalue()


def test_failsafe_notify_test_says_mail_only_went_to_the_console(superadmin, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="written to the server's console"):
        call_command("failsafe_notify", "--test", "--json", stdout=out, stderr=err)

    # The mail itself went to stderr: stdout is only the JSON.
    payload = json.loads(out.getvalue())
    assert payload["Success"] is False
    assert payload["Problems"] == [
        "email root@example.com: not sent: written to the server's console (EMAIL_URL)"
    ]


def test_failsafe_notify_lists_the_channels_without_their_secret(superadmin, channels):
    _mailbox, receiver = channels

    output = run("failsafe_notify")

    assert output.splitlines() == [
        "e-mail to root@example.com",
        f"webhook {receiver.url} (signed)",
    ]
    assert HOOK_SECRET not in output and Notification.objects.count() == 0


def test_failsafe_help_lists_failsafe_notify(superadmin):
    assert "failsafe_notify [--test]" in run("failsafe_help")


def test_the_readme_receiver_example_verifies_a_real_webhook(superadmin, channels):
    _mailbox, receiver = channels
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = readme.split("A receiver checks the signature", 1)[1]
    code = example.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(code, namespace)  # noqa: S102 - the README's own example, run as a reader would
    notify.send(event="anomaly", subject="spike", lines=["x"])
    request = receiver.requests[0]

    assert namespace["verified"](request.headers, request.body, HOOK_SECRET.encode())
    assert not namespace["verified"](request.headers, request.body + b" ", HOOK_SECRET.encode())
    assert not namespace["verified"](request.headers, request.body, b"another key")


def test_a_replica_holding_nothing_notifies(
    actor, population, channels, settings, file_replica_url
):
    mailbox, _receiver = channels
    services.create_backup(actor=actor)
    services.create_backup(actor=actor)
    # A replica added afterwards holds none of them until failsafe_replicate copies them.
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]

    result = services.check_overdue(actor=services.Actor.system())

    assert [alarm.message for alarm in result.replicas] == [
        "Replica nas holds none of the 2 backups it should hold"
    ]
    assert len(mailbox) == 1
    services.replicate(actor=actor)
    assert services.check_overdue(actor=services.Actor.system()).replicas == []
