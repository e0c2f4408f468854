"""The append-only audit trail: every event is HMAC-chained to the one before it.

Each event's hash covers its own content and the previous event's hash, under a key that
lives in settings and never in the database. Someone with write access to the table can
change, delete or reorder rows, but cannot recompute the hashes, so `verify_chain` finds the
first place the chain was broken.

What a chain cannot show by itself is its own end: deleting the newest events, or every
event, leaves a shorter chain that verifies. So after each event is committed, its seq and
hash are anchored outside the database, in the archive storage (`archive.anchors`), and
`verify_chain` checks the table against the anchors: an anchored event that is gone is a
deleted tail or a wiped table, one whose hash differs was rewritten, even by someone who had
the audit key. Backups also record the chain's head when they are taken.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import itertools
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from .archive import get_store
from .archive.anchors import Anchor, anchor_log
from .conf import setting
from .models import AuditEvent, Backup
from .snapshot import json_safe, printable

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Changing the format tag or the field order breaks every existing chain.
FORMAT_TAG = "raos-failsafe-audit-v1"
# Any constant works as long as every process uses the same one; this is "RAOSAUDT" in ASCII.
APPEND_LOCK_ID = 0x52414F5341554454
APPEND_ATTEMPTS = 5
# Anchors checked against the table per query: few enough parameters for any database.
ANCHOR_BATCH = 500


@dataclass(frozen=True)
class ChainVerification:
    """What `verify_chain` found; `checked` counts the events that verified intact.

    The verdict is the first four fields, and equality compares only those. The rest say
    what the anchors outside the database showed: `anchored_seq`, the highest event they
    name; `unanchored`, how many of the newest events they do not cover yet (recorded before
    anchoring existed, or their anchor could not be written: see the log); `deleted_after`,
    N when the events after #N were deleted, whether or not the application has given their
    numbers out again since; `wiped`, the same with N = 0: the whole anchored trail is gone;
    `unreadable_anchors`, anchor lines that could not be parsed (a torn write, or tampering
    with the storage).
    """

    ok: bool
    checked: int
    first_broken_seq: int | None
    reason: str
    anchored_seq: int = field(default=0, compare=False)
    unanchored: int = field(default=0, compare=False)
    deleted_after: int | None = field(default=None, compare=False)
    wiped: bool = field(default=False, compare=False)
    unreadable_anchors: int = field(default=0, compare=False)


# The name the trail gives the failsafe acting by itself (a schedule, the drift watch).
SYSTEM_USERNAME = "system"

# The actions that change captured records, which the investigation reads back from the
# trail to say who changed what: a restore (its details say `dry_run` and, per model label,
# the rows it inserted, updated and deleted as `changes`), and an admin log entry a
# restore's cascade deleted, kept as evidence (its details: `record`, "<label> #<pk> <repr>";
# `by`, `when`, `flag`, `change`).
ACTION_RESTORE = "failsafe.restore"
ACTION_EVIDENCE = "failsafe.restore.evidence"


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

    Once the event is committed its anchor is written (see `_anchor`); an event rolled back
    with its transaction is never anchored. When the anchor cannot be written the event
    stays recorded and `verify_chain` shows it as not anchored.

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
        "actor_username": (
            actor.get_username()[:150]
            if actor is not None
            else (SYSTEM_USERNAME if source == AuditEvent.Source.SYSTEM else "")
        ),
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
        # After the commit, not before: an anchor naming an event that was then rolled back
        # would read as a deleted event forever after.
        seq, mac = event.seq, event.hash
        transaction.on_commit(lambda: _anchor(seq, mac))
        return event


def _anchor(seq: int, mac: str) -> None:
    """Anchors one committed event outside the database, or logs why it could not.

    One small synced append (or one object) per event. A failure never loses the event:
    it is committed already. Until a later anchor is written it shows as "not anchored" in
    `verify_chain`; the next anchor covers it too, because each event's hash covers the
    hashes before it.
    """
    try:
        anchor_log(get_store().storage).append(Anchor(seq=seq, mac=mac))
    except Exception as exc:  # any storage backend's failure: disk full, read-only, offline
        logger.error("Audit event #%s could not be anchored outside the database: %s", seq, exc)


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

    Memory stays flat whatever the trail's length: events are streamed and anchors checked
    in batches (only an object store's listing of anchor names is held whole). Every anchor
    outside the database must find its event with the same hash (deleted tails, wiped
    tables, rewritten or re-signed events), and so must every backup that recorded the
    chain's head when it was taken. Anchors that cannot be read make the result not ok: a
    deleted tail could not be ruled out.
    """
    # Heads and anchors are read before the events: each names an event that was already
    # committed, so the reads below are sure to find it unless it was deleted.
    recorded_heads: dict[int, list[tuple[str, str]]] = {}
    for backup_id, head_seq, head_hash in Backup.objects.filter(audit_head_seq__gt=0).values_list(
        "id", "audit_head_seq", "audit_head_hash"
    ):
        recorded_heads.setdefault(head_seq, []).append((str(backup_id), head_hash))
    anchors = _check_anchors()
    last_seq = AuditEvent.objects.aggregate(last=Max("seq"))["last"] or 0

    checked, event_problem, walked_to = _walk(recorded_heads)
    # For the same seq, the first listed says it best.
    problems = [event_problem, *anchors.problems(last_seq)]
    if event_problem is None and recorded_heads:
        highest = max(recorded_heads)
        if highest > walked_to:
            backup_id = recorded_heads[highest][0][0]
            problems.append(
                (
                    walked_to + 1,
                    f"chain truncated: backup {backup_id} recorded head #{highest} but the "
                    f"chain ends at #{walked_to}",
                )
            )
    problems = [problem for problem in problems if problem is not None]
    found = {
        "anchored_seq": anchors.highest,
        "unanchored": max(last_seq - anchors.highest, 0),
        "deleted_after": anchors.deleted_after(last_seq),
        "wiped": anchors.count > 0 and anchors.deleted_after(last_seq) == 0,
        "unreadable_anchors": anchors.unreadable,
    }
    if problems:
        broken_seq, reason = min(problems, key=lambda problem: problem[0])
        return ChainVerification(False, min(checked, broken_seq - 1), broken_seq, reason, **found)
    if anchors.error:
        return ChainVerification(False, checked, None, anchors.error, **found)
    return ChainVerification(True, checked, None, f"all {checked} events intact", **found)


