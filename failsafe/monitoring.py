"""/health/ and /metrics: the doors a monitor (a load balancer, Prometheus) probes.

/health/ is django-health-check's view with the database check and one check per failsafe
health check (services.HEALTH_CHECKS): 200 when all pass, 503 when one fails, in the
package's formats; JSON unless the client asks for another (a browser's Accept asks for
HTML, `?format=text` for text). /metrics is the Prometheus text format (or OpenMetrics,
when asked), from a registry built for each request out of services.metrics(): nothing is
counted in this process, so every worker answers the same.

Both answer a request carrying `Authorization: Bearer <MONITORING_TOKEN>`, or coming from
an address in MONITORING_ALLOW (by failsafe.web.client_ip, as every door decides the
address); anything else gets 403. The token is compared in constant time and never logged,
echoed or written to the audit trail; a probe writes no audit event at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_safe
from health_check.base import HealthCheck
from health_check.checks import Database
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from . import services
from .exceptions import REFUSALS, one_line
from .web import client_ip

logger = logging.getLogger(__name__)

REFUSED = (
    "Forbidden: send Authorization: Bearer <MONITORING_TOKEN>, or ask from an address in "
    "MONITORING_ALLOW"
)


# --- who may ask -----------------------------------------------------------------------


def refusal(request) -> JsonResponse | None:
    """403 with one line, unless the request carries the token or comes from an allowed
    address; None when it may be answered."""
    if _token_matches(request) or _address_allowed(client_ip(request)):
        return None
    return JsonResponse({"detail": REFUSED}, status=403)


def _token_matches(request) -> bool:
    expected = getattr(settings, "MONITORING_TOKEN", "") or ""
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not offered.strip():
        return False
    # Digests of both: the comparison takes the same time whatever the lengths.
    return hmac.compare_digest(
        hashlib.sha256(offered.strip().encode("utf-8")).digest(),
        hashlib.sha256(expected.encode("utf-8")).digest(),
    )


def _address_allowed(address: str | None) -> bool:
    if not address:
        return False
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    candidates = [client]
    if client.version == 6 and client.ipv4_mapped is not None:
        candidates.append(client.ipv4_mapped)  # ::ffff:127.0.0.1 is 127.0.0.1
    for entry in getattr(settings, "MONITORING_ALLOW", None) or []:
        entry = str(entry).strip()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            logger.warning("MONITORING_ALLOW entry %r is not an address or network", entry[:60])
            continue
        if any(candidate in network for candidate in candidates):
            return True
    return False


# --- /health/ --------------------------------------------------------------------------


@dataclasses.dataclass
class Failsafe(HealthCheck):
    """One of the failsafe's health checks, by its name (services.HEALTH_CHECKS); its
    repr, `Failsafe(name='last_backup')`, is its key in the JSON."""

    name: str

    async def run(self):
        # Thread-sensitive: the check reads the database on the request's own connection.
        report = await sync_to_async(services.health)(checks=[self.name])
        (check,) = report.checks
        if not check.ok:
            raise ServiceUnavailable(check.message)


class HealthView(HealthCheckView):
    checks = (
        Database,
        *((Failsafe, {"name": name}) for name in services.HEALTH_CHECKS),
    )

    async def dispatch(self, request, *args, **kwargs):
        refused = refusal(request)
        if refused is not None:
            return refused
        return await super().dispatch(request, *args, **kwargs)

    async def get(self, request, *args, **kwargs):
        if "format" not in request.GET and _accepts_anything(request):
            # JSON for a monitor that names no format (curl, probes send */* or nothing).
            request.GET = request.GET.copy()
            request.GET["format"] = "json"
        response = await super().get(request, *args, **kwargs)
        if response.status_code == 500:
            # The package answers a failed check with 500; a monitor reads 503 as "this
            # service is unavailable", not "this page crashed".
            response.status_code = 503
        return response


def _accepts_anything(request) -> bool:
    accept = request.headers.get("Accept", "").replace(" ", "")
    return accept in ("", "*/*")


# --- /metrics --------------------------------------------------------------------------


@require_safe
def metrics(request):
    refused = refusal(request)
    if refused is not None:
        return refused
    try:
        data = services.metrics()
    except REFUSALS as exc:
        return JsonResponse({"detail": one_line(exc)}, status=503)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FailsafeCollector(data))
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(registry), content_type=content_type)
    add_never_cache_headers(response)
    return response


def _timestamp(moment) -> float:
    """Seconds since the epoch; 0 when there is no such moment yet (so `time() - x` is
    huge and an age alert fires, as it should)."""
    return moment.timestamp() if moment is not None else 0.0


@dataclasses.dataclass(eq=False)  # a registry keys its collectors by identity
class FailsafeCollector:
    """The metric families of one services.MetricsData."""

    data: services.MetricsData

    def collect(self):
        data = self.data
        yield GaugeMetricFamily(
            "raos_failsafe_last_backup_timestamp_seconds",
            "When the newest complete backup (not a pre-restore one) was taken; 0: none.",
            value=_timestamp(data.last_backup_at),
        )
        yield GaugeMetricFamily(
            "raos_failsafe_last_safe_backup_timestamp_seconds",
            "When the newest safe backup was taken; 0: none.",
            value=_timestamp(data.last_safe_backup_at),
        )
        backups = GaugeMetricFamily(
            "raos_failsafe_backups", "Complete backups, per type.", labels=["type"]
        )
        for backup_type, count in sorted(data.backups.items()):
            backups.add_metric([backup_type], count)
        yield backups
        yield CounterMetricFamily(
            "raos_failsafe_backup_failures",
            "Backups that failed (their rows; retention forgetting one lowers it).",
            value=data.backup_failures,
        )
        yield GaugeMetricFamily(
            "raos_failsafe_last_drill_success",
            "1 when the newest finished restore drill passed, else 0 (also: no drill yet).",
            value=1 if data.last_drill_passed else 0,
        )
        yield GaugeMetricFamily(
            "raos_failsafe_last_drill_timestamp_seconds",
            "When the newest finished restore drill ended; 0: none.",
            value=_timestamp(data.last_drill_at),
        )
        yield GaugeMetricFamily(
            "raos_failsafe_last_verified_restore_timestamp_seconds",
            "When the drill that proved the last proven restorable backup ended; 0: none.",
            value=_timestamp(data.last_verified_restore_at),
        )
        yield GaugeMetricFamily(
            "raos_failsafe_lockouts",
            "Accounts locked out now after wrong passkeys or failsafe passwords.",
            value=data.locked_accounts,
        )
        lag = GaugeMetricFamily(
            "raos_failsafe_replica_lag_seconds",
            "Seconds between the newest backup and the replica's newest copy; +Inf when "
            "it holds none while backups exist.",
            labels=["replica"],
        )
        behind = GaugeMetricFamily(
            "raos_failsafe_replica_behind_backups",
            "Complete backups the replica does not hold (pending or failed).",
            labels=["replica"],
        )
        failed = GaugeMetricFamily(
            "raos_failsafe_replica_failed_backups",
            "Backups whose copy to the replica failed.",
            labels=["replica"],
        )
        for replica in data.replicas:
            lag.add_metric([replica.name], replica.lag_seconds)
            behind.add_metric([replica.name], replica.behind)
            failed.add_metric([replica.name], replica.failed)
        yield from (lag, behind, failed)
        checks = GaugeMetricFamily(
            "raos_failsafe_health_check",
            "1 when the /health/ check passes, else 0.",
            labels=["check"],
        )
        for check in data.health.checks:
            checks.add_metric([check.name], 1 if check.ok else 0)
        yield checks
        yield GaugeMetricFamily(
            "raos_failsafe_healthy",
            "1 when every failsafe health check passes, else 0.",
            value=1 if data.health.ok else 0,
        )
