"""A chunk's rows as its plaintext, and back: the one place that knows the byte layout.

Chunking (chunked.py) decides which rows go together; this module decides how they are
written down. `decode_chunk(encode_chunk(label, rows))` gives back `(label, rows)` value for
value and type for type, and `encode_chunk` is deterministic: equal rows, equal bytes, which
is what lets a keyed hash of the plaintext name a chunk and two backups share it.

Layout: msgpack `[COLUMNS, model label, row count, [column, ...]]`, column-major: each
column one list `[kind, ...]` holding every row's value of that column, the kind chosen
from the values alone (so equal rows still make equal bytes):

- integers: divided by the greatest common divisor of the steps between neighbours, the
  first value and the steps when those are small (a primary key costs a byte, a regular
  column nothing), else offsets from the smallest value in big-endian bytes, all first
  bytes, then all second bytes... (random values: their high bytes vary little);
- aware datetimes in UTC (what the database hands back): microseconds since the epoch,
  stored as the integers above (a column of whole seconds steps in seconds);
- booleans: one byte each;
- lists of integers (many-to-many pks): their lengths, then every pk one after the other;
- strings: a dictionary when few are distinct (roles, first names), its positions 4 or 6
  bits each when it has up to 16 or 64 entries; else, when every value holds a separator
  ("$" of a Django password hash, "-" of a license key or UUID, "@" of an e-mail, "=" of
  base64 padding, ...) the same number of times, each part a string column of its own;
  else, when every character is lowercase hex or base64's alphabet and
  they vary as random ones do (salts, digests, key groups), the column's characters
  packed, 4 or 6 bits each, with the values' lengths; else the strings themselves;
- a column with None among other values: a byte a row saying which are None, and the
  others as a column;
- anything else (JSON, Decimal, UUID, bytes, naive or non-UTC datetimes, ints beyond
  ±2**62, floats, mixed types): the values as codec.py packs them, as the row layout did.

Nothing is parsed into another value: a split string is joined again with its separator,
packed characters are the same characters again (the standard decoders map whole groups
of hex or base64 text to bytes one to one), so "Qg==", "QR", uppercase hex or any
look-alike comes back byte for byte. Columns stored together compress far better than
rows: zstd finds each column's repetitions side by side, and the random bytes of hashes
are stored as bytes instead of text.

The encoder's every choice, thresholds included, is part of the format: a delta chunk
(chunked.py) is read by rebuilding its plaintext with encode_chunk and checking its name,
so encoding the same rows differently later would make stored deltas unreadable. A better
encoding needs a new first element beside COLUMNS, with this one kept for them.

Chunks written before this layout are msgpack `[label, [row, ...]]`, each row a list of
column values; their first element is the label, a string, never COLUMNS, and they still
decode. encode_chunk writes that row layout for rows it cannot put in columns (none, or
of different widths).
"""

from __future__ import annotations

import binascii
import datetime
import gc
import math
import struct
from contextlib import contextmanager
from itertools import accumulate, chain, compress, repeat
from operator import add, attrgetter, floordiv, is_not, mul, sub

import msgpack

from . import codec

# First element of a column-major chunk; a row-major one starts with its label (a string).
COLUMNS = 1

# Column kinds: part of the on-disk format, never renumber, only add.
KIND_VALUES = 0
KIND_WITH_NONE = 1
KIND_INTS = 2
KIND_BOOLS = 3
KIND_UTC = 4
KIND_STRINGS = 5
KIND_DICTIONARY = 6
KIND_SPLIT = 7
KIND_PACKED = 8
KIND_INT_LISTS = 9
KIND_INT_BYTES = 10
KIND_UTC_BYTES = 11

