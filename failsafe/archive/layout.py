"""A chunk's rows as its plaintext, and back: the one place that knows the byte layout.

Chunking (chunked.py) decides which rows go together; this module decides how they are
written down. `decode_chunk(encode_chunk(label, rows))` gives back `(label, rows)` value for
value and type for type, and `encode_chunk` is deterministic: equal rows, equal bytes, which
is what lets a keyed hash of the plaintext name a chunk and two backups share it.

Layout: msgpack `[model label, [row, ...]]`, each row a list of column values (codec.py).
"""

from __future__ import annotations

import msgpack

from . import codec


def encode_chunk(label: str, rows: list[list]) -> bytes:
    return codec.new_packer().pack([label, rows])


def decode_chunk(plaintext: bytes) -> tuple[str, list[list]]:
    """Raises ValueError when the plaintext is not a chunk this module wrote."""
    try:
        label, rows = codec.unpack(plaintext)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError("not a readable chunk") from exc
    if not isinstance(label, str) or not isinstance(rows, list):
        raise ValueError("not a readable chunk")
    return label, rows
