"""Column values to msgpack and back, exactly.

msgpack knows None, bool, 64-bit ints, floats, str, bytes, lists and maps. Every other value
a captured column can hold gets an ExtType here, so that a restored row compares equal to
the live row *and* has the same Python type: Decimal("1.10") stays "1.10", an aware datetime
keeps its offset, a naive one stays naive, an int wider than 64 bits survives. Strings are
never interpreted, so a JSON value holding "2024-01-01" stays a string.

Tuples come back as lists (msgpack has one array type); rows and many-to-many pk lists are
lists already, so nothing a snapshot holds changes.
"""

from __future__ import annotations

import datetime
import decimal
import struct
import uuid

import msgpack

# How both archive formats compress the packed values. Level 3 is zstd's default: most of
# the gain for a fraction of the CPU of higher levels.
ZSTD_LEVEL = 3

# Ext codes are part of the on-disk format: never renumber, only add.
EXT_DATETIME = 1
EXT_DATE = 2
EXT_TIME = 3
EXT_TIMEDELTA = 4
EXT_DECIMAL = 5
EXT_UUID = 6
EXT_BIG_INT = 7
# An aware datetime whose tzinfo is datetime.UTC, what the database hands back for every
# timestamp: 8 bytes, big-endian signed microseconds since the epoch. Added for speed,
# so EXT_DATETIME stays as it was for every other datetime.
EXT_UTC_MICROS = 8

_MICROSECOND = datetime.timedelta(microseconds=1)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROS = struct.Struct(">q")
# ExtType's own constructor re-checks its arguments in Python; for the payloads built
# here that costs more than the encoding itself, once per timestamp.
_new_ext = tuple.__new__


def _offset_micros(value: datetime.datetime | datetime.time) -> int | None:
    offset = value.utcoffset()
    return None if offset is None else offset // _MICROSECOND


def _tzinfo(offset_micros: int | None) -> datetime.tzinfo | None:
    if offset_micros is None:
        return None
    if offset_micros == 0:
        # What the database hands back for UTC, so restored values look like live ones.
        return datetime.UTC
    return datetime.timezone(datetime.timedelta(microseconds=offset_micros))


def _wall_clock(value: datetime.datetime | datetime.time) -> str:
    return value.replace(tzinfo=None).isoformat()


def encode_value(value):
    """msgpack's `default`: called for every value msgpack cannot pack natively."""
    if value.__class__ is datetime.datetime and value.tzinfo is datetime.UTC:
        micros = (value - _EPOCH) // _MICROSECOND
        return _new_ext(msgpack.ExtType, (EXT_UTC_MICROS, _MICROS.pack(micros)))
    # datetime before date: a datetime is a date.
    if isinstance(value, datetime.datetime):
        payload = [_wall_clock(value), _offset_micros(value)]
        return msgpack.ExtType(EXT_DATETIME, msgpack.packb(payload))
    if isinstance(value, datetime.date):
        return msgpack.ExtType(EXT_DATE, value.isoformat().encode("ascii"))
    if isinstance(value, datetime.time):
        payload = [_wall_clock(value), _offset_micros(value)]
        return msgpack.ExtType(EXT_TIME, msgpack.packb(payload))
    if isinstance(value, datetime.timedelta):
        payload = [value.days, value.seconds, value.microseconds]
        return msgpack.ExtType(EXT_TIMEDELTA, msgpack.packb(payload))
    if isinstance(value, decimal.Decimal):
        # str() keeps sign, digits and exponent, which is what "1.10" vs "1.1" is.
        return msgpack.ExtType(EXT_DECIMAL, str(value).encode("ascii"))
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, value.bytes)
    if isinstance(value, int):
        # msgpack hands over ints outside its 64-bit range.
        return msgpack.ExtType(EXT_BIG_INT, str(value).encode("ascii"))
    raise TypeError(f"A failsafe archive cannot hold a value of type {type(value).__name__}")


def _decode_clock(code: int, data: bytes):
    wall_clock, offset_micros = msgpack.unpackb(data)
    parse = datetime.datetime if code == EXT_DATETIME else datetime.time
    return parse.fromisoformat(wall_clock).replace(tzinfo=_tzinfo(offset_micros))


def decode_ext(code: int, data: bytes):
    """msgpack's `ext_hook`. Raises ValueError on a payload it cannot read."""
    try:
        if code == EXT_UTC_MICROS:
            (micros,) = _MICROS.unpack(data)
            return _EPOCH + datetime.timedelta(microseconds=micros)
        if code in (EXT_DATETIME, EXT_TIME):
            return _decode_clock(code, data)
        if code == EXT_DATE:
            return datetime.date.fromisoformat(data.decode("ascii"))
        if code == EXT_TIMEDELTA:
            days, seconds, microseconds = msgpack.unpackb(data)
            return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)
        if code == EXT_DECIMAL:
            return decimal.Decimal(data.decode("ascii"))
        if code == EXT_UUID:
            return uuid.UUID(bytes=data)
        if code == EXT_BIG_INT:
            return int(data.decode("ascii"))
    except (ValueError, TypeError, ArithmeticError, msgpack.UnpackException) as exc:
        raise ValueError(f"unreadable value of ext type {code}") from exc
    raise ValueError(f"unknown value type {code}")


def new_packer() -> msgpack.Packer:
    return msgpack.Packer(default=encode_value, use_bin_type=True)


def new_unpacker(source) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        source,
        ext_hook=decode_ext,
        raw=False,
        # JSON values are str-keyed, but nothing in a snapshot requires it.
        strict_map_key=False,
        read_size=64 * 1024,
    )


def unpack(data: bytes):
    """One whole msgpack object from `data`. Raises ValueError or msgpack's UnpackException
    (ExtraData, FormatError, ...) when `data` is not exactly one readable object."""
    return msgpack.unpackb(data, ext_hook=decode_ext, raw=False, strict_map_key=False)
