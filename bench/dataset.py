"""The benchmark's data: a population built in bulk, and the changes measured against it.

Runs inside a child process with Django set up. Everything is derived from the run's seed,
so two runs with the same --rows and --seed measure the same data. Users carry unique,
random-looking argon2 hashes as a real server's do: they are incompressible, and pretending
otherwise would flatter the archive size.
"""

from __future__ import annotations

import base64
import datetime
import math
import random
import string
from collections.abc import Iterator

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_SUFFIX_LENGTH
from django.contrib.auth.models import Group, Permission
from django.core.management.color import no_style
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat

from accounts.models import Role
from licensing.models import KEY_ALPHABET, License

GROUP_COUNT = 20
PERMISSIONS_PER_GROUP = 5
# Objects built in memory before one bulk_create: big enough to amortize the call, small
# enough that building a million rows never holds more than this many model instances.
BUILD_BATCH = 5000
# Primary keys per `pk IN (...)` update; SQLite allows 999 parameters per statement.
UPDATE_BATCH = 500

# The "1% change", as fractions of the users.
CLUSTERED_UPDATED = 0.005
CLUSTERED_DELETED = 0.0025
CLUSTERED_APPENDED = 0.0025
SCATTERED_UPDATED = 0.01

# fmt: off
FIRST_NAMES = (
    "Ada", "Alan", "Alice", "Amara", "Anil", "Ayesha", "Bao", "Bea", "Carlos", "Chen", "Dara",
    "Dmitri", "Elena", "Emeka", "Farah", "Femi", "Grace", "Hana", "Hugo", "Ines", "Ivan",
    "Jamal", "Jin", "Jonas", "Kai", "Kofi", "Lars", "Leila", "Luca", "Mei", "Mina", "Nadia",
    "Nia", "Omar", "Oskar", "Priya", "Quinn", "Ravi", "Rosa", "Sade", "Sami", "Sofia", "Tariq",
    "Theo", "Uma", "Vera", "Wei", "Yara", "Yusuf", "Zoe"
)
LAST_NAMES = (
    "Abara", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jansen", "Kowalski", "Larsen", "Mensah", "Novak", "Okafor", "Petrov", "Quispe", "Rossi",
    "Sato", "Schmidt", "Silva", "Tanaka", "Umar", "Varga", "Wagner", "Xu", "Yilmaz", "Zhang",
    "Andersen", "Becker", "Castillo", "Delgado", "Evans", "Ferreira", "Gomez", "Hansen",
    "Ibrahim", "Jovanovic", "Kim", "Lopez", "Moreau", "Nakamura", "Olsen", "Park", "Reyes",
    "Santos", "Torres", "Vogel", "Weber", "Young"
)
# fmt: on
EMAIL_DOMAINS = ("example.com", "example.org", "mail.example", "corp.example", "uni.example")
SALT_ALPHABET = string.ascii_letters + string.digits
# Every random draw the generator makes, named, so the incompressible floor below is worked
# out from the same numbers the data come from.
SALT_LENGTH = 22
DIGEST_BYTES = 32
LAST_LOGIN_SECONDS = (60, 10**8)
MAX_USERS = (1, 50)
KEY_GROUPS = 4
KEY_GROUP_LENGTH = 5
EPOCH = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


def fraction_of(rows: int, fraction: float) -> int:
    """At least one row, so the tiny smoke-test sizes still change something."""
    return max(1, round(rows * fraction))


# Every user's own hash, as Django makes them (a random salt each time), or one hash for all:
# not something a real server has, but it shows how much of the archive the hashes are.
HASHES = ("unique", "shared")


def _argon2_lookalike(rng: random.Random) -> str:
    # The shape of Django's Argon2PasswordHasher output: a 22-character salt and a 32-byte
    # hash. Hashing for real would take 100k x 50 ms for no difference in the archive.
    salt = "".join(rng.choices(SALT_ALPHABET, k=SALT_LENGTH))
    digest = base64.b64encode(rng.randbytes(DIGEST_BYTES)).decode("ascii").rstrip("=")
    return f"argon2$argon2id$v=19$m=102400,t=2,p=8${salt}${digest}"


def _license_key(rng: random.Random) -> str:
    groups = ("".join(rng.choices(KEY_ALPHABET, k=KEY_GROUP_LENGTH)) for _ in range(KEY_GROUPS))
    return "LIC-" + "-".join(groups)


