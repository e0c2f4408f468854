"""Filters the failsafe's admin templates use to show result objects as they are."""

import json

from django import template

register = template.Library()


@register.filter
def as_json(value) -> str:
    """A compared value as JSON, so a string, a number and null look different."""
    return json.dumps(value)


@register.filter
def related_names(value) -> str:
    """What a relation points at, by natural key(s): "alice", "support, helpdesk", "(none)"."""
    if value is None or value == []:
        return "(none)"
    if isinstance(value, list):
        return ", ".join(str(name) for name in value)
    return str(value)


@register.filter
def lookup(mapping, key):
    """mapping[key], or None: for dicts keyed by data, such as per-actor counts."""
    return (mapping or {}).get(key)


@register.filter
def without_app(app_list, app_label: str):
    """The admin index's app list less one app (the failsafe's has its own box)."""
    return [app for app in app_list or [] if app.get("app_label") != app_label]
