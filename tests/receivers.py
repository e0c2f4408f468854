"""Real receivers for the notification tests: an SMTP server and an HTTP webhook endpoint.

Both listen on loopback ports in this process (threads), and the product code reaches them
over real sockets: Django's SMTP e-mail backend, and an HTTP POST.

- `smtp_server` (session): aiosmtpd's SMTP server; `.messages` are the e-mails it took, as
  `email.message.EmailMessage` objects with `.envelope_rcpt_tos` set.
- `mailbox` (function): the same server, emptied, with Django's settings pointed at it
  (SMTP backend, host and port) for the test. Its value is the list of messages.
- `webhook_receiver` (function): an HTTP server that answers every POST with
  `status` (200 unless the test sets another) and keeps each request as
  `Received(path, headers, body)` in `.requests`; `.url` is its address.
"""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from tests.servers import LOOPBACK, free_port


class _Inbox:
    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message.envelope_rcpt_tos = list(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"


class SMTPServer:
    def __init__(self):
        self.inbox = _Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname=LOOPBACK, port=self.port)

    @property
    def messages(self):
        return self.inbox.messages


@pytest.fixture(scope="session")
def smtp_server():
    server = SMTPServer()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def mailbox(smtp_server, settings):
    smtp_server.messages.clear()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = LOOPBACK
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    return smtp_server.messages


@dataclass
class Received:
    path: str
    # Case-insensitive, as HTTP header names are (an email.message.Message).
    headers: object
    body: bytes


class WebhookReceiver:
    def __init__(self):
        self.requests: list[Received] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.append(Received(self.path, self.headers, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hook"


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