def _new_user(User, *, pk: int, index: int, rng: random.Random, shared_hash: str | None):
    username = f"user{index:07d}"
    role = Role.ADMIN if index % 100 == 0 else Role.USER
    joined = EPOCH + datetime.timedelta(minutes=7 * index)
    return User(
        pk=pk,
        username=username,
        password=shared_hash or _argon2_lookalike(rng),
        first_name=rng.choice(FIRST_NAMES),
        last_name=rng.choice(LAST_NAMES),
        email=f"{username}@{rng.choice(EMAIL_DOMAINS)}",
        role=role,
        # bulk_create skips User.save(), which derives the flags from the role.
        is_staff=role != Role.USER,
        is_superuser=False,
        is_active=index % 37 != 0,
        must_change_password=index % 20 == 0,
        date_joined=joined,
        last_login=None
        if not _has_last_login(index)
        else joined + datetime.timedelta(seconds=rng.randrange(*LAST_LOGIN_SECONDS)),
    )


def _memberships(User, *, user_pk: int, index: int, group_pks: list[int]) -> list:
    """One group for every user, a second for every third one."""
    Membership = User.groups.through
    first = group_pks[index % len(group_pks)]
    links = [Membership(user_id=user_pk, group_id=first)]
    second = group_pks[(index * 7 + 3) % len(group_pks)]
    if index % 3 == 0 and second != first:
        links.append(Membership(user_id=user_pk, group_id=second))
    return links


def _direct_permissions(User, *, user_pk: int, index: int, permission_pks: list[int]) -> list:
    if index % 50:
        return []
    Grant = User.user_permissions.through
    return [Grant(user_id=user_pk, permission_id=permission_pks[index % len(permission_pks)])]


def _shared_hash(hashes: str, seed: int) -> str | None:
    if hashes not in HASHES:
        raise ValueError(f"hashes must be one of {HASHES}, not {hashes!r}")
    return _argon2_lookalike(random.Random(seed)) if hashes == "shared" else None


def _insert_users(
    *, first_pk: int, first_index: int, count: int, rng: random.Random, shared_hash: str | None
) -> None:
    """Users with consecutive pks and usernames, their groups and direct permissions."""
    User = get_user_model()
    group_pks = list(Group.objects.order_by("pk").values_list("pk", flat=True))
    permission_pks = list(Permission.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, count, BUILD_BATCH):
        users, links, grants = [], [], []
        for offset in range(start, min(start + BUILD_BATCH, count)):
            pk, index = first_pk + offset, first_index + offset
            users.append(_new_user(User, pk=pk, index=index, rng=rng, shared_hash=shared_hash))
            links += _memberships(User, user_pk=pk, index=index, group_pks=group_pks)
            grants += _direct_permissions(
                User, user_pk=pk, index=index, permission_pks=permission_pks
            )
        User.objects.bulk_create(users)
        User.groups.through.objects.bulk_create(links)
        User.user_permissions.through.objects.bulk_create(grants)


def _licenses(*, count: int, user_pks: range, rng: random.Random) -> Iterator[License]:
    keys: set[str] = set()
    for index in range(count):
        key = _license_key(rng)
        while key in keys:
            key = _license_key(rng)
        keys.add(key)
        issued = EPOCH + datetime.timedelta(hours=index)
        yield License(
            key=key,
            # Every tenth license is unassigned; the rest spread over the users.
            owner_id=None if index % 10 == 9 else user_pks[(index * 3 + 1) % len(user_pks)],
            license_type=rng.choice(License.Type.values),
            status=License.Status.ACTIVE if index % 25 else License.Status.EXPIRED,
            max_users=rng.randint(*MAX_USERS),
            issued_at=issued,
            expires_at=issued + datetime.timedelta(days=365) if index % 4 else None,
            instance_name=f"instance-{index:06d}" if index % 2 else "",
        )


def _reset_sequences() -> None:
    # Users are inserted with explicit pks; PostgreSQL's sequence must move past them or
    # the next user created (by the app, or the appended users) collides.
    if connection.vendor != "postgresql":
        return
    User = get_user_model()
    with connection.cursor() as cursor:
        for statement in connection.ops.sequence_reset_sql(no_style(), [User, Group, License]):
            cursor.execute(statement)


