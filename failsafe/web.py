"""What the web doors (API, admin, terminal page, logins) share: who is acting, and from where."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render

from . import logins, services

LOGIN_LOCKED_TEMPLATE = "accounts/login_locked.html"


def client_ip(request) -> str | None:
    """The client's address, by the one rule every door uses: the audit trail, the login
    lockouts (django-axes' AXES_CLIENT_IP_CALLABLE) and the API's login throttle.

    X-Forwarded-For is whatever the client chose to write, so by default it is not believed
    and the client is the peer that connected (REMOTE_ADDR). Behind TRUSTED_PROXY_COUNT = N
    reverse proxies, each appending the address it was reached from, the client is the Nth
    address from the right; anything further left was written by the client. A header that
    is missing, shorter than N or not an address there falls back to REMOTE_ADDR.
    """
    remote_addr = request.META.get("REMOTE_ADDR") or None
    trusted_proxies = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if trusted_proxies <= 0:
        return remote_addr
    hops = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(hops) < trusted_proxies:
        return remote_addr
    try:
        address = ipaddress.ip_address(hops[-trusted_proxies].strip())
    except ValueError:
        return remote_addr
    if getattr(address, "scope_id", None):
        # fe80::1%eth0 names an interface of the proxy's host: no client has that address,
        # and PostgreSQL's inet column would refuse it.
        return remote_addr
    return str(address)


def request_actor(request, source: str) -> services.Actor:
    return services.Actor(user=request.user, source=source, ip=client_ip(request))


def login_lockout_response(request, original_response=None, credentials=None):
    """What a locked-out login gets (AXES_LOCKOUT_CALLABLE, and the API's token login): 429
    with a page saying why and for how long, or the API's {"detail": ...}."""
    message = logins.lockout_message()
    match = getattr(request, "resolver_match", None)
    if match is not None and match.namespace == "api":
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, LOGIN_LOCKED_TEMPLATE, {"message": message}, status=429)
    response["Retry-After"] = str(logins.cool_off_minutes() * 60)
    return response
