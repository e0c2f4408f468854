"""Telling someone: one event to every channel (e-mail, signed JSON webhooks), once an hour.

`send` never raises: a channel that fails is recorded on the event's `Notification` row (and
logged), because the failure being reported must not be hidden by the report's own failure.
Messages carry what happened and what to do, never a secret: callers pass words, and every
line goes through `snapshot.printable` and the secret-key redaction of `json_safe`.

Webhooks get `{"event", "subject", "lines", "data", "sent_at", "server"}` as JSON with
`X-RaOS-Event`, `X-RaOS-Timestamp` and `X-RaOS-Signature: sha256=<hex>`, the HMAC-SHA256 of
`<timestamp>.<body>` under the webhook's secret (an environment variable the setting names).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.utils import timezone

from accounts.models import Role

from .conf import setting
from .models import Notification
from .snapshot import json_safe, printable

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-RaOS-Signature"
TIMESTAMP_HEADER = "X-RaOS-Timestamp"
EVENT_HEADER = "X-RaOS-Event"
SUBJECT_PREFIX = "[RaOS Failsafe] "


@dataclass(frozen=True)
class Webhook:
    url: str
    # The name of the environment variable that holds the HMAC key ("" : unsigned).
    secret_env: str = ""

    @property
    def secret(self) -> bytes:
        return os.environ.get(self.secret_env, "").encode() if self.secret_env else b""


def email_recipients() -> list[str]:
    """SuperAdmins with an address, then FAILSAFE["NOTIFY_EMAILS"], each once."""
    User = get_user_model()
    addresses = list(
        User.objects.filter(role=Role.SUPERADMIN, is_active=True)
        .exclude(email="")
        .order_by("username")
        .values_list("email", flat=True)
    )
    addresses += list(setting("NOTIFY_EMAILS") or [])
    return list(dict.fromkeys(a.strip() for a in addresses if a and a.strip()))


def webhooks() -> list[Webhook]:
    hooks = []
    for entry in setting("NOTIFY_WEBHOOKS") or []:
        if isinstance(entry, str):
            hooks.append(Webhook(url=entry))
        else:
            hooks.append(Webhook(url=entry["url"], secret_env=entry.get("secret_env", "")))
    return hooks


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def recently_sent(key: str, *, now: datetime.datetime | None = None) -> Notification | None:
    """The last notification of `key` sent within NOTIFY_REPEAT_SECONDS, if any."""
    now = now or timezone.now()
    window = datetime.timedelta(seconds=setting("NOTIFY_REPEAT_SECONDS"))
    return (
        Notification.objects.filter(key=key, created_at__gte=now - window)
        .exclude(outcome__in=[Notification.Outcome.SUPPRESSED, Notification.Outcome.FAILED])
        .order_by("-created_at")
        .first()
    )


def send(
    *,
    event: str,
    subject: str,
    lines: list[str],
    key: str | None = None,
    data: dict | None = None,
    repeat: bool = False,
) -> Notification:
    """Send one event to every channel, unless the same `key` went out within the hour.

    `key` defaults to event + subject. `repeat=True` sends even so (a test message).
    """
    subject = printable(subject)[:200]
    lines = [printable(line) for line in lines]
    key = (key or f"{event}:{subject}")[:255]
    body = "\n".join(lines)
    if not repeat and recently_sent(key) is not None:
        return Notification.objects.create(
            event=event,
            key=key,
            subject=subject,
            body=body,
            outcome=Notification.Outcome.SUPPRESSED,
        )
    deliveries = []
    recipients = email_recipients()
    if recipients:
        deliveries.append(_send_email(subject, body, recipients))
    payload = {
        "event": event,
        "subject": subject,
        "lines": lines,
        "data": json_safe(data or {}, redact=True),
        "sent_at": timezone.now().isoformat(),
        "server": socket.gethostname(),
    }
    for hook in webhooks():
        deliveries.append(_post_webhook(hook, event, payload))
    return Notification.objects.create(
        event=event,
        key=key,
        subject=subject,
        body=body,
        outcome=_outcome(deliveries),
        deliveries=deliveries,
    )


def _outcome(deliveries: list[dict]) -> str:
    if not deliveries:
        return Notification.Outcome.NO_CHANNEL
    delivered = sum(1 for d in deliveries if d["ok"])
    if delivered == len(deliveries):
        return Notification.Outcome.SENT
    return Notification.Outcome.PARTIAL if delivered else Notification.Outcome.FAILED


def _send_email(subject: str, body: str, recipients: list[str]) -> dict:
    delivery = {"channel": "email", "to": ", ".join(recipients), "ok": False, "error": ""}
    try:
        connection = get_connection(timeout=setting("NOTIFY_TIMEOUT_SECONDS"))
        message = EmailMessage(
            subject=SUBJECT_PREFIX + subject,
            body=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=recipients,
            connection=connection,
        )
        message.send()
        delivery["ok"] = True
    except Exception as exc:  # noqa: BLE001 - any mail failure is recorded, never raised
        delivery["error"] = _one_line(exc)
        logger.warning("Notification e-mail failed: %s", delivery["error"])
    return delivery


def _post_webhook(hook: Webhook, event: str, payload: dict) -> dict:
    delivery = {"channel": "webhook", "to": _shown_url(hook.url), "ok": False, "error": ""}
    body = json.dumps(payload, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "RaOS-Failsafe",
        EVENT_HEADER: event,
        TIMESTAMP_HEADER: timestamp,
    }
    if hook.secret:
        headers[SIGNATURE_HEADER] = sign(hook.secret, timestamp, body)
    if urllib.parse.urlsplit(hook.url).scheme not in ("http", "https"):
        delivery["error"] = "not an http:// or https:// URL"
        logger.warning("Notification webhook %s refused: %s", delivery["to"], delivery["error"])
        return delivery
    # Only http(s), checked above.
    request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        timeout = setting("NOTIFY_TIMEOUT_SECONDS")
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            delivery["ok"] = 200 <= answer.status < 300
            if not delivery["ok"]:
                delivery["error"] = f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        delivery["error"] = f"HTTP {exc.code}"
    except Exception as exc:  # noqa: BLE001 - recorded on the row, never raised
        delivery["error"] = _one_line(exc)
    if delivery["error"]:
        logger.warning("Notification webhook %s failed: %s", delivery["to"], delivery["error"])
    return delivery


def _shown_url(url: str) -> str:
    """The URL without credentials or query (a token may be in either)."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def _one_line(exc: BaseException) -> str:
    text = printable(str(exc)).splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]
