"""/health/ and /metrics: what a monitor sees, and who may see it."""

import datetime
import logging
import math
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from knox.models import AuthToken
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from failsafe import schedules, services
from failsafe.exceptions import REFUSALS
from failsafe.models import AuditEvent, Backup, Drill, SecretAttemptCounter
from failsafe.render import seed

TOKEN = "probe-token-4c1e9a77d2"
OUTSIDE = "203.0.113.50"
ALLOWED_NETWORK_ADDRESS = "10.20.3.4"

LAST_BACKUP = "Failsafe(name='last_backup')"
LAST_DRILL = "Failsafe(name='last_drill')"
KEYSET = "Failsafe(name='keyset')"
AUDIT_CHAIN = "Failsafe(name='audit_chain')"
REPLICAS = "Failsafe(name='replicas')"
SCHEDULES = "Failsafe(name='schedules')"
DATABASE = "Database(alias='default')"


@pytest.fixture(autouse=True)
def _monitoring(settings):
    settings.MONITORING_TOKEN = TOKEN
    settings.MONITORING_ALLOW = ["127.0.0.1", "::1", "10.20.0.0/16", "not-an-address"]


def probe(path, *, address="127.0.0.1", authorization=None, **headers):
    if authorization is not None:
        headers["HTTP_AUTHORIZATION"] = authorization
    return Client(REMOTE_ADDR=address).get(path, **headers)


def ago(**delta) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(**delta)


def backup_at(actor, moment, *, reason="hourly") -> Backup:
    """A real scheduled backup, dated `moment`."""
    backup = services.create_backup(actor=actor, backup_type=Backup.Type.SCHEDULED, reason=reason)
    Backup.objects.filter(pk=backup.pk).update(created_at=moment, finished_at=moment)
    backup.refresh_from_db()
    return backup


def drill_of(backup, outcome, ended, *, error=""):
    return Drill.objects.create(
        backup=backup,
        backup_label=str(backup.id),
        started_at=ended - datetime.timedelta(minutes=2),
        finished_at=ended,
        outcome=outcome,
        rows_checked=7,
        error=error,
    )


@pytest.fixture
def scheduled(db):
    """The default schedules, as raos_bootstrap creates them: backups every hour."""
    schedules.ensure_defaults()
    assert schedules.scheduled_backup_interval() == datetime.timedelta(hours=1)


@pytest.fixture
def healthy(actor, scheduled):
    """A recent backup, proven restorable by a drill since."""
    backup = backup_at(actor, ago(minutes=10))
    drill_of(backup, Drill.Outcome.PASSED, ago(minutes=5))
    return backup


def failsafe_keys(body) -> set[str]:
    return {key for key in body if key.startswith("Failsafe(")}


# --- /health/ --------------------------------------------------------------------------


def test_health_is_200_json_when_every_check_passes(healthy):
    response = probe("/health/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body == {
        DATABASE: "OK",
        LAST_BACKUP: "OK",
        LAST_DRILL: "OK",
        KEYSET: "OK",
        AUDIT_CHAIN: "OK",
        REPLICAS: "OK",
        SCHEDULES: "OK",
    }
    assert "no-cache" in response["Cache-Control"]


def test_health_turns_503_when_a_failsafe_schedule_is_switched_off(actor, scheduled):
    services.create_backup(actor=actor, reason="fresh")
    PeriodicTask.objects.filter(task="failsafe.drift_watch").update(enabled=False)

    response = probe("/health/")

    assert response.status_code == 503
    assert response.json()[SCHEDULES] == (
        "Unavailable: Turned off or deleted: failsafe: drift watch; turn them on again in the "
        "admin (Periodic tasks) or run manage.py raos_bootstrap"
    )


