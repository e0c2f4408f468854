"""A chunk's plaintext: column-major, exact for every value type, deterministic, smaller
than the row layout, and chunks written in the row layout still read."""

import base64
import datetime
import decimal
import gc
import hashlib
import random
import string
import uuid

import msgpack
import pytest
import zstandard

from failsafe.archive import codec, layout

from .test_archive import assert_identical, group_rows, user_rows

UTC = datetime.UTC
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
SALT_ALPHABET = string.ascii_letters + string.digits
KEY_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def round_trip(rows: list[list], label: str = "accounts.user") -> list[list]:
    plaintext = layout.encode_chunk(label, rows)
    decoded_label, decoded = layout.decode_chunk(plaintext)
    assert decoded_label == label
    assert_identical(decoded, rows, "rows")
    return decoded


def row_layout(label: str, rows: list[list]) -> bytes:
    """A chunk as every backup before the column layout wrote it."""
    return codec.new_packer().pack([label, rows])


def argon2_hash(rng: random.Random) -> str:
    salt = "".join(rng.choices(SALT_ALPHABET, k=22))
    digest = base64.b64encode(rng.randbytes(32)).decode("ascii").rstrip("=")
    return f"argon2$argon2id$v=19$m=102400,t=2,p=8${salt}${digest}"


def realistic_users(count: int, seed: int = 7) -> list[list]:
    """Rows shaped like captured accounts.user rows: unique hashes, names, timestamps,
    nullable columns and membership lists."""
    rng = random.Random(seed)
    joined = datetime.datetime(2020, 1, 1, tzinfo=UTC)
    rows = []
    for pk in range(1, count + 1):
        rows.append(
            [
                pk,
                argon2_hash(rng),
                None if pk % 3 == 0 else joined + datetime.timedelta(seconds=rng.randrange(10**8)),
                pk % 100 == 0,
                f"user{pk:07d}",
                rng.choice(["Ada", "Alan", "Grace", "Hugo", "Mei", "Omar"]),
                rng.choice(["Costa", "Ito", "Novak", "Rossi", "Silva", "Weber"]),
                f"user{pk:07d}@{rng.choice(['example.com', 'example.org'])}",
                joined + datetime.timedelta(minutes=7 * pk),
                rng.choice(["USER", "ADMIN"]),
                [rng.randrange(1, 21)] + ([21] if pk % 3 == 0 else []),
                [],
            ]
        )
    return rows


# --- exact round trips -----------------------------------------------------------------


def test_every_value_type_round_trips_exactly():
    # Each column of these rows mixes types, Nones, big ints, JSON and aware datetimes.
    round_trip(user_rows())
    round_trip(group_rows(), "auth.group")


