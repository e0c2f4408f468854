"""The drift watch: the live data against the last safe backup, by itself, telling someone."""

import datetime
import os
import socket
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from failsafe import anomaly, services, tasks
from failsafe.exceptions import NotSuperAdmin, OperationInProgress
from failsafe.investigate import Investigation
from failsafe.models import AuditEvent, Backup, Notification, OperationLock, WatchRun
from failsafe.snapshot import iso
from tests.factories import FAILSAFE_PASSWORD, UserFactory

User = get_user_model()
pytestmark = pytest.mark.django_db

SYSTEM = services.Actor.system()


@pytest.fixture
def safe(actor, armed, population):
    """Twelve more users, and a safe backup of them all."""
    for number in range(12):
        UserFactory(username=f"extra{number:02d}")
    backup = services.create_backup(actor=actor, reason="known good")
    return services.mark_safe(actor=actor, backup_id=backup.pk, password=FAILSAFE_PASSWORD)


def secrets_of(passkey) -> list[str]:
    """What must never appear in a message: the passkey, the failsafe password, and every
    password hash (of the users still there and of those deleted)."""
    return [passkey, FAILSAFE_PASSWORD, *User.objects.values_list("password", flat=True)]


def emergency_backups() -> int:
    return Backup.objects.filter(type=Backup.Type.EMERGENCY).count()


def test_a_bulk_deletion_takes_an_emergency_backup_and_mails_the_issue(
    safe, armed, mailbox, webhook_receiver, settings
):
    settings.FAILSAFE = {**settings.FAILSAFE, "NOTIFY_WEBHOOKS": [webhook_receiver.url]}
    secrets = secrets_of(armed)
    User.objects.filter(username__startswith="extra").delete()

    result = services.watch_drift(actor=SYSTEM)

    backup = result.emergency_backup
    assert "User count decreased: 18 -> 6" in result.new_issues
    assert backup.type == Backup.Type.EMERGENCY and backup.is_complete
    assert backup.reason == f"drift watch: {result.new_issues[0]}"
    assert backup.created_by_username == "system"
    # The investigation is kept with the backup, readable from a fresh row.
    kept = Investigation.from_data(Backup.objects.get(pk=backup.pk).investigation)
    assert kept == result.investigation
    assert "User count decreased: 18 -> 6" in kept.comparison.issues
    assert kept.last_safe_backup == str(safe.id)

    (message,) = mailbox
    assert message.envelope_rcpt_tos == ["root@example.com"]
    assert message["Subject"] == f"[RaOS Failsafe] Drift watch: {result.new_issues[0]}"
    body = message.get_content()
    assert f"Emergency backup: {backup.id}" in body
    assert "  - User count decreased: 18 -> 6" in body
    assert f"RECOMMENDED: Restore from last safe backup (ID: {safe.id})" in body
    assert f"manage.py failsafe_investigation {backup.id}" in body
    (hook,) = webhook_receiver.requests
    for secret in secrets:
        assert secret not in message.as_string()
        assert secret not in hook.body.decode()

    run = WatchRun.objects.get()
    assert run.emergency_backup_id == backup.id
    assert run.new_issues == result.new_issues and run.error == ""
    assert run.baseline_backup_id == safe.id
    event = AuditEvent.objects.filter(action="failsafe.watch").get()
    assert (event.outcome, event.source, event.actor_username) == ("SUCCESS", "system", "system")
    assert event.details["emergency_backup"] == str(backup.id)
    assert result.summary.startswith(
        f"Drift watch: {len(result.new_issues)} new issue"
    ) and result.summary.endswith(f"; emergency backup {backup.id} taken")

    # The same issues a quarter of an hour later: seen, so no backup and no message.
    line = tasks.drift_watch()

    assert emergency_backups() == 1
    assert len(mailbox) == 1 and len(webhook_receiver.requests) == 1
    assert WatchRun.objects.count() == 2
    latest = WatchRun.objects.latest()
    assert latest.new_issues == [] and latest.issues == run.issues
    assert latest.emergency_backup is None
    assert run.issues == ["User count decreased: 18 -> 6"]
    assert line == f"Drift watch: 1 issue against safe backup {safe.id}, none new"


def test_a_new_issue_after_a_seen_one_takes_another_emergency_backup(safe, mailbox):
    User.objects.filter(username__in=["extra00", "extra01"]).delete()
    first = services.watch_drift(actor=SYSTEM)
    User.objects.filter(username="extra02").delete()

    second = services.watch_drift(actor=SYSTEM)

    assert second.new_issues[0] == "User count decreased: 18 -> 15"
    assert second.emergency_backup.pk != first.emergency_backup.pk
    assert emergency_backups() == 2
    assert len(mailbox) == 2


