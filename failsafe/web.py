"""What the web doors (API, admin, terminal page) share: who is acting, and from where."""

from __future__ import annotations

from . import services


def client_ip(request) -> str | None:
    """The peer that connected. X-Forwarded-For is whatever the client chose to write, so it
    is not believed: behind a proxy, the proxy must set REMOTE_ADDR."""
    return request.META.get("REMOTE_ADDR") or None


def request_actor(request, source: str) -> services.Actor:
    return services.Actor(user=request.user, source=source, ip=client_ip(request))