def test_health_turns_503_when_the_last_backup_is_overdue(actor, scheduled):
    # Hourly backups, OVERDUE_FACTOR 2: a backup 3 hours old is overdue.
    backup = backup_at(actor, ago(hours=3))
    drill_of(backup, Drill.Outcome.PASSED, ago(minutes=5))

    response = probe("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body[LAST_BACKUP].startswith("Unavailable: No backup succeeded in 3 hours")
    assert "at most 2 hours is allowed" in body[LAST_BACKUP]
    assert {key: body[key] for key in failsafe_keys(body) - {LAST_BACKUP}} == {
        LAST_DRILL: "OK",
        KEYSET: "OK",
        AUDIT_CHAIN: "OK",
        REPLICAS: "OK",
        SCHEDULES: "OK",
    }

    # A new backup makes it healthy again.
    backup_at(actor, ago(minutes=1), reason="caught up")
    assert probe("/health/").status_code == 200


def test_without_a_backup_schedule_nothing_is_overdue(actor):
    backup = backup_at(actor, ago(days=1))
    drill_of(backup, Drill.Outcome.PASSED, ago(hours=1))

    assert probe("/health/").status_code == 200
    (check,) = services.health(checks=["last_backup"]).checks
    assert check.ok and "scheduled backups are off" in check.message


def test_a_failed_newest_drill_is_503_even_after_a_passing_one(healthy):
    drill_of(healthy, Drill.Outcome.FAILED, ago(minutes=1), error="accounts.user: 3 rows differ")

    response = probe("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body[LAST_DRILL].startswith(
        f"Unavailable: The last restore drill (of backup {healthy.id}"
    )
    assert body[LAST_DRILL].endswith("failed: accounts.user: 3 rows differ")
    assert body[LAST_BACKUP] == "OK"


def test_a_passing_drill_older_than_the_allowed_age_fails(actor, scheduled, settings):
    settings.FAILSAFE = {"DRILL_MAX_AGE_SECONDS": 24 * 60 * 60}
    backup = backup_at(actor, ago(minutes=10))
    drill_of(backup, Drill.Outcome.PASSED, ago(days=2))

    body = probe("/health/").json()

    assert body[LAST_DRILL].startswith("Unavailable: No restore drill passed in the last 1 day")
    assert "failsafe_drill runs one" in body[LAST_DRILL]


def test_no_drill_yet_fails_only_once_a_backup_had_time_to_be_drilled(actor, scheduled):
    # DRILL_MAX_AGE_SECONDS is 2 days: a day-old first backup is still within its grace.
    backup_at(actor, ago(days=1))
    backup_at(actor, ago(minutes=5), reason="latest")
    response = probe("/health/")
    assert response.status_code == 200
    (check,) = services.health(checks=["last_drill"]).checks
    assert check.ok and check.message.startswith("No restore drill yet; one must pass by")

    Backup.objects.filter(reason="hourly").update(created_at=ago(days=3))
    body = probe("/health/").json()
    assert body[LAST_DRILL].startswith("Unavailable: No backup was ever proven restorable")


def test_a_missing_keyset_fails_its_check(healthy):
    Path(django_settings.FAILSAFE_KEYSET_FILE).unlink()

    response = probe("/health/")

    assert response.status_code == 503
    body = response.json()
    assert body[KEYSET].startswith("Unavailable: No usable failsafe keyset, and 1 backup(s) need")
    assert body[LAST_BACKUP] == "OK"


def test_a_tampered_newest_audit_event_fails_the_chain_check(healthy):
    head = AuditEvent.objects.order_by("-seq").first()
    AuditEvent.objects.filter(seq=head.seq).update(details={"forged": True})

    body = probe("/health/").json()

    assert body[AUDIT_CHAIN] == (
        f"Unavailable: Event #{head.seq} was modified (hash mismatch); "
        "failsafe_audit --verify says more"
    )


def test_a_deleted_tail_of_the_audit_trail_fails_the_chain_check(healthy, actor):
    # The first backup's audit event is in the trail now: the next one records it as head.
    later = backup_at(actor, ago(minutes=1), reason="later")
    recorded = later.audit_head_seq
    assert recorded
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE seq >= %s", [recorded])  # noqa: S608

    body = probe("/health/").json()

    assert body[AUDIT_CHAIN].startswith(
        f"Unavailable: Chain truncated: backup {later.id} recorded head #{recorded}"
    )


def test_the_last_full_verification_is_reported(healthy, actor):
    services.verify_audit_chain(actor=actor)
    (check,) = services.health(checks=["audit_chain"]).checks
    assert check.ok
    assert "the whole chain was found intact" in check.message


def test_replicas_in_sync_pass_and_one_holding_nothing_fails(
    actor, scheduled, settings, file_replica_url, tmp_path
):
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    healthy_backup = backup_at(actor, ago(minutes=10))
    drill_of(healthy_backup, Drill.Outcome.PASSED, ago(minutes=5))
    assert probe("/health/").status_code == 200
    (check,) = services.health(checks=["replicas"]).checks
    assert check.message == "1 replica(s) hold a recent copy, none failing"

    cold = tmp_path / "cold-replica"
    cold.mkdir()
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}", f"cold=file://{cold}"]
    response = probe("/health/")

    assert response.status_code == 503
    assert response.json()[REPLICAS] == (
        "Unavailable: Replica cold holds none of the 1 backups it should hold"
    )


def test_probes_leave_no_audit_event(healthy):
    before = AuditEvent.objects.count()
    for _ in range(3):
        probe("/health/")
        probe("/metrics")
    assert AuditEvent.objects.count() == before


