"""The restore engine on plain section streams: a snapshot taken in memory, the database
changed behind its back, and the snapshot brought back, all or nothing."""

import contextlib
import datetime

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection

from accounts.models import Role
from failsafe import capture, restore, restore_sql
from failsafe.api.serializers import RestorePlanSerializer
from failsafe.exceptions import CascadeRefused, RestoreVerificationFailed, SchemaMismatch
from failsafe.models import Backup
from failsafe.render import seed
from failsafe.snapshot import Section
from licensing.models import License, ServerLicense
from tests.factories import DEFAULT_PASSWORD, LicenseFactory, SuperAdminFactory, UserFactory

User = get_user_model()

pytestmark = pytest.mark.django_db


def snapshot() -> list[Section]:
    """The whole captured database, materialized: what an archive would hold."""
    return [Section(s.spec, list(s.rows)) for s in capture.live_sections()]


def opener(sections: list[Section]):
    """A sections factory for apply_restore over an in-memory snapshot."""
    return lambda: contextlib.nullcontext(sections)


def model_plan(plan, label):
    return next(m for m in plan.models if m.label == label)


@pytest.fixture
def world():
    """Two groups with permissions, four accounts with memberships, three licenses."""
    editors = Group.objects.create(name="editors")
    editors.permissions.set(Permission.objects.filter(codename__in=["view_license"]))
    auditors = Group.objects.create(name="auditors")
    root = SuperAdminFactory(username="root")
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob", role=Role.ADMIN)
    carol = UserFactory(username="carol")
    alice.groups.add(editors)
    bob.groups.add(editors, auditors)
    bob.user_permissions.add(Permission.objects.get(codename="change_license"))
    licenses = {
        "alice": LicenseFactory(owner=alice),
        "bob": LicenseFactory(owner=bob, license_type=License.Type.ENTERPRISE),
        "spare": LicenseFactory(owner=None),
    }
    return {
        "root": root,
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "editors": editors,
        "auditors": auditors,
        "licenses": licenses,
    }


@pytest.fixture
def tiny_batches(settings, monkeypatch):
    """Pages of two live rows and one write per batch: every boundary gets crossed."""
    settings.FAILSAFE = {"FETCH_SIZE": 2}
    monkeypatch.setattr(restore, "WRITE_BATCH", 1)


@pytest.fixture(params=["default batches", "tiny batches"])
def batching(request):
    if request.param == "tiny batches":
        request.getfixturevalue("tiny_batches")
    return request.param


# --- bringing data back --------------------------------------------------------------


def test_deleted_users_and_licenses_come_back_and_can_log_in(world, batching):
    backup = snapshot()
    bob_pk, bob_key = world["bob"].pk, world["licenses"]["bob"].key
    alice_key = world["licenses"]["alice"].key
    User.objects.filter(username="bob").delete()
    License.objects.filter(key=alice_key).delete()
    assert authenticate(username="bob", password=DEFAULT_PASSWORD) is None

    restore.apply_restore(sections_factory=opener(backup))

    bob = User.objects.get(username="bob")
    assert bob.pk == bob_pk
    assert bob.role == Role.ADMIN and bob.is_staff
    assert sorted(bob.groups.values_list("name", flat=True)) == ["auditors", "editors"]
    assert list(bob.user_permissions.values_list("codename", flat=True)) == ["change_license"]
    assert authenticate(username="bob", password=DEFAULT_PASSWORD) == bob
    # The license deletion of bob had only unset its owner; the restore gives it back.
    assert License.objects.get(key=bob_key).owner == bob
    assert License.objects.get(key=alice_key).owner == world["alice"]
    assert snapshot() == backup


