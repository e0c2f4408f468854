"""Restore, all or nothing, behind the failsafe password and a pre-restore backup."""

from __future__ import annotations

import contextlib
import datetime

from django.contrib.auth import get_user_model
from django.utils import timezone

from .. import archives, audit, investigate, journal, oplock
from .. import restore as restore_engine
from ..exceptions import (
    ArchiveCorrupt,
    CascadeRefused,
    ConfirmationRequired,
    InvalidSelection,
    RestoreConflict,
    ServerFailure,
    StorageFull,
    as_refusal,
    one_line,
)
from ..models import AuditEvent, Backup
from ..progress import Progress, reporting, stage
from ..snapshot import iso
from . import alerts
from .backups import take_backup, usable_backup
from .guards import (
    ACTION_EVIDENCE,
    ACTION_RESTORE,
    Actor,
    audited,
    require_failsafe_password,
    require_superadmin,
)
from .results import RestoreResult


def restore(
    *,
    actor: Actor,
    backup_id,
    password: str | None = None,
    dry_run: bool = False,
    allow_cascade: bool = False,
    without_pre_restore_backup: bool = False,
    confirmation: str = "",
    progress: Progress | None = None,
    only: list[str] | None = None,
    damage: list[str] | None = None,
    accept_conflicts: bool = False,
    force_password_reset: bool = False,
    undo_actor: str | None = None,
    since=None,
    at=None,
) -> RestoreResult:
    """Make the captured models exactly what the backup holds, or change nothing.

    A backup of the current state is taken first. When it cannot be written (the disk the
    backups live on is full), the operator may still restore by naming that choice:
    `without_pre_restore_backup` with the backup's id typed as `confirmation`.

    With `only` ("accounts.user:alice,bob", natural keys or "#pk") or `damage` (kinds:
    removed, modified, added; an empty list means removed and modified), only those
    records are restored and everything else stays (restore.apply_selective); a selected
    record changed again after the damage is refused unless `accept_conflicts`. With
    `undo_actor` and `since` (an ISO time), the records that user touched since then, as
    the audit trail, the admin log and (PostgreSQL) the change journal record it. With
    `only` and `at` (an ISO time after the backup, PostgreSQL only), each selected record
    is restored to its state at that moment as the change journal has it, else the backup's.

    Any restore ends the sessions and revokes the API tokens of the accounts whose password,
    role, active flag or groups it changes (a full one ends everyone's); with
    `force_password_reset` those accounts must change their password at their next login.
    """
    with (
        audited(actor, ACTION_RESTORE, target=str(backup_id)[:64]) as details,
        reporting(progress),
    ):
        details.update(dry_run=dry_run, allow_cascade=allow_cascade)
        if without_pre_restore_backup:
            details["without_pre_restore_backup"] = True
        if force_password_reset:
            details["force_password_reset"] = True
        require_superadmin(actor)
        selection = _selection(only, damage, undo_actor, since)
        moment = _parse_at(at, only) if at is not None else None
        if selection is not None and moment is None:
            details.update(selection.describe(), accept_conflicts=accept_conflicts)
        backup = usable_backup(backup_id)
        if moment is not None:
            selection = _at_selection(selection, moment, backup)
            details.update(selection.describe(), accept_conflicts=accept_conflicts)
        if without_pre_restore_backup and not dry_run:
            _require_confirmation(backup, confirmation)
        if not dry_run:
            require_failsafe_password(actor, ACTION_RESTORE, password)

        # Refuse a damaged or foreign-schema archive before anything is touched. Without a
        # pre-restore backup nothing is touched before the restore's own reading of the
        # archive, which refuses a damaged one as well (rolled back): no check first then,
        # which would decode the whole backup once more.
        if dry_run or not without_pre_restore_backup:
            archives.verify(backup)
        restore_engine.check_schema(
            archived_migrations=backup.state.get("SystemMetrics", {}).get("Migrations", {})
        )
        total_rows = archives.rows_counted(backup.state)
        later = _later_backup(backup) if selection is not None and selection.damage else None
        later_factory = (lambda: archives.open_sections(later)) if later is not None else None
        later_name = f"backup {later.id}" if later is not None else ""

        if dry_run and selection is not None:
            with stage("Plan restore", total_rows):
                plan = restore_engine.plan_selective(
                    sections_factory=lambda: archives.open_sections(backup),
                    selection=selection,
                    later_factory=later_factory,
                    later_name=later_name,
                )
            _own_account(plan, actor)
            details.update(changes=_plan_counts(plan))
            return RestoreResult(backup=backup, plan=plan, dry_run=True)

        if dry_run:
            with stage("Plan restore", total_rows), archives.open_sections(backup) as stream:
                plan = restore_engine.plan_restore(sections=stream, own_pk=_own_pk(actor))
            _own_account(plan, actor)
            details.update(changes=_plan_counts(plan))
            return RestoreResult(backup=backup, plan=plan, dry_run=True)

        with oplock.operation_lock(holder=f"restore of {backup.id} by {actor.username}"):
            pre_restore = None if without_pre_restore_backup else _pre_restore_backup(actor, backup)
            details["pre_restore_backup_id"] = str(pre_restore.id) if pre_restore else None
            # Writes, verification against the archive and the session flush happen in one
            # transaction inside the engine: any failure rolls all of it back.
            try:
                if selection is not None:
                    with stage("Restore selected records", total_rows):
                        plan = restore_engine.apply_selective(
                            sections_factory=lambda: archives.open_sections(backup),
                            selection=selection,
                            later_factory=later_factory,
                            later_name=later_name,
                            allow_cascade=allow_cascade,
                            accept_conflicts=accept_conflicts,
                            force_password_reset=force_password_reset,
                            keep_evidence=_evidence_keeper(actor),
                        )
                else:
                    plan = restore_engine.apply_restore(
                        sections_factory=lambda: archives.open_sections(backup),
                        allow_cascade=allow_cascade,
                        total_rows=total_rows,
                        keep_evidence=_evidence_keeper(actor),
                        force_password_reset=force_password_reset,
                        own_pk=_own_pk(actor),
                    )
            except (CascadeRefused, InvalidSelection, RestoreConflict):
                # Refused, not failed: the database is as it was, so is the store.
                if pre_restore is not None:
                    _forget(pre_restore)
                    details["pre_restore_backup_id"] = None
                raise
            except ArchiveCorrupt:
                # Damaged since the check, or not checked (no pre-restore backup): nothing
                # was written, and the chunk index must forget the damaged chunk.
                _forget_damaged_chunks(backup)
                raise
        _own_account(plan, actor)
        details.update(
            changes=_plan_counts(plan),
            sessions_flushed=plan.sessions_flushed,
            tokens_revoked=plan.tokens_revoked,
            contained_accounts=len(plan.accounts) + plan.accounts_unlisted,
            restored_at=timezone.now(),
        )
        result = RestoreResult(
            backup=backup,
            plan=plan,
            dry_run=False,
            pre_restore_backup=pre_restore,
            sessions_flushed=plan.sessions_flushed,
            tokens_revoked=plan.tokens_revoked,
            restored_at=timezone.now(),
        )
        alerts.restore_done(actor=actor, result=result)
        return result


