"""The append-only audit trail: every event is HMAC-chained to the one before it.

Each event's hash covers its own content and the previous event's hash, under a key that
lives in settings and never in the database. Someone with write access to the table can
change, delete or reorder rows, but cannot recompute the hashes, so `verify_chain` finds the
first place the chain was broken. Backups record the chain's head when they are taken, which
also makes a truncated tail detectable.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .conf import setting
from .models import AuditEvent, Backup
from .snapshot import json_safe, printable

GENESIS_HASH = "0" * 64
# Changing the format tag or the field order breaks every existing chain.
FORMAT_TAG = "raos-failsafe-audit-v1"
# Any constant works as long as every process uses the same one; this is "RAOSAUDT" in ASCII.
APPEND_LOCK_ID = 0x52414F5341554454
APPEND_ATTEMPTS = 5


@dataclass(frozen=True)
class ChainVerification:
    """What `verify_chain` found; `checked` counts the events that verified intact."""

    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str


def record(
    *,
    action: str,
    outcome: str,
    source: str,
    actor=None,
    target: str = "",
    details: dict | None = None,
    ip: str | None = None,
) -> AuditEvent:
    """Append one event to the chain and return it.

    Call it outside the atomic block of the operation it describes: a refused or failed
    operation rolls its own transaction back, and its audit event must survive that. Inside
    a longer transaction the append lock is held until that transaction ends (PostgreSQL:
    other processes' audit writes wait for it; SQLite: if the transaction read before it
    wrote, a concurrent writer can make this fail with "database is locked").

    `actor` is a User or None; only its id and username are stored, so deleting the user
    leaves the event as it was. Values under keys that look like secrets (password,
    passkey, secret, token, key) are replaced by "[redacted]"; callers should not pass
    them in the first place. Raises ValueError for an unknown outcome or source.
    """
    if outcome not in AuditEvent.Outcome.values:
        raise ValueError(f"Unknown audit outcome: {outcome!r}")
    if source not in AuditEvent.Source.values:
        raise ValueError(f"Unknown audit source: {source!r}")
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None  # AnonymousUser: nobody to name
    content = {
        "actor_id": actor.pk if actor is not None else None,
        "actor_username": actor.get_username()[:150] if actor is not None else "",
        "source": source,
        "action": printable(action)[:64],
        # Targets may echo what a user typed (an invalid backup id); the column holds 255.
        "target": printable(target or "")[:255],
        "outcome": outcome,
        "details": json_safe(details or {}, redact=True),
        "ip_address": _valid_ip(ip),
    }
    attempts_left = APPEND_ATTEMPTS
    while True:
        try:
            return _append(content)
        except IntegrityError:
            # Another writer took the same seq between our read of the head and our insert
            # (only possible on a database without the append lock below): read it again.
            attempts_left -= 1
            if not attempts_left:
                raise


def _append(content: dict) -> AuditEvent:
    with transaction.atomic():
        _serialize_appends()
        last_seq, last_hash = head()
        event = AuditEvent(
            seq=last_seq + 1,
            created_at=timezone.now(),
            prev_hash=last_hash,
            **content,
        )
        event.hash = event_hash(event)
        event.save()
        return event


def _serialize_appends() -> None:
    """Make concurrent appends take turns until the current transaction ends."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [APPEND_LOCK_ID])
        elif connection.vendor == "sqlite":
            # A write as the transaction's first statement takes SQLite's write lock now,
            # so the head read next cannot be overtaken by another process's append. It
            # matches no row (seq starts at 1).
            table = connection.ops.quote_name(AuditEvent._meta.db_table)
            cursor.execute(f"UPDATE {table} SET seq = seq WHERE seq = 0")  # noqa: S608
        # Elsewhere the unique seq and the retry in `record` keep the chain from forking.


def head() -> tuple[int, str]:
    """(seq, hash) of the last event, or (0, GENESIS_HASH) when the trail is empty."""
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    return (last[0], last[1]) if last else (0, GENESIS_HASH)


def event_hash(event: AuditEvent) -> str:
    """HMAC-SHA256 of the event's content and its link to the previous event, in hex."""
    from .keys import audit_key

    return hmac.new(audit_key(), _canonical(event), hashlib.sha256).hexdigest()