def test_a_clean_watch_records_the_run_and_tells_nobody(safe, mailbox):
    result = services.watch_drift(actor=SYSTEM)

    assert result.issues == [] and result.emergency_backup is None
    assert result.summary == f"Drift watch: no issues against safe backup {safe.id}"
    assert mailbox == []
    assert emergency_backups() == 0
    assert WatchRun.objects.get().issues == []


def test_without_a_safe_backup_the_watch_records_it_and_says_so_once(actor, population, mailbox):
    UserFactory(username="frank")
    first = services.watch_drift(actor=SYSTEM)

    assert not first.has_safe_backup
    assert first.summary.startswith("Drift watch: no safe backup to compare the live data with")
    run = WatchRun.objects.get()
    assert run.baseline_backup_id is None and run.issues == []
    (message,) = mailbox
    assert "no safe backup" in message["Subject"]
    assert "manage.py failsafe_marksafe" in message.get_content()

    services.watch_drift(actor=SYSTEM)

    assert len(mailbox) == 1
    assert Notification.objects.count() == 1
    assert Backup.objects.count() == 0
    assert WatchRun.objects.count() == 2


def test_an_anomaly_alone_notifies_as_an_anomaly(safe, mailbox):
    # Twelve quiet hours of scheduled backups, then one that recorded 40 users removed.
    now = timezone.now()

    def scheduled(at, removed):
        Backup.objects.create(
            type=Backup.Type.SCHEDULED,
            status=Backup.Status.COMPLETE,
            created_at=at,
            change_counts={
                "accounts.user": {"added": 2, "removed": removed, "modified": 1},
                anomaly.SINCE: iso(at - datetime.timedelta(hours=1)),
                anomaly.PREVIOUS: str(uuid.uuid4()),
            },
        )

    for hours_ago, removed in enumerate([0, 1, 0, 2, 0, 1, 0, 0, 2, 1, 0, 1], start=2):
        scheduled(now - datetime.timedelta(hours=hours_ago), removed)
    scheduled(now - datetime.timedelta(hours=1), 40)

    result = services.watch_drift(actor=SYSTEM)

    text = "40 users removed in the last hour; usually 0-2"
    assert result.anomalies == [text] and result.new_anomalies == [text]
    assert result.issues == [] and result.emergency_backup is None
    (message,) = mailbox
    assert message["Subject"] == f"[RaOS Failsafe] Unusual change volume: {text}"
    assert f"  - {text}" in message.get_content()
    assert Notification.objects.get().event == "anomaly"
    assert WatchRun.objects.get().anomalies == [text]

    again = services.watch_drift(actor=SYSTEM)

    assert again.anomalies == [text] and again.new_anomalies == []
    assert len(mailbox) == 1


def test_an_emergency_backup_that_cannot_be_taken_is_still_told_and_tried_again(safe, mailbox):
    User.objects.filter(username__startswith="extra").delete()
    # Another process holds the operation lock (a restore, say).
    OperationLock.objects.update_or_create(
        name="failsafe",
        defaults={
            "holder": "restore by someone",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "acquired_at": timezone.now(),
        },
    )

    with pytest.raises(OperationInProgress):
        services.watch_drift(actor=SYSTEM)

    assert emergency_backups() == 0
    failed = WatchRun.objects.get()
    assert failed.error.startswith("Another failsafe operation is running: restore by someone")
    (message,) = mailbox
    assert "No emergency backup could be taken: Another failsafe operation" in (
        message.get_content()
    )
    assert AuditEvent.objects.get(action="failsafe.watch").outcome == "FAILED"

    OperationLock.objects.filter(name="failsafe").update(
        holder="", host="", pid=None, acquired_at=None
    )
    retried = services.watch_drift(actor=SYSTEM)

    assert retried.emergency_backup is not None  # the failed run's issues were not "seen"
    assert len(mailbox) == 2


def test_the_watch_is_for_the_system_and_superadmins_only(safe, actor):
    plain = services.Actor(user=UserFactory(username="mallory"), source=AuditEvent.Source.API)

    with pytest.raises(NotSuperAdmin):
        services.watch_drift(actor=plain)

    assert WatchRun.objects.count() == 0
    event = AuditEvent.objects.get(action="failsafe.watch")
    assert (event.outcome, event.actor_username) == ("DENIED", "mallory")
    assert services.watch_drift(actor=actor).has_safe_backup  # a SuperAdmin may run it too