def _evidence_keeper(actor: Actor):
    """Copies the admin log entries a cascade deletes into the audit trail, one event each."""

    def keep(entries) -> None:
        for entry in entries:
            content_type = entry.content_type
            audit.record(
                action=ACTION_EVIDENCE,
                outcome=AuditEvent.Outcome.SUCCESS,
                source=actor.source,
                actor=actor.user,
                target=f"admin log entry #{entry.pk}",
                details={
                    "when": entry.action_time,
                    "by": entry.user.get_username() if entry.user_id else None,
                    "record": f"{content_type.app_label}.{content_type.model} "
                    f"#{entry.object_id} {entry.object_repr}"
                    if content_type
                    else entry.object_repr,
                    "change": entry.get_change_message(),
                    "flag": entry.action_flag,
                },
                ip=actor.ip,
            )

    return keep


def _forget_damaged_chunks(backup: Backup) -> None:
    """Check the damaged backup as `verify` does, so that the chunk index forgets the
    damaged chunk and no later backup reuses it unread."""
    with contextlib.suppress(ArchiveCorrupt):
        archives.verify(backup)


def _forget(pre_restore: Backup) -> None:
    """Remove a pre-restore backup whose restore was refused (its chunks go with gc)."""
    archives.delete(pre_restore)
    pre_restore.delete()


def _require_confirmation(backup: Backup, confirmation: str) -> None:
    if (confirmation or "").strip().lower() != str(backup.id):
        raise ConfirmationRequired(
            "Restoring without a pre-restore backup keeps no copy of the current state: "
            f"confirm by typing the backup id {backup.id}"
        )


def _pre_restore_backup(actor: Actor, backup: Backup) -> Backup:
    try:
        return take_backup(
            actor=actor,
            backup_type=Backup.Type.PRE_RESTORE,
            reason=f"Automatic backup before restoring {backup.id}",
        )
    except Exception as exc:
        refusal = as_refusal(exc, doing="The pre-restore backup")
        failure_class = StorageFull if isinstance(refusal, StorageFull) else ServerFailure
        failure = failure_class(
            f"{one_line(refusal)}. Nothing was restored. Free space and retry, or restore "
            "without a pre-restore backup (--without-pre-restore-backup, confirmed with the "
            "backup id)"
        )
        failure.remedies = {
            "--without-pre-restore-backup, confirmed with the backup id": {
                "api": '"without_pre_restore_backup": true, with "confirm": the backup id',
                "admin": 'the box "Restore without a backup of the current state", with the '
                "backup id typed below it",
            }
        }
        raise failure from exc