def test_rows_created_after_the_snapshot_are_removed(world, batching):
    backup = snapshot()
    intruder = UserFactory(username="mallory", role=Role.SUPERADMIN)
    intruder.groups.add(world["editors"])
    LicenseFactory(owner=intruder)
    LicenseFactory(owner=world["alice"], instance_name="extra")
    Group.objects.create(name="intruders").user_set.add(world["carol"])

    plan = restore.apply_restore(sections_factory=opener(backup))

    assert not User.objects.filter(username="mallory").exists()
    assert not Group.objects.filter(name="intruders").exists()
    assert not License.objects.filter(instance_name="extra").exists()
    assert list(world["carol"].groups.all()) == []
    assert model_plan(plan, "accounts.user").sample_delete == ["mallory"]
    assert model_plan(plan, "licensing.license").delete == 2
    assert snapshot() == backup


def test_changed_fields_memberships_and_permissions_revert(world, batching):
    backup = snapshot()
    alice, bob, carol = world["alice"], world["bob"], world["carol"]
    # Behind the model's back, as an attacker with database access would.
    User.objects.filter(pk=carol.pk).update(
        role=Role.SUPERADMIN, is_staff=True, is_superuser=True, email="carol@evil.example"
    )
    alice.set_password("a new password of mallory's")
    alice.save()
    bob.groups.remove(world["editors"])
    bob.user_permissions.clear()
    carol.groups.add(world["auditors"])
    carol.user_permissions.add(Permission.objects.get(codename="delete_license"))
    world["editors"].permissions.clear()
    Group.objects.filter(pk=world["auditors"].pk).update(name="owners")
    License.objects.filter(owner=bob).update(status=License.Status.REVOKED, owner=carol)

    restore.apply_restore(sections_factory=opener(backup))

    carol.refresh_from_db()
    assert (carol.role, carol.is_staff, carol.is_superuser) == (Role.USER, False, False)
    assert carol.email == "carol@example.com"
    assert list(carol.groups.all()) == [] and list(carol.user_permissions.all()) == []
    assert sorted(bob.groups.values_list("name", flat=True)) == ["auditors", "editors"]
    assert list(bob.user_permissions.values_list("codename", flat=True)) == ["change_license"]
    assert list(world["editors"].permissions.values_list("codename", flat=True)) == ["view_license"]
    assert authenticate(username="alice", password=DEFAULT_PASSWORD) == alice
    assert authenticate(username="alice", password="a new password of mallory's") is None
    license = License.objects.get(key=world["licenses"]["bob"].key)
    assert (license.status, license.owner) == (License.Status.ACTIVE, bob)
    assert snapshot() == backup


def test_a_deleted_user_recreated_under_a_new_id_gets_the_old_id_back(world, batching):
    backup = snapshot()
    old_pk = world["bob"].pk
    User.objects.filter(pk=old_pk).delete()
    UserFactory(username="bob", password="someone else's password")

    restore.apply_restore(sections_factory=opener(backup))

    assert User.objects.get(username="bob").pk == old_pk
    assert authenticate(username="bob", password=DEFAULT_PASSWORD).pk == old_pk
    assert snapshot() == backup


def test_swapped_usernames_are_swapped_back(world, batching):
    backup = snapshot()
    alice, carol = world["alice"], world["carol"]
    User.objects.filter(pk=alice.pk).update(username="swapping")
    User.objects.filter(pk=carol.pk).update(username="alice")
    User.objects.filter(pk=alice.pk).update(username="carol")

    restore.apply_restore(sections_factory=opener(backup))

    assert User.objects.get(username="alice").pk == alice.pk
    assert User.objects.get(username="carol").pk == carol.pk
    assert snapshot() == backup


def test_a_restore_of_an_unchanged_database_changes_nothing(world):
    backup = snapshot()

    plan = restore.apply_restore(sections_factory=opener(backup))

    assert plan.is_noop
    assert snapshot() == backup


# --- the dry run ---------------------------------------------------------------------


