"""Anomaly detection: the change counts scheduled backups record, and the rule over them."""

import datetime
import logging
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts.models import Role
from failsafe import anomaly, archives, services
from failsafe.models import Backup
from failsafe.services.backups import take_backup
from failsafe.snapshot import iso
from licensing.models import License
from tests.factories import UserFactory

User = get_user_model()
pytestmark = pytest.mark.django_db

HOUR = datetime.timedelta(hours=1)
USERS = "accounts.user"


def scheduled(at: datetime.datetime, interval: datetime.timedelta, counts: dict) -> Backup:
    """A scheduled backup as the rule sees one: its row, with change counts built directly."""
    return Backup.objects.create(
        type=Backup.Type.SCHEDULED,
        status=Backup.Status.COMPLETE,
        created_at=at,
        change_counts={
            **counts,
            anomaly.SINCE: iso(at - interval),
            anomaly.PREVIOUS: str(uuid.uuid4()),
        },
    )


def history(series: list[dict], *, interval=HOUR, newest: dict, newest_interval=None) -> Backup:
    """One scheduled backup per entry of `series` (oldest first, each covering `interval`),
    then the newest one with `newest` counts; returns the newest."""
    now = timezone.now()
    newest_interval = newest_interval or interval
    start = now - newest_interval - interval * len(series)
    for number, counts in enumerate(series, start=1):
        scheduled(start + interval * number, interval, counts)
    return scheduled(now, newest_interval, newest)


def users(**counts) -> dict:
    return {USERS: {"added": 0, "removed": 0, "modified": 0, **counts}}


# Twelve hours of a site's usual churn: a few sign-ups, now and then a deletion.
USUAL_REMOVED = [0, 1, 0, 2, 0, 1, 0, 0, 2, 1, 0, 1]
USUAL_ADDED = [3, 5, 4, 6, 2, 4, 5, 3, 4, 6, 5, 4]


def usual_hours() -> list[dict]:
    return [
        users(added=added, removed=removed)
        for added, removed in zip(USUAL_ADDED, USUAL_REMOVED, strict=True)
    ]


def test_a_spike_of_deleted_users_is_an_anomaly_named_in_plain_words():
    history(usual_hours(), newest=users(added=5, removed=40))

    found = anomaly.detect()

    assert [(a.label, a.kind, a.count) for a in found] == [(USERS, "removed", 40)]
    assert found[0].text == "40 users removed in the last hour; usually 0-2"
    assert found[0].history == 12


def test_the_usual_churn_stays_quiet():
    history(usual_hours(), newest=users(added=6, removed=2))
    assert anomaly.detect() == []


def test_a_busy_model_alarms_only_far_above_its_own_spread():
    # About a hundred sign-ups an hour (median 100, MAD 4.5): 120 is within five MADs.
    busy = [100, 95, 105, 100, 110, 90, 100, 96, 104, 100, 95, 105]
    series = [users(added=count) for count in busy]
    history(series, newest=users(added=120))
    assert anomaly.detect() == []

    Backup.objects.all().delete()
    history(series, newest=users(added=140))
    (found,) = anomaly.detect()
    assert found.text == "140 users added in the last hour; usually 95-105"


def test_the_floor_keeps_a_quiet_model_from_alarming_at_its_first_few_changes():
    # Nothing ever changes (MAD 0): ten changes are within the floor, eleven are not.
    quiet = [users() for _ in range(12)]
    history(quiet, newest=users(modified=10))
    assert anomaly.detect() == []

    Backup.objects.all().delete()
    history(quiet, newest=users(modified=11))
    assert [a.text for a in anomaly.detect()] == ["11 users modified in the last hour; usually 0"]


def test_role_and_password_hash_changes_are_named_as_such():
    series = [{USERS: {"role_changes": 0, "password_changes": 1}} for _ in range(8)]
    history(series, newest={USERS: {"role_changes": 12, "password_changes": 30}})
    assert [a.text for a in anomaly.detect()] == [
        "12 users changed role in the last hour; usually 0",
        "30 users had their password hashes changed in the last hour; usually 1",
    ]


def test_too_little_history_says_nothing(settings):
    history(usual_hours()[:5], newest=users(removed=40))
    assert anomaly.detect() == []  # ANOMALY_MIN_HISTORY is 6

    settings.FAILSAFE = {**settings.FAILSAFE, "ANOMALY_MIN_HISTORY": 5}
    assert len(anomaly.detect()) == 1