def _plan_counts(plan: restore_engine.RestorePlan) -> dict:
    """What the audit trail keeps of a plan: counts only, no record names."""
    return {
        m.label: {"insert": m.insert, "update": m.update, "delete": m.delete} for m in plan.models
    }


def _selection(only: list[str] | None, damage: list[str] | None, undo_actor=None, since=None):
    """The records a selective restore brings back; None for a full restore."""
    if undo_actor is not None or since is not None:
        if only is not None or damage is not None:
            raise InvalidSelection(
                "Choose one selection: records (--only), the damage (--damage) or an actor's "
                "changes (--undo-actor with --since), not several"
            )
        return _actor_selection(undo_actor, since)
    if only is not None and damage is not None:
        raise InvalidSelection("Choose either records (--only) or the damage (--damage), not both")
    if damage is not None:
        return restore_engine.Selection(damage=restore_engine.parse_damage(damage))
    if only is not None:
        return restore_engine.Selection(only=restore_engine.parse_only(only))
    return None


def _past_moment(option: str, value, future: str) -> datetime.datetime:
    """An ISO time given to `option`, aware (UTC when it names no zone) and not ahead of now;
    `future` ends the refusal of a moment still to come."""
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = str(value or "").strip()
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            shown = text if len(text) <= 40 else text[:40] + "…"
            raise InvalidSelection(
                f"{option} {shown!r} is not an ISO time: write e.g. 2026-12-03T14:00:00Z"
            ) from None
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, datetime.UTC)
    if moment > timezone.now():
        raise InvalidSelection(f"{option} {iso(moment)} is in the future: {future}")
    return moment


def _parse_since(since) -> datetime.datetime:
    return _past_moment("--since", since, "nobody changed anything since then yet")


AT_NEEDS_JOURNAL = "--at needs the PostgreSQL change journal; this server runs SQLite"


def _parse_at(at, only) -> datetime.datetime:
    """The moment of --at: only with --only, only where the change journal is."""
    if not journal.available():
        raise InvalidSelection(AT_NEEDS_JOURNAL)
    if only is None:
        raise InvalidSelection(
            "--at needs --only MODEL:KEY,KEY: name the records to bring back to that moment"
        )
    return _past_moment("--at", at, "choose a moment past")


def _at_selection(selection, moment: datetime.datetime, backup: Backup):
    """`selection` (by --only) brought to `moment`, which must follow the backup."""
    if moment < backup.created_at:
        raise InvalidSelection(
            f"--at {iso(moment)} is before backup {backup.id} ({iso(backup.created_at)}): "
            "choose a moment after it, or an older backup"
        )

    def state_at(spec, pks):
        return journal.rows_at(spec=spec, pks=pks, after=backup.created_at, at=moment)

    return restore_engine.Selection(only=selection.only, at=moment, state_at=state_at)


def _actor_selection(undo_actor, since) -> restore_engine.Selection:
    """The records `undo_actor` touched since `since`, as a selection of them by pk or key."""
    username = str(undo_actor or "").strip()
    if not username:
        raise InvalidSelection("--since needs --undo-actor USERNAME: whose changes to undo")
    if since is None or not str(since).strip():
        raise InvalidSelection(
            f"--undo-actor {username} needs --since ISO_TIME: undo the changes made since when"
        )
    moment = _parse_since(since)
    touched = investigate.touched_by(username=username, since=moment)
    user_model = get_user_model()
    exists = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).exists()
    if not exists and not touched.known:
        shown = username if len(username) <= 40 else username[:40] + "…"
        raise InvalidSelection(
            f"Unknown user {shown!r}: no account has that name and no log names it"
        )
    only: dict[str, list[str]] = {}
    for label, key in touched.records:
        only.setdefault(label, []).append(key)
    if not only:
        raise InvalidSelection(f"{username} changed no captured record since {iso(moment)}")
    return restore_engine.Selection(
        only=only, actor=username, since=moment, evidence=dict(touched.records)
    )


def _later_backup(backup: Backup) -> Backup | None:
    """The newest complete backup taken after `backup`: it saw the damage, if any did."""
    return (
        Backup.objects.filter(status=Backup.Status.COMPLETE, created_at__gt=backup.created_at)
        .exclude(pk=backup.pk)
        .order_by("-created_at")
        .first()
    )


def _own_pk(actor: Actor):
    return None if actor.user is None else actor.user.pk


def _own_account(plan: restore_engine.RestorePlan, actor: Actor) -> None:
    """What the restore changes of the acting SuperAdmin's own account, said in the plan."""
    if actor.user is None:
        return
    for account in plan.accounts:
        if str(account.pk) == str(actor.user.pk):
            plan.own_account = list(account.changes)