def test_plan_counts_what_would_change_and_writes_nothing(world):
    backup = snapshot()
    User.objects.filter(username="bob").delete()
    UserFactory(username="mallory")
    User.objects.filter(username="alice").update(email="alice@evil.example")
    License.objects.filter(key=world["licenses"]["spare"].key).delete()
    before = snapshot()

    plan = restore.plan_restore(sections=backup)

    assert snapshot() == before
    users = model_plan(plan, "accounts.user")
    assert (users.insert, users.update, users.delete) == (1, 1, 1)
    assert (users.sample_insert, users.sample_update, users.sample_delete) == (
        ["bob"],
        ["alice"],
        ["mallory"],
    )
    licenses = model_plan(plan, "licensing.license")
    # The spare license comes back; bob's lost its owner when bob went, so it is updated.
    assert (licenses.insert, licenses.update, licenses.delete) == (1, 1, 0)
    assert licenses.sample_insert == [world["licenses"]["spare"].key]
    assert model_plan(plan, "auth.group").changes == 0
    assert not plan.is_noop and plan.cascades == []

    rendered = seed.restore_plan(plan)
    assert rendered["Models"][1] == {
        "Model": "accounts.user",
        "Insert": 1,
        "Update": 1,
        "Delete": 1,
        "SampleInsert": ["bob"],
        "SampleUpdate": ["alice"],
        "SampleDelete": ["mallory"],
    }
    api = RestorePlanSerializer(plan).data
    assert api["models"][1]["sample_delete"] == ["mallory"]
    assert rendered["IsNoop"] is False and api["is_noop"] is False


def test_plan_samples_are_capped(world, settings):
    settings.FAILSAFE = {"DETAIL_LIMIT": 2}
    backup = snapshot()
    for n in range(4):
        UserFactory(username=f"late{n}")

    plan = restore.plan_restore(sections=backup)

    users = model_plan(plan, "accounts.user")
    assert users.delete == 4
    assert users.sample_delete == ["late0", "late1"]


# --- all or nothing ------------------------------------------------------------------


def _mutate_everything(world):
    User.objects.filter(username="bob").delete()
    UserFactory(username="mallory").groups.add(world["auditors"])
    User.objects.filter(username="alice").update(email="alice@evil.example")
    Group.objects.create(name="intruders")
    License.objects.filter(owner=None).update(status=License.Status.REVOKED)


def test_a_failure_half_way_leaves_the_database_as_it_was(world, monkeypatch, batching):
    backup = snapshot()
    _mutate_everything(world)
    before = snapshot()
    finish = restore._ModelRestore.finish

    def finish_then_fail(self):
        plan = finish(self)
        # Groups and users are written by now; the licenses are the last section.
        if plan.label == "licensing.license":
            raise RuntimeError("disk full")
        return plan

    monkeypatch.setattr(restore._ModelRestore, "finish", finish_then_fail)

    with pytest.raises(RuntimeError, match="disk full"):
        restore.apply_restore(sections_factory=opener(backup))

    assert snapshot() == before
    assert User.objects.filter(username="mallory").exists()


def test_a_failed_verification_rolls_the_restore_back(world, monkeypatch):
    backup = snapshot()
    _mutate_everything(world)
    before = snapshot()
    SessionStore().create()
    monkeypatch.setattr(
        restore, "verify_identical", lambda sections: ["accounts.user bob: email differ"]
    )

    with pytest.raises(RestoreVerificationFailed, match="bob: email differ"):
        restore.apply_restore(sections_factory=opener(backup))

    assert snapshot() == before
    assert Session.objects.count() == 1


def test_a_backup_row_that_breaks_a_foreign_key_rolls_back(world):
    backup = snapshot()
    licenses = next(s for s in backup if s.spec.label == "licensing.license")
    owner_at = licenses.spec.fields.index("owner_id")
    licenses.rows[0][owner_at] = 987654321  # nobody has this id
    User.objects.filter(username="carol").delete()
    before = snapshot()

    with pytest.raises(RestoreVerificationFailed, match="constraint"):
        restore.apply_restore(sections_factory=opener(backup))

    assert snapshot() == before