def _walk(recorded_heads: dict[int, list[tuple[str, str]]]) -> tuple[int, tuple | None, int]:
    """(events intact, (seq, why) of the first problem or None, the last seq walked)."""
    checked = 0
    previous_seq, previous_hash = 0, GENESIS_HASH
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=setting("FETCH_SIZE"))
    for event in events:
        problem = _first_problem(event, previous_seq, previous_hash, recorded_heads)
        if problem is not None:
            return checked, problem, previous_seq
        checked += 1
        previous_seq, previous_hash = event.seq, event.hash
    return checked, None, previous_seq


@dataclass
class _AnchorCheck:
    """What the anchors say about the table, read before the table is walked."""

    count: int = 0
    highest: int = 0
    # The lowest anchored seq the table does not hold, and the lowest held with another hash.
    missing: int | None = None
    differs: int | None = None
    # Whether the event now under `differs` was anchored too: recorded by the application
    # after the anchored one was deleted and its number given out again.
    reused: bool = False
    unreadable: int = 0
    error: str = ""

    def deleted_after(self, last_seq: int) -> int | None:
        """N when the events after #N were deleted (0: all of them), whether or not their
        numbers were given out again since; None when no deletion shows."""
        if self.reused:
            return self.differs - 1
        return last_seq if self.highest > last_seq else None

    def problems(self, last_seq: int) -> list[tuple[int, str]]:
        """(seq, why) for each kind of disagreement with a table whose last event is #last_seq."""
        found = []
        if self.differs == 1 and self.reused:
            found.append(
                (
                    1,
                    "the audit table was wiped and written again: event #1 is not the event "
                    "first anchored outside the database under that number",
                )
            )
        elif self.reused:
            found.append(
                (
                    self.differs,
                    f"events after #{self.differs - 1} were deleted: the anchors outside the "
                    f"database name other events under #{self.differs} and later numbers, "
                    "given out again since",
                )
            )
        elif self.differs is not None:
            where = "from the start" if self.differs == 1 else "from there on"
            found.append(
                (
                    self.differs,
                    f"event #{self.differs} differs from its anchor outside the database "
                    f"(rewritten or re-signed {where})",
                )
            )
        if self.missing is not None and self.missing <= last_seq:
            found.append(
                (
                    self.missing,
                    f"event #{self.missing} is missing (an anchor outside the database names it)",
                )
            )
        if self.highest > last_seq:
            if last_seq == 0:
                found.append(
                    (
                        1,
                        f"the audit table was wiped: the anchors outside the database name "
                        f"{self.count} events up to #{self.highest}, the table holds none",
                    )
                )
            else:
                found.append(
                    (
                        last_seq + 1,
                        f"events after #{last_seq} were deleted: the anchors outside the "
                        f"database name events up to #{self.highest}",
                    )
                )
        return found


def _check_anchors() -> _AnchorCheck:
    found = _AnchorCheck()
    differing_hash = ""
    try:
        log = anchor_log(get_store().storage)
        for batch in _batches(log.read(), ANCHOR_BATCH):
            stored = dict(
                AuditEvent.objects.filter(seq__in={anchor.seq for anchor in batch}).values_list(
                    "seq", "hash"
                )
            )
            for anchor in batch:
                found.count += 1
                found.highest = max(found.highest, anchor.seq)
                stored_hash = stored.get(anchor.seq)
                if stored_hash is None:
                    found.missing = min(found.missing or anchor.seq, anchor.seq)
                elif not _same_hash(stored_hash, anchor.mac) and (
                    found.differs is None or anchor.seq < found.differs
                ):
                    found.differs, differing_hash = anchor.seq, stored_hash
        found.unreadable = log.unreadable
        if found.differs is not None:
            # Only after tampering: a second read, to tell a number given out again (the
            # event there has its own anchor) from an event rewritten in place (it has none).
            found.reused = any(
                anchor.seq == found.differs and _same_hash(differing_hash, anchor.mac)
                for anchor in log.read()
            )
    except Exception as exc:  # any storage backend's failure to list or read
        found.error = (
            f"the anchors outside the database could not be read ({printable(str(exc))[:200]}): "
            "deleted or wiped events cannot be ruled out"
        )
    return found


def _batches(anchors: Iterable[Anchor], size: int) -> Iterator[list[Anchor]]:
    iterator = iter(anchors)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


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
