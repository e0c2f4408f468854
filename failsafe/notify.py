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

import base64
import datetime
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.utils import timezone

from accounts.models import Role

from .conf import setting
from .models import Notification
from .snapshot import REDACTED, json_safe, printable

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-RaOS-Signature"
TIMESTAMP_HEADER = "X-RaOS-Timestamp"
EVENT_HEADER = "X-RaOS-Event"
SUBJECT_PREFIX = "[RaOS Failsafe] "


# Django's e-mail backends that deliver to nobody: the message stays on this machine.
_LOCAL_EMAIL_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend": "written to the server's console",
    "django.core.mail.backends.filebased.EmailBackend": "written to a file on the server",
    "django.core.mail.backends.locmem.EmailBackend": "kept in memory",
    "django.core.mail.backends.dummy.EmailBackend": "thrown away",
}
_CONSOLE_BACKEND = "django.core.mail.backends.console.EmailBackend"
# Control characters (line breaks too: a line is one line) would break a mail header or a
# log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Webhook:
    url: str
    # The name of the environment variable that holds the HMAC key ("" : unsigned).
    secret_env: str = ""
    # Why this entry of NOTIFY_WEBHOOKS cannot be used ("" : it can).
    problem: str = ""

    @property
    def secret(self) -> bytes:
        return os.environ.get(self.secret_env, "").encode() if self.secret_env else b""

    @property
    def shown_url(self) -> str:
        return _shown_url(self.url)


@dataclass(frozen=True)
class Channel:
    """One configured channel as a person may see it: never a secret, nor a URL's credentials."""

    kind: str  # "email" or "webhook"
    to: str
    # Webhooks: whether requests carry X-RaOS-Signature.
    signed: bool = False
    # What the operator should know: an unsigned webhook, mail that stays on the machine.
    note: str = ""
    # Why it cannot deliver at all.
    problem: str = ""


HOW_TO_CONFIGURE = (
    "No notification channel is configured: give a SuperAdmin an e-mail address or set "
    "FAILSAFE_NOTIFY_EMAILS, with EMAIL_URL naming the mail server; or set "
    'FAILSAFE_NOTIFY_WEBHOOKS (README "Notifications")'
)


def undelivered(notification: Notification) -> list[str]:
    """What did not reach anyone, one line per channel ([] : every channel took it): failed
    deliveries, e-mail a local backend kept, or no channel at all."""
    if notification.outcome == Notification.Outcome.NO_CHANNEL:
        return [HOW_TO_CONFIGURE]
    if notification.outcome == Notification.Outcome.SUPPRESSED:
        return ["Held back: the same event was sent within NOTIFY_REPEAT_SECONDS"]
    lines = []
    for delivery in notification.deliveries:
        why = delivery.get("error") or ("" if delivery.get("ok") else "failed")
        why = why or delivery.get("note", "")
        if why:
            lines.append(f"{delivery['channel']} {delivery['to']}: {why}")
    return lines


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
    """FAILSAFE["NOTIFY_WEBHOOKS"]; an entry that is not usable is kept with its problem, so
    a delivery to it is recorded as failed instead of the whole notification failing."""
    hooks = []
    for number, entry in enumerate(setting("NOTIFY_WEBHOOKS") or [], start=1):
        if isinstance(entry, str):
            hooks.append(_checked(Webhook(url=entry.strip())))
        elif isinstance(entry, dict) and isinstance(entry.get("url"), str):
            secret_env = entry.get("secret_env") or ""
            hooks.append(_checked(Webhook(url=entry["url"].strip(), secret_env=str(secret_env))))
        else:
            hooks.append(
                Webhook(
                    url="",
                    problem=f"NOTIFY_WEBHOOKS entry {number} is neither a URL nor "
                    '{"url": ..., "secret_env": ...}',
                )
            )
    return hooks


def _checked(hook: Webhook) -> Webhook:
    try:
        parsed = urllib.parse.urlsplit(hook.url)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return Webhook(url=hook.url, secret_env=hook.secret_env, problem="a malformed URL")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return Webhook(
            url=hook.url, secret_env=hook.secret_env, problem="not an http:// or https:// URL"
        )
    return hook


def local_email_delivery() -> str:
    """Where e-mail goes when the backend delivers to nobody ("" : it is sent for real)."""
    return _LOCAL_EMAIL_BACKENDS.get(settings.EMAIL_BACKEND, "")