# --- cascades ------------------------------------------------------------------------


def _log_about(user, times):
    content_type = ContentType.objects.get_for_model(User)
    for n in range(times):
        LogEntry.objects.create(
            user=user,
            content_type=content_type,
            object_id=str(user.pk),
            object_repr=f"change {n} by {user.username}",
            action_flag=ADDITION,
        )


def test_a_cascade_into_the_admin_log_is_refused_with_nothing_changed(world):
    _log_about(world["root"], 1)
    backup = snapshot()
    mallory = UserFactory(username="mallory")
    _log_about(mallory, 3)
    User.objects.filter(username="bob").delete()
    before = snapshot()

    plan = restore.plan_restore(sections=backup)
    assert [(hit.model, hit.count) for hit in plan.cascades] == [("admin.logentry", 3)]
    assert len(plan.cascades[0].examples) == 3
    assert seed.restore_plan(plan)["Cascades"][0]["Count"] == 3

    with pytest.raises(CascadeRefused) as refused:
        restore.apply_restore(sections_factory=opener(backup))

    assert str(refused.value) == (
        "Restore would also delete data outside the backup: 3 admin log entries "
        "(admin.logentry). Re-run with --allow-cascade to accept"
    )
    assert snapshot() == before
    assert LogEntry.objects.count() == 4


def test_a_refused_cascade_rolls_back_what_was_restored_before_it(world, batching):
    backup = snapshot()
    # Groups are restored before users: this rename is put back before the cascade is met.
    Group.objects.filter(name="editors").update(name="owners")
    User.objects.filter(username="alice").delete()
    _log_about(UserFactory(username="mallory"), 2)
    before = snapshot()

    with pytest.raises(CascadeRefused, match="2 admin log entries"):
        restore.apply_restore(sections_factory=opener(backup))

    assert snapshot() == before
    assert Group.objects.filter(name="owners").exists()
    assert not User.objects.filter(username="alice").exists()


def test_a_refusal_names_every_cascade_not_only_the_first_batchs(world, tiny_batches):
    backup = snapshot()
    _log_about(UserFactory(username="mallory"), 2)
    _log_about(UserFactory(username="trudy"), 1)

    with pytest.raises(CascadeRefused) as refused:
        restore.apply_restore(sections_factory=opener(backup))

    assert "3 admin log entries" in str(refused.value)
    assert User.objects.filter(username__in=["mallory", "trudy"]).count() == 2


def test_a_restore_reads_the_backup_once_and_verifies_by_digest(world):
    backup = snapshot()
    User.objects.filter(username="bob").delete()
    opened = []

    def counting_opener():
        opened.append(1)
        return contextlib.nullcontext(backup)

    restore.apply_restore(sections_factory=counting_opener)

    # The verification compares digests of the live rows with those of the rows the write
    # pass read (test_restore_speed_paths.py proves it still catches a wrong value).
    assert len(opened) == 1
    assert snapshot() == backup


def test_an_accepted_cascade_deletes_what_it_announced(world):
    _log_about(world["root"], 1)
    backup = snapshot()
    _log_about(UserFactory(username="mallory"), 2)
    User.objects.filter(username="bob").delete()

    plan = restore.apply_restore(sections_factory=opener(backup), allow_cascade=True)

    assert [(hit.model, hit.count) for hit in plan.cascades] == [("admin.logentry", 2)]
    assert not User.objects.filter(username="mallory").exists()
    # The log of an account the backup holds is none of the restore's business.
    assert list(LogEntry.objects.values_list("user__username", flat=True)) == ["root"]
    assert snapshot() == backup


def test_unsetting_a_reference_outside_the_backup_is_not_a_cascade(world):
    backup = snapshot()
    mallory = UserFactory(username="mallory")
    ServerLicense.objects.create(failsafe_password_set_by=mallory)

    plan = restore.apply_restore(sections_factory=opener(backup))

    assert plan.cascades == []
    assert ServerLicense.objects.get().failsafe_password_set_by is None