def test_health_speaks_the_packages_other_formats(actor, scheduled):
    backup_at(actor, ago(hours=3))

    text = probe("/health/?format=text")
    assert text.status_code == 503
    assert text["Content-Type"].startswith("text/plain")
    assert f"{LAST_BACKUP}: Unavailable: No backup succeeded in" in text.content.decode()

    page = probe("/health/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert page.status_code == 503
    assert page["Content-Type"].startswith("text/html")


def test_status_carries_the_health(actor, scheduled):
    backup = backup_at(actor, ago(hours=3))
    drill_of(backup, Drill.Outcome.PASSED, ago(minutes=5))
    _, token = AuthToken.objects.create(user=actor.user)
    client = APIClient(REMOTE_ADDR=OUTSIDE)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    body = client.get("/api/failsafe/status/").json()

    assert body["health"]["ok"] is False
    checks = {check["name"]: check for check in body["health"]["checks"]}
    assert list(checks) == list(services.HEALTH_CHECKS)
    assert checks["last_backup"]["ok"] is False
    assert checks["last_backup"]["message"].startswith("No backup succeeded in 3 hours")
    assert checks["last_drill"] == {
        "name": "last_drill",
        "ok": True,
        "message": checks["last_drill"]["message"],
    }
    assert body["system_status"]  # the existing fields are still there

    answer = seed.status(services.status(actor=actor))
    assert answer["Health"]["Ok"] is False
    assert [check["Name"] for check in answer["Health"]["Checks"]] == list(services.HEALTH_CHECKS)
    assert answer["Health"]["Checks"][0]["Message"] == checks["last_backup"]["message"]


# --- /metrics ---------------------------------------------------------------------------


def metric_families(response) -> dict:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        family.name: family
        for family in text_string_to_metric_families(response.content.decode("utf-8"))
    }


def value(family, **labels) -> float:
    (sample,) = [sample for sample in family.samples if sample.labels == labels]
    return sample.value


def test_metrics_carry_the_numbers(actor, settings, file_replica_url, tmp_path):
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}"]
    first = backup_at(actor, ago(hours=2), reason="first")
    Backup.objects.filter(pk=first.pk).update(is_safe=True)
    settings.FAILSAFE_REPLICAS = []  # the NAS is away when the second backup is taken
    second = backup_at(actor, ago(minutes=30), reason="second")
    cold = tmp_path / "cold-replica"
    cold.mkdir()
    settings.FAILSAFE_REPLICAS = [f"nas={file_replica_url}", f"cold=file://{cold}"]
    # Two backups fail for real (the backup folder is a file), and retention forgetting
    # their rows later does not lower the counter.
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    good_dir = settings.FAILSAFE_BACKUP_DIR
    settings.FAILSAFE_BACKUP_DIR = str(blocked)
    for _ in range(2):
        with pytest.raises(REFUSALS):
            services.create_backup(actor=actor, backup_type=Backup.Type.SCHEDULED)
    settings.FAILSAFE_BACKUP_DIR = good_dir
    Backup.objects.filter(status=Backup.Status.FAILED).delete()
    passed = drill_of(first, Drill.Outcome.PASSED, ago(hours=1))
    failed = drill_of(second, Drill.Outcome.FAILED, ago(minutes=10), error="rows differ")
    locked_until = timezone.now() + datetime.timedelta(minutes=10)
    for username, action in [("mallory", "failsafe.trigger"), ("mallory", "failsafe.restore")]:
        SecretAttemptCounter.objects.create(
            username=username, action=action, failures=5, locked_until=locked_until
        )
    SecretAttemptCounter.objects.create(
        username="trudy", action="failsafe.trigger", failures=5, locked_until=locked_until
    )
    SecretAttemptCounter.objects.create(  # a lockout that is over counts no more
        username="oscar", action="failsafe.trigger", failures=5, locked_until=ago(minutes=1)
    )

    families = metric_families(probe("/metrics"))

    def single(name):
        return value(families[name])

    assert single("raos_failsafe_last_backup_timestamp_seconds") == second.created_at.timestamp()
    assert single("raos_failsafe_last_safe_backup_timestamp_seconds") == (
        first.created_at.timestamp()
    )
    assert families["raos_failsafe_backup_failures"].type == "counter"
    assert value(families["raos_failsafe_backup_failures"]) == 2
    assert families["raos_failsafe_backup_failures"].samples[0].name == (
        "raos_failsafe_backup_failures_total"
    )
    assert value(families["raos_failsafe_backups"], type="SCHEDULED") == 2
    assert value(families["raos_failsafe_backups"], type="EMERGENCY") == 0
    assert single("raos_failsafe_last_drill_success") == 0
    assert single("raos_failsafe_last_drill_timestamp_seconds") == failed.finished_at.timestamp()
    assert single("raos_failsafe_last_verified_restore_timestamp_seconds") == (
        passed.finished_at.timestamp()
    )
    assert single("raos_failsafe_lockouts") == 2

    lag = families["raos_failsafe_replica_lag_seconds"]
    # The NAS holds the first backup only: it trails the newest by the 90 minutes between.
    assert value(lag, replica="nas") == pytest.approx(
        (second.created_at - first.created_at).total_seconds()
    )
    assert value(lag, replica="cold") == math.inf
    behind = families["raos_failsafe_replica_behind_backups"]
    assert (value(behind, replica="nas"), value(behind, replica="cold")) == (1, 2)

    checks = families["raos_failsafe_health_check"]
    assert value(checks, check="last_drill") == 0
    assert value(checks, check="replicas") == 0
    assert value(checks, check="keyset") == 1
    assert single("raos_failsafe_healthy") == 0