def channels() -> list[Channel]:
    """The channels a notification would go to now, described for the admin and commands."""
    found = []
    recipients = email_recipients()
    if recipients:
        local = local_email_delivery()
        note = f"EMAIL_URL is not set to a mail server: e-mail is {local}" if local else ""
        found.append(Channel(kind="email", to=", ".join(recipients), note=note))
    for hook in webhooks():
        signed = bool(hook.secret)
        if signed or hook.problem:
            note = ""
        elif hook.secret_env:
            note = f"unsigned: the environment variable {hook.secret_env} is not set"
        else:
            note = "unsigned: no secret_env names an HMAC key"
        found.append(
            Channel(
                kind="webhook",
                to=hook.shown_url or "(no URL)",
                signed=signed,
                note=note,
                problem=hook.problem,
            )
        )
    return found


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

    `key` defaults to event + subject. `repeat=True` sends even so (a test message). Never
    raises: when even the row cannot be written, the returned Notification is unsaved and
    the reason is logged.
    """
    subject = " ".join(_clean(subject).split())[:200]
    lines = [_clean(line) for line in lines]
    key = (key or f"{event}:{subject}")[:255]
    body = "\n".join(lines)
    row = Notification(event=event[:32], key=key, subject=subject, body=body)
    try:
        # A savepoint: a database error here must not break the caller's transaction.
        with transaction.atomic():
            repeated = not repeat and recently_sent(key) is not None
            recipients = [] if repeated else email_recipients()
    except Exception as exc:  # noqa: BLE001 - the database failing must not fail the caller
        logger.warning("Notification %r not sent: %s", subject, _one_line(exc))
        row.outcome = Notification.Outcome.FAILED
        row.deliveries = [{"channel": "database", "to": "", "ok": False, "error": _one_line(exc)}]
        return row
    if repeated:
        row.outcome = Notification.Outcome.SUPPRESSED
        return _saved(row)
    deliveries = []
    if recipients:
        deliveries.append(_send_email(subject, body, recipients))
    payload = {
        "event": row.event,
        "subject": subject,
        "lines": lines,
        "data": json_safe(data or {}, redact=True),
        "sent_at": timezone.now().isoformat(),
        "server": socket.gethostname(),
    }
    try:
        hooks = webhooks()
    except Exception as exc:  # noqa: BLE001 - a broken setting is recorded, never raised
        hooks = [Webhook(url="", problem=f"NOTIFY_WEBHOOKS cannot be read: {_one_line(exc)}")]
    for hook in hooks:
        deliveries.append(_post_webhook(hook, row.event, payload))
    row.outcome = _outcome(deliveries)
    row.deliveries = deliveries
    return _saved(row)


def _saved(row: Notification) -> Notification:
    try:
        with transaction.atomic():
            row.save()
    except Exception as exc:  # noqa: BLE001 - what was sent stays sent; the row is best effort
        logger.warning("Notification %r not recorded: %s", row.subject, _one_line(exc))
    return row


def _clean(text) -> str:
    return _CONTROL.sub(" ", printable(text))


def _outcome(deliveries: list[dict]) -> str:
    if not deliveries:
        return Notification.Outcome.NO_CHANNEL
    delivered = sum(1 for d in deliveries if d["ok"])
    if delivered == len(deliveries):
        return Notification.Outcome.SENT
    return Notification.Outcome.PARTIAL if delivered else Notification.Outcome.FAILED


def _send_email(subject: str, body: str, recipients: list[str]) -> dict:
    delivery = {"channel": "email", "to": ", ".join(recipients), "ok": False, "error": ""}
    local = local_email_delivery()
    if local:
        delivery["note"] = f"not sent: {local} (EMAIL_URL)"
    try:
        options = {"timeout": setting("NOTIFY_TIMEOUT_SECONDS")}
        if settings.EMAIL_BACKEND == _CONSOLE_BACKEND:
            # The server's log, not the output a command's caller reads (--json).
            options = {"stream": sys.stderr}
        connection = get_connection(**options)
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
    delivery = {"channel": "webhook", "to": hook.shown_url, "ok": False, "error": ""}
    if hook.problem:
        delivery["error"] = hook.problem
        logger.warning("Notification webhook %s refused: %s", delivery["to"], hook.problem)
        return delivery
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
    try:
        url, authorization = _without_userinfo(hook.url)
        if authorization:
            headers["Authorization"] = authorization
        # Only http(s): webhooks() gives any other URL a problem.
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
        timeout = setting("NOTIFY_TIMEOUT_SECONDS")
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            delivery["ok"] = 200 <= answer.status < 300
            if not delivery["ok"]:
                delivery["error"] = f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        delivery["error"] = f"HTTP {exc.code}"
    except Exception as exc:  # noqa: BLE001 - recorded on the row, never raised
        delivery["error"] = _without_credentials(_one_line(exc), hook.url)
    if delivery["error"]:
        logger.warning("Notification webhook %s failed: %s", delivery["to"], delivery["error"])
    return delivery


def _without_userinfo(url: str) -> tuple[str, str]:
    """`https://user:password@host/path` as the URL without them and the Basic credentials
    header carrying them (urllib would take "user:password@host" for the host name)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.username is None and parsed.password is None:
        return url, ""
    netloc = parsed.netloc.rpartition("@")[2]
    userinfo = ":".join(
        urllib.parse.unquote(part or "") for part in (parsed.username, parsed.password)
    )
    token = base64.b64encode(userinfo.encode()).decode()
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc)), f"Basic {token}"


def _without_credentials(text: str, url: str) -> str:
    """An error's words without the URL's user, password or query, should they quote them."""
    try:
        parsed = urllib.parse.urlsplit(url)
        parts = (parsed.password, parsed.username, parsed.query)
    except ValueError:
        return "the webhook URL is malformed"
    for part in parts:
        if part:
            text = text.replace(part, REDACTED)
    return text


def _shown_url(url: str) -> str:
    """The URL without credentials or query (a token may be in either)."""
    try:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname or ""
        port = f":{parsed.port}" if parsed.port else ""
    except ValueError:
        return "(malformed URL)"
    if not parsed.scheme:
        return "(not a URL)" if url else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def _one_line(exc: BaseException) -> str:
    text = printable(str(exc)).splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]