@pytest.mark.parametrize(
    "column",
    [
        pytest.param([1, 2, 3, 2**62 - 1, -(2**62), 0], id="ints-near-the-step-limit"),
        pytest.param([2**62, 1, 2**64, -(2**63) - 1, 10**30], id="ints-beyond-it"),
        pytest.param([5, 5, 5, 5], id="equal-ints"),
        pytest.param([10, 20, 40, 30, -50], id="ints-with-a-common-step"),
        pytest.param([1000, 0, 40000, 300, 65535], id="ints-with-big-steps"),
        pytest.param([0, 3000, -6000, 999000, 42000], id="big-steps-with-a-common-divisor"),
        pytest.param([0, 200, -100, 70000, -(2**40), 2**62 - 1, -(2**62)], id="ints-of-all-widths"),
        pytest.param(
            [
                datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
                + datetime.timedelta(seconds=seconds)
                for seconds in (0, 86400 * 400, -1, 10**8, 7, 123456789)
            ],
            id="utc-datetimes-far-apart",
        ),
        pytest.param([True, False, False, True], id="bools"),
        pytest.param([True, 1, 0, False], id="bools-and-ints-stay-apart"),
        pytest.param([None, 1, None, 3], id="ints-with-none"),
        pytest.param([None, None, None], id="only-none"),
        pytest.param([None, "a", 2, 2.5, b"x", None], id="mixed"),
        pytest.param([0.1, -0.0, float("inf"), 1e300], id="floats"),
        pytest.param(
            [
                datetime.datetime(2024, 5, 17, 13, 45, 12, 123456, tzinfo=UTC),
                datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime.datetime(1, 1, 1, tzinfo=UTC),
                datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            ],
            id="utc-datetimes",
        ),
        pytest.param(
            [
                datetime.datetime(2024, 5, 17, 13, 45, tzinfo=UTC),
                datetime.datetime(2024, 5, 17, 13, 45, tzinfo=IST),
                datetime.datetime(2024, 5, 17, 13, 45),
                None,
            ],
            id="utc-ist-naive-datetimes",
        ),
        pytest.param(
            [decimal.Decimal("1.10"), decimal.Decimal("-0.000"), decimal.Decimal("1E+3")],
            id="decimals",
        ),
        pytest.param([uuid.UUID(int=1), uuid.UUID(int=2**128 - 1)], id="uuids"),
        pytest.param([{"a": [1, {"b": None}]}, [], {"n": 2**70}, "2024-01-01"], id="json"),
        pytest.param([[1, 5, 9], [], [3], [2**62 - 1]], id="membership-lists"),
        pytest.param([[1, 2**64], [], [3]], id="lists-with-a-big-int"),
        pytest.param([[1, "a"], [True], [None]], id="lists-of-anything"),
        pytest.param([b"\x00\xff", b"", bytes(range(256))], id="bytes"),
        pytest.param(["", "", "", "", "x"], id="empty-strings"),
        pytest.param(["USER", "ADMIN", "USER", "USER"] * 10, id="dictionary-of-2"),
        pytest.param(
            [f"name{i}" for i in random.Random(40).choices(range(40), k=200)],
            id="dictionary-of-40",
        ),
        pytest.param(
            [f"name{i}" for i in random.Random(100).choices(range(100), k=1000)],
            id="dictionary-of-100",
        ),
        pytest.param(["ünïcødé ✓", "✓", "naïve", "ü"], id="non-ascii"),
    ],
)
def test_a_column_of_any_values_round_trips_exactly(column):
    rows = [[pk, value] for pk, value in enumerate(column, start=1)]
    round_trip(rows)


# Strings that look like a known format, or nearly: each must come back byte for byte.
LOOKALIKES = {
    "argon2-hashes": [argon2_hash(random.Random(seed)) for seed in range(40)],
    "pbkdf2-with-padding": [
        f"pbkdf2_sha256$720000${seed:022d}$"
        + base64.b64encode(hashlib.sha256(bytes([seed])).digest()).decode()
        for seed in range(40)
    ],
    "base64-with-and-without-padding": [
        base64.b64encode(bytes([seed]) * (seed % 7 + 1)).decode() for seed in range(40)
    ],
    "base64-non-canonical-last-char": ["QR", "QQ", "Qg", "QR==", "AAB", "AB"] * 7,
    "lowercase-hex": [hashlib.sha256(bytes([seed])).hexdigest() for seed in range(40)],
    "mixed-case-hex": [
        hashlib.md5(bytes([seed])).hexdigest().upper()
        if seed % 2
        else hashlib.md5(bytes([seed])).hexdigest()
        for seed in range(40)
    ],
    "odd-length-hex": [
        hashlib.md5(bytes([seed])).hexdigest()[: seed % 9 + 1] for seed in range(40)
    ],
    "uuid-strings": [
        str(uuid.UUID(int=random.Random(seed).getrandbits(128))) for seed in range(40)
    ],
    "uuid-strings-upper-and-braced": [
        "{" + str(uuid.UUID(int=seed * 7919)).upper() + "}" for seed in range(40)
    ],
    "license-keys": [
        "LIC-"
        + "-".join(
            "".join(random.Random(seed * 4 + g).choices(KEY_ALPHABET, k=5)) for g in range(4)
        )
        for seed in range(40)
    ],
    "separators-only": ["$", "$$", "$", "-", "", "@@", "$-@"] * 6,
    "uneven-separators": [f"a${'b$' * (seed % 3)}c" for seed in range(40)],
    "trailing-separators": [f"x{seed}$" for seed in range(40)] + ["$y"],
    "emails": [f"user{seed:07d}@example.{'com' if seed % 2 else 'org'}" for seed in range(40)],
    "random-printable": [
        "".join(random.Random(seed).choices(string.printable, k=seed % 30)) for seed in range(40)
    ],
    "base64-alphabet-noise": [
        "".join(random.Random(seed).choices(SALT_ALPHABET + "+/", k=seed % 50))
        for seed in range(40)
    ],
}