# Integers stored as steps from the previous one: within ±2**62 every step fits msgpack's
# 64-bit signed range.
_INT_LIMIT = 2**62
# Steps msgpack writes in one byte.
_SMALL_STEPS = (-32, 127)
# Bytes a number of so many bits is stored in, and struct's code for them.
_WIDTHS = [1] * 9 + [2] * 8 + [4] * 16 + [8] * 32
_WIDTH_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
# A dictionary's positions are at most a byte each; it is tried only when the first
# _DICTIONARY_PROBE values repeat one (hashing a column of unique values costs more).
_DICTIONARY_MAX = 256
_DICTIONARY_PROBE = 32
# A split string column's parts are split again, but not forever.
_SPLIT_DEPTH = 3
_SEPARATORS = ("$", "-", "@", "=", ":", "/")
# Strings packed to 4 bits a character (lowercase hex) or 6 (base64's alphabet): worth it
# when the characters are about as varied as those bits can say (salts, digests, keys);
# for anything more regular (usernames, decimal numbers) zstd does better on the text
# itself. Judged by the distinct characters among the first _VARIETY_SAMPLE, which is
# cheap and deterministic: at least 12 of hex's 16 (so not just digits), 32 of base64's 64.
_VARIETY_SAMPLE = 256
_HEX = b"0123456789abcdef"
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TO_HEX = bytes.maketrans(bytes(range(16)), _HEX)
_FROM_HEX = bytes.maketrans(_HEX, bytes(range(16)))
_TO_BASE64 = bytes.maketrans(bytes(range(64)), _BASE64)
_FROM_BASE64 = bytes.maketrans(_BASE64, bytes(range(64)))

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)
_UTC = datetime.UTC
_tzinfo = attrgetter("tzinfo")
_ONE = 1