def _canonical(event: AuditEvent) -> bytes:
    # Every value is put in a form that survives the database round trip unchanged
    # (timestamps in UTC to the microsecond, IPs as Python formats them, JSON with sorted
    # keys), so a hash computed before the insert matches one computed after reading back.
    fields = [
        FORMAT_TAG,
        event.seq,
        event.created_at.astimezone(datetime.UTC).isoformat(timespec="microseconds"),
        event.actor_id,
        event.actor_username,
        event.source,
        event.action,
        event.target,
        event.outcome,
        json.dumps(event.details, sort_keys=True, separators=(",", ":")),
        _canonical_ip(event.ip_address),
        event.prev_hash,
    ]
    return json.dumps(fields, separators=(",", ":")).encode("utf-8")


def verify_chain() -> ChainVerification:
    """Walk the whole trail in seq order and report the first place it is broken.

    Memory stays flat whatever the trail's length: events are streamed. Every backup that
    recorded the chain's head when it was taken must still find that exact event, which
    catches a tail that was cut off (or cut off and written again).
    """
    # Heads are read before the events: any head read here names an event that was already
    # committed, so the walk below is sure to reach it unless the chain was truncated.
    recorded_heads: dict[int, list[tuple[str, str]]] = {}
    for backup_id, head_seq, head_hash in Backup.objects.filter(audit_head_seq__gt=0).values_list(
        "id", "audit_head_seq", "audit_head_hash"
    ):
        recorded_heads.setdefault(head_seq, []).append((str(backup_id), head_hash))

    checked = 0
    previous_seq, previous_hash = 0, GENESIS_HASH
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=setting("FETCH_SIZE"))
    for event in events:
        problem = _first_problem(event, previous_seq, previous_hash, recorded_heads)
        if problem is not None:
            broken_seq, reason = problem
            return ChainVerification(False, checked, broken_seq, reason)
        checked += 1
        previous_seq, previous_hash = event.seq, event.hash

    if recorded_heads:
        highest = max(recorded_heads)
        if highest > previous_seq:
            backup_id = recorded_heads[highest][0][0]
            return ChainVerification(
                False,
                checked,
                previous_seq + 1,
                f"chain truncated: backup {backup_id} recorded head #{highest} but the chain "
                f"ends at #{previous_seq}",
            )
    return ChainVerification(True, checked, None, f"all {checked} events intact")


def _first_problem(
    event: AuditEvent,
    previous_seq: int,
    previous_hash: str,
    recorded_heads: dict[int, list[tuple[str, str]]],
) -> tuple[int, str] | None:
    """(seq where the chain breaks, why) for the first thing wrong with this event, or None."""
    # Order matters for a useful message: a gap first, then a broken link (reordered or
    # replaced rows carry another event's prev_hash), then the content.
    expected_seq = previous_seq + 1
    if event.seq != expected_seq:
        return expected_seq, (
            f"event #{expected_seq} is missing (seq jumps {previous_seq} -> {event.seq})"
        )
    if not _same_hash(event.prev_hash, previous_hash):
        return event.seq, (
            f"event #{event.seq} does not link to #{previous_seq} (reordered or replaced)"
        )
    if not _same_hash(event.hash, event_hash(event)):
        return event.seq, f"event #{event.seq} was modified (hash mismatch)"
    for backup_id, head_hash in recorded_heads.get(event.seq, ()):
        if not _same_hash(head_hash, event.hash):
            return event.seq, (
                f"event #{event.seq} differs from the head recorded by backup {backup_id}"
            )
    return None


def _same_hash(stored: str, expected: str) -> bool:
    # Bytes, because compare_digest refuses non-ASCII text and a tampered column may hold any.
    return hmac.compare_digest(stored.encode("utf-8"), expected.encode("utf-8"))


def _canonical_ip(stored: str | None) -> str:
    # PostgreSQL and Django may spell one IPv6 address differently; Python decides here.
    # Anything unparsable (only a tampered row holds that) is hashed as it is.
    if not stored:
        return ""
    try:
        return str(ipaddress.ip_address(stored))
    except ValueError:
        return str(stored)


def _valid_ip(ip: str | None) -> str | None:
    # An unparsable address would make PostgreSQL's inet column refuse the whole event.
    if not ip:
        return None
    try:
        return str(ipaddress.ip_address(str(ip).strip()))
    except ValueError:
        return None