def test_metrics_of_a_fresh_install_are_zeros(db):
    families = metric_families(probe("/metrics"))

    assert value(families["raos_failsafe_last_backup_timestamp_seconds"]) == 0
    assert value(families["raos_failsafe_last_drill_success"]) == 0
    assert value(families["raos_failsafe_backup_failures"]) == 0
    assert families["raos_failsafe_replica_lag_seconds"].samples == []


def test_a_passing_newest_drill_is_a_success(healthy):
    families = metric_families(probe("/metrics"))

    assert value(families["raos_failsafe_last_drill_success"]) == 1
    assert value(families["raos_failsafe_healthy"]) == 1


def test_metrics_speak_openmetrics_when_asked(healthy):
    response = probe("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


def test_metrics_answer_only_reads(healthy):
    response = Client().post("/metrics")
    assert response.status_code == 405


# --- who may ask ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health/", "/metrics"])
def test_a_stranger_without_the_token_is_refused(healthy, path):
    response = probe(path, address=OUTSIDE)

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "Forbidden: send Authorization: Bearer <MONITORING_TOKEN>, or ask from an "
        "address in MONITORING_ALLOW"
    }


@pytest.mark.parametrize("path", ["/health/", "/metrics"])
def test_the_token_opens_both_from_anywhere(healthy, path, caplog):
    caplog.set_level(logging.DEBUG)
    answers = [
        probe(path, address=OUTSIDE, authorization=f"Bearer {TOKEN}"),
        probe(path, address=OUTSIDE, authorization=f"bearer  {TOKEN} "),
        probe(path, address=OUTSIDE, authorization=f"Bearer {TOKEN}x"),
        probe(path, address=OUTSIDE, authorization=f"Bearer {TOKEN[:-1]}"),
        probe(path, address=OUTSIDE, authorization=f"Token {TOKEN}"),
        probe(path, address=OUTSIDE, authorization="Bearer "),
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 403, 403, 403, 403]
    for answer in answers:
        assert TOKEN not in answer.content.decode()
        assert TOKEN[:-1] not in answer.content.decode()
    assert TOKEN[:-1] not in caplog.text
    assert not AuditEvent.objects.filter(details__icontains=TOKEN[:-1]).exists()


def test_an_empty_token_setting_opens_nothing(healthy, settings):
    settings.MONITORING_TOKEN = ""

    assert probe("/metrics", address=OUTSIDE, authorization="Bearer ").status_code == 403
    assert probe("/metrics", address=OUTSIDE, authorization="Bearer  x").status_code == 403


def test_allowed_networks_and_addresses(healthy):
    assert probe("/metrics", address=ALLOWED_NETWORK_ADDRESS).status_code == 200
    assert probe("/health/", address="::1").status_code == 200
    assert probe("/health/", address="::ffff:127.0.0.1").status_code == 200
    assert probe("/health/", address="10.21.0.1").status_code == 403


def test_the_address_is_decided_as_every_door_decides_it(healthy, settings):
    # Without trusted proxies, X-Forwarded-For is whatever the client wrote.
    spoofed = probe("/metrics", address=OUTSIDE, HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert spoofed.status_code == 403

    # Behind one trusted proxy, the proxy's last entry is the client.
    settings.TRUSTED_PROXY_COUNT = 1
    proxied = probe(
        "/metrics", address="192.0.2.1", HTTP_X_FORWARDED_FOR=f"1.2.3.4, {ALLOWED_NETWORK_ADDRESS}"
    )
    assert proxied.status_code == 200
    stranger = probe(
        "/metrics",
        address="127.0.0.1",
        HTTP_X_FORWARDED_FOR=f"{ALLOWED_NETWORK_ADDRESS}, {OUTSIDE}",
    )
    assert stranger.status_code == 403