@contextmanager
def _collector_paused():
    """The cyclic garbage collector off for one chunk's encoding or decoding.

    Both make thousands of short-lived lists and tuples, none of them in a cycle; each
    collection they set off would only walk the chunk's rows (and move them to an older
    generation, whose collections walk the whole process). Paused, those containers come
    and go without one: measured on a 100 000-user backup, 0.2 s of CPU. A collector
    someone else turned off stays off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def encode_chunk(label: str, rows: list[list]) -> bytes:
    with _collector_paused():
        return _encode_chunk(label, rows)


def decode_chunk(plaintext: bytes) -> tuple[str, list[list]]:
    """Raises ValueError when the plaintext is not a chunk this module wrote."""
    with _collector_paused():
        return _decode_chunk(plaintext)


def _encode_chunk(label: str, rows: list[list]) -> bytes:
    try:
        columns = list(zip(*rows, strict=True)) if rows and rows[0] else []
    except ValueError:
        columns = []  # rows of different widths
    if not columns:
        # Nothing to put in columns: the row layout says it as well.
        return codec.new_packer().pack([label, rows])
    encoded = [_encode_column(column, 0) for column in columns]
    return codec.new_packer().pack([COLUMNS, label, len(rows), encoded])


def _decode_chunk(plaintext: bytes) -> tuple[str, list[list]]:
    try:
        record = codec.unpack(plaintext)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError("not a readable chunk") from exc
    if not isinstance(record, list) or not record:
        raise ValueError("not a readable chunk")
    if record[0] == COLUMNS and type(record[0]) is int:
        return _decode_columns(record)
    if len(record) != 2:
        raise ValueError("not a readable chunk")
    label, rows = record
    if not isinstance(label, str) or not isinstance(rows, list):
        raise ValueError("not a readable chunk")
    return label, rows


# --- writing -------------------------------------------------------------------------


def _encode_column(values: tuple | list, depth: int) -> list:
    types = set(map(type, values))
    if type(None) in types and len(types) > 1:
        present = bytes(map(is_not, values, repeat(None)))
        return [KIND_WITH_NONE, present, _encode_column(list(compress(values, present)), depth)]
    if len(types) == 1:
        (kind,) = types
        if kind is int:
            return _encode_ints(values)
        if kind is bool:
            return [KIND_BOOLS, bytes(values)]
        if kind is str:
            return _encode_strings(values, depth)
        if kind is datetime.datetime and set(map(_tzinfo, values)) == {_UTC}:
            # Any datetime is within ±2**62 microseconds of the epoch: no range to check.
            steps = map(floordiv, map(sub, values[1:], values), repeat(_MICROSECOND))
            first = (values[0] - _EPOCH) // _MICROSECOND
            return _numbers(KIND_UTC, KIND_UTC_BYTES, first, list(steps))
        if kind is list:
            encoded = _encode_int_lists(values)
            if encoded is not None:
                return encoded
    return [KIND_VALUES, values]


def _encode_ints(values: tuple | list) -> list:
    if min(values) < -_INT_LIMIT or max(values) >= _INT_LIMIT:
        return [KIND_VALUES, values]
    return _numbers(KIND_INTS, KIND_INT_BYTES, values[0], list(map(sub, values[1:], values)))


def _numbers(kind_steps: int, kind_bytes: int, first: int, steps: list) -> list:
    """A column of integers given as its first value and the steps between neighbours.

    Both forms divide by the steps' greatest common divisor, so a column of whole seconds
    or of every tenth number is stored in small numbers. Small steps (keys, regular
    timestamps) are stored as they are: a byte each, nearly nothing once compressed.
    Others (random ones: a last login, a foreign key) as offsets from the smallest value
    in big-endian bytes of one width, all first bytes, then all second bytes...: their
    high bytes vary little, and zstd sees that when they stand together.
    """
    divisor = math.gcd(*steps) if steps else 0
    if divisor > 1:
        steps = list(map(floordiv, steps, repeat(divisor)))
    if not steps or (min(steps) >= _SMALL_STEPS[0] and max(steps) <= _SMALL_STEPS[1]):
        return [kind_steps, first, divisor, steps]
    offsets = list(accumulate(steps, initial=0))
    lowest = min(offsets)
    if lowest:
        offsets = list(map(sub, offsets, repeat(lowest)))
    width = _WIDTHS[max(offsets).bit_length()]
    packed = struct.pack(f">{len(offsets)}{_WIDTH_CODES[width]}", *offsets)
    planes = b"".join(packed[plane::width] for plane in range(width))
    return [kind_bytes, first + divisor * lowest, divisor, width, planes]


def _encode_int_lists(values: tuple | list) -> list | None:
    flat = list(chain.from_iterable(values))
    if flat and (
        set(map(type, flat)) != {int} or min(flat) < -_INT_LIMIT or max(flat) >= _INT_LIMIT
    ):
        return None
    return [KIND_INT_LISTS, list(map(len, values)), flat]


def _encode_strings(values: tuple | list, depth: int) -> list:
    # A column whose first values are all different is not worth a dictionary (usernames,
    # hashes): the test costs little, hashing every value to find out costs more.
    if values.count(values[0]) == len(values):
        return [KIND_DICTIONARY, [values[0]], _pack_index(bytes(len(values)), 1)]
    head = values[:_DICTIONARY_PROBE]
    if len(set(head)) < len(head):
        distinct = dict.fromkeys(values)
        if len(distinct) <= _DICTIONARY_MAX and len(distinct) * 4 <= max(len(values), 4):
            index = {value: position for position, value in enumerate(distinct)}
            positions = bytes(map(index.__getitem__, values))
            return [KIND_DICTIONARY, list(distinct), _pack_index(positions, len(distinct))]
    text = "".join(values)
    if depth < _SPLIT_DEPTH:
        split = _split(values, depth)
        if split is not None:
            return split
    packed = _pack(values, text)
    return packed if packed is not None else [KIND_STRINGS, values]


def _split(values: tuple | list, depth: int) -> list | None:
    for separator in _SEPARATORS:
        times = values[0].count(separator)
        if not times or set(map(str.count, values, repeat(separator))) != {times}:
            continue
        # Every value then gives times + 1 parts in a row: one split of them all makes
        # strings only, not a list per value for the garbage collector to go through.
        every_part = separator.join(values).split(separator)
        width = times + 1
        parts = [every_part[position::width] for position in range(width)]
        return [KIND_SPLIT, separator, [_encode_strings(part, depth + 1) for part in parts]]
    return None


def _pack_index(positions: bytes, size: int) -> bytes:
    """A dictionary's positions, 4 bits each for up to 16 entries, 6 for up to 64, else a
    byte: zstd shares one table of byte statistics between a chunk's random bytes (which
    need all 8 bits) and everything else, so small numbers are best made small here."""
    if size <= 16:
        digits = positions.translate(_TO_HEX).decode("ascii")
        return bytes.fromhex(digits + "0" * (len(digits) % 2))
    if size <= 64:
        digits = positions.translate(_TO_BASE64)
        return binascii.a2b_base64(digits + b"A" * (-len(digits) % 4), strict_mode=True)
    return positions


def _pack(values: tuple | list, text: str) -> list | None:
    if not text.isascii():
        return None
    raw = text.encode("ascii")
    if raw.translate(None, _BASE64):
        return None  # hex is in base64's alphabet too
    # Hex is tried on the first characters before all of them: deleting the hex digits
    # from base64 text copies most of it.
    if not raw[:_VARIETY_SAMPLE].translate(None, _HEX) and not raw.translate(None, _HEX):
        bits, variety = 4, 12
    else:
        bits, variety = 6, 32
    if len(set(text[:_VARIETY_SAMPLE])) < variety:
        return None
    # Whole groups of characters: the standard decoders then map text to bytes one to one.
    if bits == 4:
        packed = bytes.fromhex(text + "0" * (len(text) % 2))
    else:
        packed = binascii.a2b_base64(raw + b"A" * (-len(raw) % 4), strict_mode=True)
    lengths = set(map(len, values))
    stored_lengths = lengths.pop() if len(lengths) == 1 else list(map(len, values))
    return [KIND_PACKED, bits, stored_lengths, packed]


# --- reading -------------------------------------------------------------------------


def _decode_columns(record: list) -> tuple[str, list[list]]:
    try:
        _marker, label, count, columns = record
    except ValueError:
        raise ValueError("not a readable chunk") from None
    if not isinstance(label, str) or type(count) is not int or not isinstance(columns, list):
        raise ValueError("not a readable chunk")
    try:
        decoded = [_decode_column(column, count) for column in columns]
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        OverflowError,
        binascii.Error,
        struct.error,
    ) as exc:
        raise ValueError("not a readable chunk") from exc
    if not decoded or count < 1:
        raise ValueError("not a readable chunk")
    return label, list(map(list, zip(*decoded, strict=True)))


def _decode_column(column: list, count: int) -> list:
    kind = column[0]
    if kind == KIND_VALUES:
        (values,) = column[1:]
    elif kind == KIND_WITH_NONE:
        present, inner = column[1:]
        if len(present) != count:
            raise ValueError("column of the wrong length")
        given = iter(_decode_column(inner, sum(present)))
        values = [next(given) if flag else None for flag in present]
    elif kind == KIND_INTS:
        values = _decode_steps(column[1:], count)
    elif kind == KIND_BOOLS:
        (flags,) = column[1:]
        values = list(map(_ONE.__eq__, flags))
    elif kind == KIND_UTC:
        values = _decode_utc(column[1:], count)
    elif kind == KIND_INT_BYTES:
        values = _decode_bytes(column[1:], count)
    elif kind == KIND_UTC_BYTES:
        lowest, divisor = column[1:3]
        values = _datetimes(lowest, divisor, _byte_offsets(column[1:], count))
    elif kind == KIND_INT_LISTS:
        lengths, flat = column[1:]
        if sum(lengths) != len(flat):
            raise ValueError("list lengths do not add up")
        ends = list(accumulate(lengths))
        values = [flat[end - length : end] for end, length in zip(ends, lengths, strict=True)]
    else:
        values = _decode_strings(column, count)
    if not isinstance(values, list) or len(values) != count:
        raise ValueError("column of the wrong length")
    return values


def _decode_utc(payload: list, count: int) -> list:
    first, divisor, steps = payload
    if len(steps) != count - 1:
        raise ValueError("column of the wrong length")
    # Small steps (a regular column): adding each step's timedelta to the previous
    # datetime is cheaper than building every datetime from the epoch.
    step = datetime.timedelta(microseconds=divisor)
    return list(accumulate(map(step.__mul__, steps), add, initial=_EPOCH + first * _MICROSECOND))


def _datetimes(origin: int, divisor: int, offsets) -> list:
    """The datetimes `origin + offset * divisor` microseconds after the epoch."""
    origin = _EPOCH + origin * _MICROSECOND
    # A timedelta of small numbers of seconds is built three times faster than one of
    # many microseconds, and database timestamps are often whole seconds.
    seconds, micros = divmod(divisor, 1_000_000)
    if micros:
        since = map(datetime.timedelta, repeat(0), repeat(0), map(mul, offsets, repeat(divisor)))
    else:
        since = map(datetime.timedelta, repeat(0), map(mul, offsets, repeat(seconds)))
    return list(map(origin.__add__, since))


def _byte_offsets(payload: list, count: int) -> tuple:
    _lowest, _divisor, width, planes = payload
    if len(planes) != count * width:
        raise ValueError("column of the wrong length")
    packed = planes
    if width > 1:
        packed = bytearray(len(planes))
        for plane in range(width):
            packed[plane::width] = planes[plane * count : (plane + 1) * count]
    return struct.unpack(f">{count}{_WIDTH_CODES[width]}", packed)


def _decode_bytes(payload: list, count: int) -> list:
    lowest, divisor = payload[:2]
    offsets = _byte_offsets(payload, count)
    if divisor != 1:
        offsets = map(mul, offsets, repeat(divisor))
    return list(map(add, repeat(lowest), offsets))


def _decode_steps(payload: list, count: int) -> list:
    first, divisor, steps = payload
    if len(steps) != count - 1:
        raise ValueError("column of the wrong length")
    if divisor > 1:
        steps = map(divisor.__mul__, steps)
    return list(accumulate(steps, initial=first))


def _decode_strings(column: list, count: int) -> list:
    kind = column[0]
    if kind == KIND_STRINGS:
        (values,) = column[1:]
        _check_strings(values)
    elif kind == KIND_DICTIONARY:
        distinct, index = column[1:]
        _check_strings(distinct)
        values = list(map(distinct.__getitem__, _unpack_index(index, len(distinct), count)))
    elif kind == KIND_SPLIT:
        separator, parts = column[1:]
        decoded_parts = [_decode_strings(part, count) for part in parts]
        values = list(map(separator.join, zip(*decoded_parts, strict=True)))
    elif kind == KIND_PACKED:
        values = _unpack(column[1:], count)

    else:
        raise ValueError(f"unknown column kind {kind!r}")
    if len(values) != count:
        raise ValueError("column of the wrong length")
    return values


def _check_strings(values: list) -> None:
    if set(map(type, values)) - {str}:
        raise ValueError("a string column holding something else")


def _unpack_index(packed: bytes, size: int, count: int) -> bytes:
    if size <= 16:
        positions = packed.hex().encode("ascii").translate(_FROM_HEX)
    elif size <= 64:
        positions = binascii.b2a_base64(packed, newline=False).translate(_FROM_BASE64)
    else:
        positions = packed
    if len(positions) < count:
        raise ValueError("dictionary positions shorter than the column")
    return positions[:count]


def _unpack(payload: list, count: int) -> list:
    bits, lengths, packed = payload
    if bits == 4:
        text = packed.hex()
    elif bits == 6:
        text = binascii.b2a_base64(packed, newline=False).decode("ascii")
    else:
        raise ValueError(f"unknown packing {bits!r}")
    if type(lengths) is int:
        lengths = [lengths] * count
    ends = list(accumulate(lengths))
    if ends and ends[-1] > len(text):
        raise ValueError("packed strings shorter than their lengths")
    return [text[end - length : end] for end, length in zip(ends, lengths, strict=True)]