@pytest.mark.parametrize("strings", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_strings_of_known_formats_and_their_lookalikes_come_back_byte_for_byte(strings):
    rows = [
        [pk, value, None if pk % 5 == 0 else value] for pk, value in enumerate(strings, start=1)
    ]
    decoded = round_trip(rows)
    assert [row[1].encode("utf-8") for row in decoded] == [s.encode("utf-8") for s in strings]


def test_random_rows_of_random_types_round_trip():
    rng = random.Random(2024)
    makers = [
        lambda: rng.randrange(-(2**70), 2**70),
        lambda: rng.randrange(100),
        lambda: rng.random() < 0.5,
        lambda: None,
        lambda: argon2_hash(rng),
        lambda: "".join(rng.choices("0123456789abcdef", k=rng.randrange(0, 40))),
        lambda: "".join(rng.choices(SALT_ALPHABET + "$-@=:/", k=rng.randrange(0, 30))),
        lambda: (
            datetime.datetime(2020, 1, 1, tzinfo=UTC)
            + datetime.timedelta(microseconds=rng.randrange(10**15))
        ),
        lambda: [rng.randrange(1000) for _ in range(rng.randrange(4))],
        lambda: decimal.Decimal(rng.randrange(10**6)).scaleb(-rng.randrange(6)),
    ]
    for _ in range(30):
        # Each column draws from one or two makers, so both pure and mixed columns occur.
        columns = [rng.sample(makers, rng.choice([1, 1, 2])) for _ in range(rng.randrange(1, 6))]
        rows = [
            [pk] + [rng.choice(column)() for column in columns]
            for pk in range(1, rng.randrange(1, 80))
        ]
        round_trip(rows)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([], id="no-rows"),
        pytest.param([[7]], id="one-row-one-column"),
        pytest.param([[1, "a"], [2]], id="rows-of-different-widths"),
        pytest.param([[], []], id="rows-without-columns"),
    ],
)
def test_unusual_chunk_shapes_round_trip(rows):
    assert layout.decode_chunk(layout.encode_chunk("test.counter", rows)) == ("test.counter", rows)


def test_a_realistic_chunk_round_trips_exactly():
    round_trip(realistic_users(320))


# --- deterministic and smaller ----------------------------------------------------------


def test_equal_rows_make_equal_bytes_and_any_change_makes_other_bytes():
    # Chunk names are a keyed hash of these bytes: equal rows must give equal bytes,
    # however the row objects were built, so two backups share the chunk.
    first = layout.encode_chunk("accounts.user", realistic_users(200))
    again = layout.encode_chunk("accounts.user", realistic_users(200))
    assert first == again
    changed = realistic_users(200)
    changed[150][5] = changed[150][5] + "x"
    assert layout.encode_chunk("accounts.user", changed) != first


# sha256 of encode_chunk("accounts.user", realistic_users(320)) with layout COLUMNS 1.
COLUMNS_1_REALISTIC_CHUNK = "4a3eb2a297d67411486512b09f52be93c765e542c019e0dd9e778f1f3cb30367"


def test_the_column_layout_writes_today_the_bytes_it_wrote_when_stored_deltas_were_made():
    # A delta chunk is read by encoding its rows again and checking the name, so the
    # encoder of layout COLUMNS 1 may never change: a new encoding needs a new layout
    # number (and a new delta version), this one kept for what is stored.
    plaintext = layout.encode_chunk("accounts.user", realistic_users(320))
    assert hashlib.sha256(plaintext).hexdigest() == COLUMNS_1_REALISTIC_CHUNK