def analyze() -> None:
    """Fresh planner statistics, so the measured queries plan as they would on a live server."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


def build(*, rows: int, seed: int, superadmin: str, hashes: str = "unique") -> dict:
    """`rows` users (the SuperAdmin among them), rows/3 licenses, GROUP_COUNT groups."""
    rng = random.Random(seed)
    shared_hash = _shared_hash(hashes, seed)
    User = get_user_model()
    with transaction.atomic():
        admin = User.objects.create_user(username=superadmin, role=Role.SUPERADMIN)
        permissions = list(Permission.objects.order_by("pk").values_list("pk", flat=True))
        groups = Group.objects.bulk_create(
            Group(name=f"bench-group-{i:02d}") for i in range(GROUP_COUNT)
        )
        Grant = Group.permissions.through
        Grant.objects.bulk_create(
            Grant(group_id=group.pk, permission_id=permissions[(g * 11 + p) % len(permissions)])
            for g, group in enumerate(groups)
            for p in range(PERMISSIONS_PER_GROUP)
        )
        first_pk = admin.pk + 1
        _insert_users(
            first_pk=first_pk, first_index=1, count=rows - 1, rng=rng, shared_hash=shared_hash
        )
        user_pks = range(first_pk, first_pk + rows - 1)
        licenses = _licenses(count=rows // 3, user_pks=user_pks, rng=rng)
        while batch := [license for _, license in zip(range(BUILD_BATCH), licenses, strict=False)]:
            License.objects.bulk_create(batch)
        _reset_sequences()
    return {"superadmin_pk": admin.pk, "first_user_pk": first_pk}


def _has_last_login(index: int) -> bool:
    return index % 3 != 0


def incompressible_floor(*, rows: int, hashes: str = "unique") -> dict:
    """The bytes no archive of the built population can be smaller than: the information
    in its random draws, log2 of the choices each draw had (`build` makes them all).

    Everything else (pks, usernames, dates, flags, memberships) follows from the row's
    index, so a perfect compressor could drop it. Per user: the argon2 look-alike's salt and
    digest, a first and a last name, an e-mail domain and, for two users in three, a last
    login; per license: its key, type and max_users; the SuperAdmin's unusable password
    (Django's random suffix). Rejecting a repeated license key takes away less than a
    millionth of a bit per key at any size measured, so it is left out.
    """
    generated = rows - 1
    password_bits = SALT_LENGTH * math.log2(len(SALT_ALPHABET)) + DIGEST_BYTES * 8
    bits = {
        "password_hashes": password_bits * (generated if hashes == "unique" else 1),
        "superadmin_password": UNUSABLE_PASSWORD_SUFFIX_LENGTH * math.log2(len(SALT_ALPHABET)),
        "names_and_domains": generated
        * math.log2(len(FIRST_NAMES) * len(LAST_NAMES) * len(EMAIL_DOMAINS)),
        "last_logins": sum(1 for index in range(1, rows) if _has_last_login(index))
        * math.log2(LAST_LOGIN_SECONDS[1] - LAST_LOGIN_SECONDS[0]),
        "license_keys": (rows // 3) * KEY_GROUPS * KEY_GROUP_LENGTH * math.log2(len(KEY_ALPHABET)),
        "license_fields": (rows // 3)
        * math.log2(len(License.Type.values) * (MAX_USERS[1] - MAX_USERS[0] + 1)),
    }
    parts = {name: math.ceil(value / 8) for name, value in bits.items()}
    return {"bytes": math.ceil(sum(bits.values()) / 8), "parts": parts}


def population() -> dict[str, int]:
    """Row counts of every captured table, to check a restore brought everything back."""
    User = get_user_model()
    return {
        "users": User.objects.count(),
        "groups": Group.objects.count(),
        "licenses": License.objects.count(),
        "user_groups": User.groups.through.objects.count(),
        "user_permissions": User.user_permissions.through.objects.count(),
        "group_permissions": Group.permissions.through.objects.count(),
    }


def population_tables() -> dict[str, str]:
    """The table behind each count of `population`, for counting where Django is not set up
    for that database (the copy pg_restore restores into)."""
    User = get_user_model()
    return {
        "users": User._meta.db_table,
        "groups": Group._meta.db_table,
        "licenses": License._meta.db_table,
        "user_groups": User.groups.through._meta.db_table,
        "user_permissions": User.user_permissions.through._meta.db_table,
        "group_permissions": Group.permissions.through._meta.db_table,
    }


def captured_tables() -> list[str]:
    """The tables behind the captured models, many-to-many tables included (for pg_dump)."""
    User = get_user_model()
    models = [
        Group,
        Group.permissions.through,
        User,
        User.groups.through,
        User.user_permissions.through,
        License,
    ]
    return [model._meta.db_table for model in models]


def clustered_change(*, rows: int, seed: int, first_user_pk: int, hashes: str = "unique") -> dict:
    """A bulk mistake or an attack: one contiguous run of users rewritten, the next run
    deleted, and new users appended at the end of the table."""
    User = get_user_model()
    updated = fraction_of(rows, CLUSTERED_UPDATED)
    deleted = fraction_of(rows, CLUSTERED_DELETED)
    appended = fraction_of(rows, CLUSTERED_APPENDED)
    update_from = first_user_pk + (rows - 1) // 2
    delete_from = update_from + updated
    delete_to = delete_from + deleted
    with transaction.atomic():
        rewritten = User.objects.filter(pk__gte=update_from, pk__lt=delete_from).update(
            email=Concat(F("username"), Value("@takeover.example")), is_active=False
        )
        orphaned = License.objects.filter(owner_id__gte=delete_from, owner_id__lt=delete_to).count()
        User.objects.filter(pk__gte=delete_from, pk__lt=delete_to).delete()
        append_from = (User.objects.order_by("-pk").values_list("pk", flat=True).first()) + 1
        _insert_users(
            first_pk=append_from,
            first_index=rows,
            count=appended,
            rng=random.Random(seed + 1),
            shared_hash=_shared_hash(hashes, seed),
        )
        _reset_sequences()
    return {
        "users_updated": rewritten,
        "updated_pks": [update_from, delete_from - 1],
        "users_deleted": deleted,
        "deleted_pks": [delete_from, delete_to - 1],
        "users_appended": appended,
        "appended_pks": [append_from, append_from + appended - 1],
        "licenses_unowned": orphaned,
        "definition": (
            f"clustered: users pk {update_from}-{delete_from - 1} ({updated}, "
            f"{CLUSTERED_UPDATED:.2%}) get a new email and are deactivated; users pk "
            f"{delete_from}-{delete_to - 1} ({deleted}, {CLUSTERED_DELETED:.2%}) are deleted "
            f"(the {orphaned} licenses they owned lose their owner); {appended} new users "
            f"({CLUSTERED_APPENDED:.2%}) are appended"
        ),
    }


def scattered_change(*, rows: int, seed: int, superadmin_pk: int) -> dict:
    """1% of the users, picked at random over the whole table, renamed."""
    User = get_user_model()
    count = fraction_of(rows, SCATTERED_UPDATED)
    candidates = list(User.objects.exclude(pk=superadmin_pk).values_list("pk", flat=True))
    chosen = sorted(random.Random(seed + 2).sample(candidates, count))
    with transaction.atomic():
        for start in range(0, len(chosen), UPDATE_BATCH):
            User.objects.filter(pk__in=chosen[start : start + UPDATE_BATCH]).update(
                last_name=Concat(F("last_name"), Value("-Renamed"))
            )
    return {
        "users_updated": count,
        "definition": (
            f"scattered: {count} users ({SCATTERED_UPDATED:.0%}) chosen at random over the "
            "whole table get a new last name"
        ),
    }


def change_everywhere() -> dict:
    User = get_user_model()
    with transaction.atomic():
        changed = User.objects.update(email=Concat(Value("old."), F("email")))
    return {
        "users_updated": changed,
        "definition": f"everywhere: every user's email changed ({changed} users)",
    }


def empty_scope(*, superadmin_pk: int) -> dict[str, int]:
    """Delete every captured row but the acting SuperAdmin: what a restore starts from
    after the worst. Plain DELETEs, because the ORM's collector would load every user."""
    User = get_user_model()
    quote = connection.ops.quote_name
    # Children before parents, so no foreign key is left dangling at any point.
    plain = [
        User.groups.through,
        User.user_permissions.through,
        Group.permissions.through,
        License,
    ]
    deleted: dict[str, int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for model in plain:
            cursor.execute(f"DELETE FROM {quote(model._meta.db_table)}")
            deleted[model._meta.db_table] = cursor.rowcount
        user_table = User._meta.db_table
        cursor.execute(
            f"DELETE FROM {quote(user_table)} WHERE {quote(User._meta.pk.column)} <> %s",
            [superadmin_pk],
        )
        deleted[user_table] = cursor.rowcount
        cursor.execute(f"DELETE FROM {quote(Group._meta.db_table)}")
        deleted[Group._meta.db_table] = cursor.rowcount
    return deleted