# --- after the writes ----------------------------------------------------------------


def test_a_restore_ends_every_session(world):
    backup = snapshot()
    for _ in range(2):
        SessionStore().create()

    plan = restore.apply_restore(sections_factory=opener(backup))

    assert plan.sessions_flushed == 2
    assert Session.objects.count() == 0


def test_flush_sessions_says_how_many_it_ended(db):
    for _ in range(3):
        SessionStore().create()

    assert restore.flush_sessions() == 3
    assert restore.flush_sessions() == 0


def test_verify_names_differences_until_the_restore_removes_them(world):
    backup = snapshot()
    User.objects.filter(username="bob").delete()
    UserFactory(username="mallory")
    world["alice"].set_password("changed")
    world["alice"].save()

    differences = restore.verify_identical(sections=backup)

    assert "accounts.user bob: in the backup, missing from the database" in differences
    assert "accounts.user mallory: in the database, not in the backup" in differences
    assert "accounts.user alice: password differ" in differences
    # Names columns, never values: no password hash leaks into the report.
    alice_hash = User.objects.get(username="alice").password
    assert not any(alice_hash in line for line in differences)

    restore.apply_restore(sections_factory=opener(backup))

    assert restore.verify_identical(sections=backup) == []


def test_verify_lists_at_most_the_detail_limit(world, settings):
    settings.FAILSAFE = {"DETAIL_LIMIT": 2}
    backup = snapshot()
    for n in range(5):
        UserFactory(username=f"late{n}")

    differences = restore.verify_identical(sections=backup)

    assert differences == [
        "accounts.user late0: in the database, not in the backup",
        "accounts.user late1: in the database, not in the backup",
        "and 3 more differences",
    ]


def test_new_users_after_restoring_high_ids_do_not_collide(world):
    """Rows come back with their ids; the id sequence must move past them (PostgreSQL)."""
    highest = UserFactory(username="ordinary").pk
    # Ids the sequence has not handed out yet, as a restore of another era would bring.
    for offset in (1, 2, 3):
        UserFactory(id=highest + offset, username=f"early{offset}")
    backup = snapshot()
    User.objects.filter(username__startswith="early").delete()

    restore.apply_restore(sections_factory=opener(backup))

    newcomer = UserFactory(username="newcomer")
    assert newcomer.pk > highest + 3
    assert User.objects.filter(username__startswith="early").count() == 3


# --- schema --------------------------------------------------------------------------


def test_check_schema_accepts_the_current_migrations(db):
    restore.check_schema(
        archived_migrations=capture.captured_migrations(),
        sections_specs=[s.spec for s in capture.live_sections()],
    )


def test_check_schema_refuses_a_backup_behind_the_database(db):
    archived = capture.captured_migrations()
    applied_auth = archived["auth"]
    archived["auth"] = applied_auth[:1]

    with pytest.raises(SchemaMismatch) as refused:
        restore.check_schema(archived_migrations=archived)

    assert str(refused.value) == (
        "Backup schema is incompatible with the current migrations: auth: backup has "
        f"{applied_auth[0]} only, database also has {', '.join(applied_auth[1:])}"
    )


def test_check_schema_refuses_a_backup_ahead_of_the_database(db):
    archived = capture.captured_migrations()
    archived["accounts"] = [*archived["accounts"], "0002_from_the_future"]

    with pytest.raises(SchemaMismatch, match="accounts: database has 0001_initial only, backup"):
        restore.check_schema(archived_migrations=archived)