def test_columns_of_hashes_compress_to_near_their_random_bytes():
    rows = realistic_users(320)
    compress = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL).compress
    columns = len(compress(layout.encode_chunk("accounts.user", rows)))
    by_rows = len(compress(row_layout("accounts.user", rows)))
    # Per user: 16.4 random bytes of salt and 32 of digest, about 4 of last login
    # and names; the row layout needs about 90.
    assert columns < 0.75 * by_rows
    assert columns < 320 * 60


def test_salts_and_digests_are_stored_as_bytes_not_base64_text():
    rows = realistic_users(64)
    plaintext = layout.encode_chunk("accounts.user", rows)
    # 43 characters of each digest are 258 bits: every fourth digest starts on a byte.
    for row in rows[::4]:
        digest = row[1].rsplit("$", 1)[1]
        assert digest.encode("ascii") not in plaintext
        assert base64.b64decode(digest + "=") in plaintext
    # The constant part of the hashes is written once, not once a user.
    assert plaintext.count(b"m=102400,t=2,p=8") == 1


def test_the_garbage_collector_is_left_as_it_was_found():
    # Encoding and decoding pause the collector; a pause that leaked would grow the
    # process's memory without bound, and one someone else made must not be undone.
    plaintext = layout.encode_chunk("accounts.user", realistic_users(10))
    assert gc.isenabled()
    layout.decode_chunk(plaintext)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        layout.decode_chunk(b"\xc1")
    assert gc.isenabled()
    gc.disable()
    try:
        layout.decode_chunk(layout.encode_chunk("accounts.user", realistic_users(10)))
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- reading ---------------------------------------------------------------------------


def test_chunks_in_the_row_layout_still_decode():
    rows = user_rows()
    assert layout.decode_chunk(row_layout("accounts.user", rows)) == ("accounts.user", rows)
    decoded_label, decoded = layout.decode_chunk(row_layout("accounts.user", realistic_users(50)))
    assert decoded_label == "accounts.user"
    assert_identical(decoded, realistic_users(50))


def test_a_row_layout_chunk_written_before_the_columns_still_decodes():
    # Bytes as a backup of one group with two permissions wrote them before the column
    # layout: msgpack ["auth.group", [[1, "Admins", [4, 8]]]].
    old = bytes.fromhex("92aa617574682e67726f7570919301a641646d696e73920408")
    assert layout.decode_chunk(old) == ("auth.group", [[1, "Admins", [4, 8]]])


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="not-msgpack"),
        pytest.param(msgpack.packb(["auth.group"]), id="row-layout-without-rows"),
        pytest.param(msgpack.packb([1, "auth.group", 3, [[2, 1, 0, [1]]]]), id="column-too-short"),
        pytest.param(msgpack.packb([1, "auth.group", 1, [[99, 1]]]), id="unknown-kind"),
        pytest.param(msgpack.packb([1, "auth.group", 1, []]), id="no-columns"),
        pytest.param(msgpack.packb([1, "auth.group", 0, [[0, []]]]), id="no-rows"),
        pytest.param(
            msgpack.packb([1, "auth.group", 2, [[6, ["a", "b"], b"\x05"]]]), id="bad-index"
        ),
        pytest.param(
            msgpack.packb([1, "auth.group", 3, [[6, ["a", "b"], b"\x01"]]]), id="short-index"
        ),
        pytest.param(msgpack.packb([1, "auth.group", 1, [[8, 7, 3, b"\x00"]]]), id="bad-packing"),
        pytest.param(msgpack.packb([1, "auth.group", 2, [[5, ["a", 3]]]]), id="str-column-of-int"),
        pytest.param(msgpack.packb([1, 2, 1, [[0, [1]]]]), id="label-not-a-string"),
    ],
)
def test_plaintext_that_is_no_chunk_is_refused_with_a_value_error(plaintext):
    with pytest.raises(ValueError, match="not a readable chunk"):
        layout.decode_chunk(plaintext)