def test_only_the_last_anomaly_history_intervals_count(settings):
    # A long-past busy period, then a quiet recent history: only the recent one counts.
    now = timezone.now()
    for hours_ago in range(40, 20, -1):
        scheduled(now - HOUR * hours_ago, HOUR, users(removed=50))
    for hours_ago in range(12, 0, -1):
        scheduled(now - HOUR * hours_ago, HOUR, users(removed=0))
    scheduled(now, HOUR, users(removed=40))
    settings.FAILSAFE = {**settings.FAILSAFE, "ANOMALY_HISTORY": 12}
    assert [a.text for a in anomaly.detect()] == ["40 users removed in the last hour; usually 0"]

    settings.FAILSAFE = {**settings.FAILSAFE, "ANOMALY_HISTORY": 48}
    assert anomaly.detect() == []  # with the busy days in it, 40 is usual


def test_counts_over_intervals_of_other_lengths_are_compared_per_hour():
    # Daily backups used to add about 24 users a day: one an hour. Twenty in the last hour
    # is unusual, though fewer than any earlier day's count.
    daily = [users(added=count) for count in (24, 22, 26, 24, 25, 23, 24)]
    history(daily, interval=HOUR * 24, newest=users(added=20), newest_interval=HOUR)
    (found,) = anomaly.detect()
    assert found.text == "20 users added in the last hour; usually 0.9-1.1"

    Backup.objects.all().delete()
    history(daily, interval=HOUR * 24, newest=users(added=2), newest_interval=HOUR)
    assert anomaly.detect() == []


def test_backups_without_counts_are_skipped_not_taken_for_quiet_intervals():
    newest = history(usual_hours()[:6], newest=users(removed=40))
    # Scheduled backups whose counting failed (or the very first one) have none.
    for hours_ago in (20, 21, 22):
        Backup.objects.create(
            type=Backup.Type.SCHEDULED,
            status=Backup.Status.COMPLETE,
            created_at=timezone.now() - HOUR * hours_ago,
        )
    (found,) = anomaly.detect()
    assert found.history == 6
    assert anomaly.detect(newest) == [found]


# --- the counts a real scheduled backup records ------------------------------------------


def scheduled_backup(actor) -> Backup:
    """A backup as the schedule takes it (as the system), read back as stored."""
    backup = services.scheduled_backup(actor=services.Actor.system())
    assert backup.type == Backup.Type.SCHEDULED
    return Backup.objects.get(pk=backup.pk)


def test_a_scheduled_backup_records_what_changed_since_the_previous_backup(actor, population):
    first = scheduled_backup(actor)
    assert first.change_counts == {}  # nothing before it to count from

    User.objects.filter(username__in=["dave", "erin"]).delete()  # dave's license loses its owner
    for name in ("frank", "grace", "heidi"):
        UserFactory(username=name)
    alice = User.objects.get(username="alice")
    alice.role = Role.ADMIN
    alice.save()
    bob = User.objects.get(username="bob")
    bob.set_password("a new password for bob")
    bob.save()
    carol = User.objects.get(username="carol")
    carol.role = Role.ADMIN
    carol.set_password("a new password for carol")
    carol.save()
    License.objects.filter(owner=alice).update(status=License.Status.REVOKED)

    second = scheduled_backup(actor)

    counts = second.change_counts
    assert counts[USERS] == {
        "added": 3,
        "removed": 2,
        "modified": 3,
        "role_changes": 2,
        "password_changes": 2,
    }
    assert counts["licensing.license"] == {"added": 0, "removed": 0, "modified": 2}
    assert counts["_previous"] == str(first.id)
    assert counts["_since"] == iso(first.created_at)


def test_counts_run_from_the_previous_backup_of_any_type_but_pre_restore(actor, population):
    first = scheduled_backup(actor)
    UserFactory(username="frank")
    manual = services.create_backup(actor=actor)
    assert Backup.objects.get(pk=manual.pk).change_counts == {}  # only scheduled ones count
    UserFactory(username="grace")
    second = scheduled_backup(actor)
    assert second.change_counts["_previous"] == str(manual.id)
    assert second.change_counts[USERS]["added"] == 1

    take_backup(actor=actor, backup_type=Backup.Type.PRE_RESTORE, reason="before a restore")
    UserFactory(username="heidi")
    third = scheduled_backup(actor)
    assert third.change_counts["_previous"] == str(second.id)
    assert third.change_counts[USERS]["added"] == 1
    assert first.change_counts == {}


def test_a_counting_failure_never_fails_the_backup(actor, population, caplog):
    first = scheduled_backup(actor)
    archives.delete(first)  # the previous archive cannot be read any more
    UserFactory(username="frank")

    with caplog.at_level(logging.WARNING, logger="failsafe.services.change_counts"):
        second = scheduled_backup(actor)

    assert second.status == Backup.Status.COMPLETE
    assert second.change_counts == {}
    (line,) = [r.getMessage() for r in caplog.records if "Change counts" in r.getMessage()]
    assert line.startswith(f"Change counts of backup {second.id} not recorded: ")