def test_a_section_with_other_columns_is_refused_before_anything_changes(world):
    backup = snapshot()
    users = next(s for s in backup if s.spec.label == "accounts.user")
    users.spec = capture.ModelSpec(
        users.spec.label, tuple(f for f in users.spec.fields if f != "role"), users.spec.m2m
    )
    with pytest.raises(SchemaMismatch, match="accounts.user: backup lacks role"):
        restore.check_schema(
            archived_migrations=capture.captured_migrations(),
            sections_specs=[s.spec for s in backup],
        )
    User.objects.filter(username="bob").delete()
    before = snapshot()

    with pytest.raises(SchemaMismatch, match="accounts.user: backup lacks role"):
        restore.apply_restore(sections_factory=opener(backup), allow_cascade=True)

    assert snapshot() == before


# --- writing rows with plain SQL -----------------------------------------------------


def _rows(model, fields):
    return [
        row for block in capture.row_blocks(model.objects.order_by("pk"), fields) for row in block
    ]


def test_rows_written_back_read_exactly_as_they_were_for_every_column_type(db):
    """UUIDs, JSON, bigints, nulls and datetimes go through the fields' own preparation."""
    moment = datetime.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=datetime.UTC)
    Backup.objects.create(
        type=Backup.Type.MANUAL,
        reason="línea\nzwei",
        created_at=moment,
        created_by_id=2**40,
        is_safe=True,
        state={"TotalUsers": 3, "nested": {"list": [1, 2.5, None, "x"]}},
        key_id=-(2**31),
    )
    Backup.objects.create(type=Backup.Type.PRE_RESTORE, created_at=moment, finished_at=moment)
    fields = capture.spec_for(Backup).fields
    before = _rows(Backup, fields)
    Backup.objects.all().delete()

    restore_sql.SqlTable(Backup, fields).insert(before)

    assert _rows(Backup, fields) == before


def test_datetimes_with_another_offset_are_stored_as_the_same_moment(db):
    user = UserFactory(username="alice")
    fields = capture.spec_for(User).fields
    (row,) = _rows(User, fields)
    User.objects.all().delete()
    paris = datetime.timezone(datetime.timedelta(hours=2))
    row[fields.index("date_joined")] = datetime.datetime(2024, 6, 1, 14, 30, tzinfo=paris)

    restore_sql.SqlTable(User, fields).insert([row])

    joined = User.objects.get(pk=user.pk).date_joined
    assert joined == datetime.datetime(2024, 6, 1, 12, 30, tzinfo=datetime.UTC)


def test_an_update_sets_only_the_columns_it_is_given(world):
    fields = capture.spec_for(User).fields
    alice = next(row for row in _rows(User, fields) if row[fields.index("username")] == "alice")
    alice[fields.index("email")] = "alice@new.example"
    alice[fields.index("first_name")] = "Not written"

    restore_sql.SqlTable(User, fields).update([alice], [fields.index("email")])

    written = User.objects.get(username="alice")
    assert (written.email, written.first_name) == ("alice@new.example", "")


def test_a_many_to_many_sequence_left_behind_does_not_break_the_restore(world):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no sequences: its keys follow the highest rowid")
    backup = snapshot()
    world["bob"].groups.clear()
    # Four pairs with consecutive keys, all on users the restore reaches after bob.
    newcomer = UserFactory(username="zed")
    world["carol"].groups.add(world["editors"], world["auditors"])
    newcomer.groups.add(world["editors"], world["auditors"])
    through = User.groups.through
    # A sequence behind the table's keys, as a bad import or an earlier restore leaves it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)",
            [
                through._meta.db_table,
                through.objects.filter(user=world["carol"]).order_by("id")[0].id,
            ],
        )

    restore.apply_restore(sections_factory=opener(backup))

    assert set(world["bob"].groups.values_list("name", flat=True)) == {"editors", "auditors"}
    assert set(world["alice"].groups.values_list("name", flat=True)) == {"editors"}
    assert not world["carol"].groups.exists()
    # The next pair added after the restore gets a fresh key too.
    world["carol"].groups.add(world["editors"])
    assert through.objects.filter(user=world["carol"]).count() == 1

