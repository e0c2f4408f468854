"""The commands' human text: what `manage.py failsafe_*` prints without --json.

Each function takes the same result object the seed renderer takes and returns the lines
a person reads at a terminal.
"""

from __future__ import annotations

import zoneinfo

from ..exceptions import one_line
from ..snapshot import iso
from . import seed

__all__ = ["one_line"]  # the doors' one refusal line lives with the refusals themselves


def _bullets(title: str, items) -> list[str]:
    if not items:
        return []
    return [title] + [f"  - {item}" for item in items]


def status(result) -> str:
    lines = [
        f"Failsafe password: {'set' if result.failsafe_password_set else 'NOT SET'}",
        f"Backups: {result.total_backups} ({result.safe_backups} safe)",
        f"Last safe backup: {result.last_safe_backup_id or 'none'}",
        f"Last backup at: {iso(result.last_backup_at) or 'never'}",
        f"Last proven restorable backup: {verified_restore(result.last_verified_restore)}",
        f"System status: {result.system_status}",
    ]
    lines += _bullets("Problems:", result.problems)
    lines += replica_lines(result.replicas)
    lines += [
        f"LOCKED: {entry.action} until {iso(entry.locked_until, timespec='seconds')}"
        for entry in result.lockouts
    ]
    return "\n".join(lines)


def verified_restore(proof) -> str:
    if proof is None:
        return "none yet: run failsafe_drill"
    return f"{proof.backup_id}, drilled {_duration(proof.age_seconds)} ago"


def drill(record) -> str:
    lines = [record.summary]
    for label, check in (record.models_checked or {}).items():
        line = f"  {label}: {check.get('found')} of {check.get('expected')} rows read back"
        if check.get("differences"):
            line += f", {check['differences']} differ: " + "; ".join(check.get("examples", []))
        else:
            line += " as archived"
        lines.append(line)
    return "\n".join(lines)


def _ids(key_ids) -> str:
    return ", ".join(str(key_id) for key_id in key_ids) or "none"


def keys_status(result) -> str:
    lines = [f"Archive keyset: {result.keyset_source or 'NONE'}"]
    if result.keyset_error:
        lines.append(f"  {result.keyset_error}")
    for use in result.keys:
        held = "primary" if use.primary else "held" if use.held else "MISSING"
        lines.append(f"  key {use.key_id}: {held}, {use.backups} backup(s)")
    if result.backups_without_key_id:
        lines.append(f"  {result.backups_without_key_id} backup(s) record no key id")
    lines.append(f"Audit key: {result.audit_key_source}")
    chunk = result.chunk_key_source
    if result.imported_chunk_key_ids:
        chunk += f"; imported for key(s) {_ids(result.imported_chunk_key_ids)}"
    lines.append(f"Chunk-naming keys: {chunk}")
    if result.missing:
        lines.append(
            f"Backups need key(s) {_ids(use.key_id for use in result.missing)} the keyset "
            "does not hold: import the key material (manage.py failsafe_keys import)"
        )
    return "\n".join(lines)


def keys_rotated(result) -> str:
    return "\n".join(
        [
            result.message,
            f"Primary key: {result.primary_key_id} (was {result.previous_primary_key_id})",
            f"Keys held: {_ids(result.key_ids)}",
            result.note,
        ]
    )


def keys_exported(result) -> str:
    return "\n".join(
        [
            f"{result.message} to {result.path}",
            f"Archive keys: {_ids(result.key_ids)} (primary {result.primary_key_id}), "
            "with the audit key and the chunk-naming keys",
            result.note,
        ]
    )


def keys_imported(result) -> str:
    installed = result.installed
    lines = [result.message]
    if installed.keyset_created:
        lines.append(f"Archive keyset written to {installed.keyset_file}")
    elif installed.added_key_ids:
        lines.append(
            f"Added key(s) {_ids(installed.added_key_ids)} to {installed.keyset_file} "
            "(its primary key is unchanged)"
        )
    else:
        lines.append(f"The keyset ({installed.keyset_file}) already holds every imported key")
    if installed.audit_key_installed:
        lines.append("Audit key installed")
    elif installed.audit_key_kept:
        lines.append(f"Audit key not installed: {installed.audit_key_kept}")
    if installed.chunk_keys_installed:
        installed_for = _ids(installed.chunk_keys_installed)
        lines.append(f"Chunk-naming keys installed for key(s) {installed_for}")
    if result.still_missing:
        lines.append(
            f"Still missing: key(s) {_ids(sorted(result.still_missing))}, needed by "
            f"{sum(result.still_missing.values())} backup(s)"
        )
    return "\n".join(lines)


def help(commands: list[tuple[str, str]], manage_commands: list[str]) -> str:
    width = max(len(usage) for usage, _ in commands)
    lines = [seed.HELP_TITLE] + [f"  {usage:<{width}}  {text}" for usage, text in commands]
    lines.append("manage.py equivalents:")
    lines += [f"  {name}" for name in manage_commands]
    return "\n".join(lines)


def backup_line(backup) -> str:
    state = backup.state or {}
    safe = "SAFE" if backup.is_safe else "    "
    return (
        f"{backup.id}  {backup.type:<11} {safe} {backup.status:<8} "
        f"{backup.created_at:%Y-%m-%d %H:%M:%S}  users={state.get('TotalUsers', '-')} "
        f"licenses={state.get('TotalLicenses', '-')} sessions={state.get('ActiveSessions', '-')}"
        + (f"  {backup.reason}" if backup.reason else "")
    )


def backup_list(backups, *, filters: str = "") -> str:
    """The list, or why it is empty: none yet, or none matching `filters` (as typed)."""
    if backups:
        return "\n".join(backup_line(b) for b in backups)
    return f"No backups match {filters}." if filters else "No backups yet."


def backup_created(backup) -> str:
    return f"{seed.BACKUP_CREATED}: {backup_line(backup)}"


def marked_safe(backup) -> str:
    return f"Backup {backup.id} marked as safe environment"


def comparison(result) -> str:
    lines = [result.message]
    if result.baseline_label and result.current_label:
        lines.append(f"From {result.baseline_label} to {result.current_label}")
    elif result.safe_backup_id:
        lines.append(f"Baseline: {result.safe_backup_id}")
    lines += _bullets("Issues:", result.issues)
    lines += _bullets("Changes:", result.changes)
    return "\n".join(lines)


def trigger(result) -> str:
    report = result.investigation
    lines = [
        f"{result.message}: {result.backup.id} at {iso(result.backup.created_at)}",
        comparison(report.comparison),
    ]
    lines += _bullets("Recommendations:", report.recommendations)
    lines += who_did_what(report.root_cause)
    return "\n".join(lines)


def who_did_what(cause) -> list[str]:
    """The events that touched the changed records, per actor, each with its outcome; then
    the changes nobody is on record for, which no actor listed above is implied to own."""
    unattributed = cause.no_recorded_actor.summary
    if not cause.by_actor and not unattributed:
        return journal_lines(cause.journal)
    lines = [f"Who did what since {iso(cause.since)}:"]
    for actor, hints in cause.by_actor.items():
        lines.append(f"  {actor}:")
        lines += [
            f"    - {iso(hint.when)} [{hint.source}] {hint.outcome or '-'}: {hint.action}"
            + (f" on {hint.target}" if hint.target else "")
            for hint in hints
        ]
        if cause.omitted.get(actor):
            lines.append(f"    - and {cause.omitted[actor]} more")
    if unattributed:
        lines.append(f"  {unattributed}")
    return lines + journal_lines(cause.journal)


def journal_lines(report) -> list[str]:
    """The change journal's entries on the changed records (PostgreSQL only): who, by the
    Django user or else the database role, when, and what."""
    if not report or not (report.entries or report.omitted or report.problem):
        return []
    lines = ["Change journal (database triggers; raw SQL included):"]
    if report.problem:
        lines.append(f"  {report.problem}")
    lines += [
        f"  - {iso(entry.when)} {entry.who}: {entry.what} on {entry.target}"
        for entry in report.entries
    ]
    if report.omitted:
        lines.append(f"  - and {report.omitted} more")
    return lines


def investigation(report) -> str:
    """An investigation read back later (failsafe_investigation): what the trigger showed,
    and who did what since the last safe backup."""
    lines = [
        f"{report.status} against the last safe backup {report.last_safe_backup or '(none)'}",
        comparison(report.comparison),
    ]
    lines += _bullets("Recommendations:", report.recommendations)
    lines += who_did_what(report.root_cause)
    return "\n".join(lines)


def _plan_lines(plan) -> list[str]:
    lines = []
    for model in plan.models:
        lines.append(
            f"  {model.label}: {model.insert} to insert, {model.update} to update, "
            f"{model.delete} to delete"
        )
        # The records by name, as many as the plan names (DETAIL_LIMIT per kind).
        for verb, names, count in (
            ("insert", model.sample_insert, model.insert),
            ("update", model.sample_update, model.update),
            ("delete", model.sample_delete, model.delete),
        ):
            if names:
                more = f" and {count - len(names)} more" if count > len(names) else ""
                lines.append(f"    {verb}: {', '.join(names)}{more}")
    lines += _bullets(
        "Would also delete outside the backup:",
        [f"{hit.count} {hit.model}" for hit in plan.cascades],
    )
    if plan.selective:
        lines += _bullets("Selected records:", [record.describe() for record in plan.records])
    lines += _bullets("Conflicts:", list(plan.conflicts))
    return lines


def restore_plan(result) -> str:
    """A dry run shown as what it is before a restore: the plan, nothing done yet."""
    lines = [f"Restoring backup {result.backup.id} would change:"]
    lines += _plan_lines(result.plan) if not result.plan.is_noop else ["  nothing"]
    if result.own_account_warning:
        lines.append(result.own_account_warning)
    lines += _bullets(
        "Accounts whose sessions and API tokens end:",
        _account_lines(result.plan),
    )
    lines.append(
        "First a backup of the current state is taken; afterwards the sessions and API "
        "tokens of the accounts listed end."
        if result.plan.selective
        else "First a backup of the current state is taken; afterwards every session ends "
        "and every API token is revoked."
    )
    return "\n".join(lines)


def _account_lines(plan) -> list[str]:
    lines = [account.describe() for account in plan.accounts]
    if plan.accounts_unlisted:
        lines.append(f"and {plan.accounts_unlisted} more")
    return lines


def restore(result) -> str:
    lines = [f"{result.message} (backup {result.backup.id})"]
    lines += _plan_lines(result.plan)
    if result.pre_restore_backup:
        lines.append(f"Pre-restore backup: {result.pre_restore_backup.id}")
    if result.verification is not None:
        lines.append(
            "Verified: the database is identical to the backup"
            if result.verification.identical
            else "NOT identical: " + "; ".join(result.verification.differences)
        )
        lines.append(
            f"{result.sessions_flushed} sessions ended and {result.tokens_revoked} API tokens "
            + (
                "revoked: the accounts listed log in again"
                if result.selective
                else "revoked: everyone logs in again"
            )
        )
        lines += _bullets("Accounts contained:", _account_lines(result.plan))
        if result.plan.password_reset:
            lines.append("Those accounts must change their password at their next login")
    elif result.own_account_warning:
        lines.append(result.own_account_warning)
    lines += _bullets("Next steps:", result.next_steps)
    return "\n".join(lines)


def verification(results) -> str:
    return "\n".join(
        f"{r.backup.id}  OK ({sum(r.counts.values())} records)"
        if r.ok
        else f"{r.backup.id}  CORRUPT: {r.error}"
        for r in results
    )


def repair(result) -> str:
    lines = [line for line in (verification(result.results), result.message) if line]
    for r in result.still_damaged:
        lost = result.lost_chunks.get(str(r.backup.id), 0)
        why = f"{lost} of its chunks hold rows that are no longer live" if lost else r.error
        lines.append(f"Stays damaged: backup {r.backup.id} ({why})")
    return "\n".join(lines)


def deleted(result) -> str:
    text = f"Backup {result.backup_id} deleted"
    if result.note:
        text += f"\n{result.note}"
    for line in replica_cleanup(result.replicas):
        text += f"\n{line}"
    return text


def garbage(report) -> list[tuple[str, bool]]:
    """(line, is_alarm) pairs: the command colours the alarms."""
    verb = "would delete" if report.dry_run else "deleted"
    lines = [
        (
            f"{report.deleted} unused chunks {verb} ({report.bytes_freed} bytes); "
            f"{report.referenced} of {report.chunks} chunks in use by {report.manifests} "
            f"manifests; {report.kept_recent} unused but younger than "
            f"{report.grace_seconds} s kept",
            False,
        )
    ]
    if report.temp_files_deleted:
        lines.append((f"{report.temp_files_deleted} leftover temporary files {verb}", False))
    if report.missing:
        lines.append(
            (
                f"{report.missing} chunks named by manifests are missing: "
                "run failsafe_verify --all",
                True,
            )
        )
    if report.missing_manifests:
        lines.append(
            ("Backups whose manifest is missing: " + ", ".join(report.missing_manifests), True)
        )
    if report.orphan_manifests:
        lines.append(
            (
                "Manifests no backup row points at (kept): " + ", ".join(report.orphan_manifests),
                False,
            )
        )
    lines += [
        (line, "not cleaned up" in line)
        for line in replica_cleanup(getattr(report, "replicas", ()))
    ]
    return lines


def audit_line(event) -> str:
    return (
        f"#{event.seq:<6} {event.created_at:%Y-%m-%d %H:%M:%S} {event.outcome:<7} "
        f"{event.action:<24} {event.actor_username or '-':<16} {event.source:<8} {event.target}"
    )


def audit_events(events) -> str:
    return "\n".join(audit_line(e) for e in events) or "No audit events."


def audit_chain(result) -> str:
    if result.ok:
        lines = [f"Audit chain intact: {result.checked} events verified"]
    elif result.first_broken_seq is None:
        lines = [f"AUDIT CHAIN NOT VERIFIED: {result.reason}"]
    else:
        lines = [f"AUDIT CHAIN BROKEN at event #{result.first_broken_seq}: {result.reason}"]
    lines.extend(audit_anchor_warnings(result))
    return "\n".join(lines)


def audit_anchor_warnings(result) -> list[str]:
    """What the anchors outside the database could not vouch for, one line each."""
    warnings = []
    if result.unanchored:
        first = result.anchored_seq + 1
        last = result.anchored_seq + result.unanchored
        span = f"event #{first} is" if first == last else f"events #{first}-#{last} are"
        warnings.append(
            f"Warning: {span} not anchored outside the database yet (recorded before "
            "anchoring, or the anchor could not be written: see the log); until the next "
            "anchor is written, deleting them would go unnoticed"
        )
    if result.unreadable_anchors:
        warnings.append(
            f"Warning: {result.unreadable_anchors} anchor line(s) outside the database are "
            "unreadable (a torn write, or someone edited the anchors)"
        )
    return warnings


def unlocked(lifted: int) -> str:
    return seed.lifted_message(lifted)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def replica_lag(entry) -> str:
    if entry.last_backup_id is None:
        held = "holds no backup yet"
    elif entry.behind == 0:
        held = f"up to date (newest copy {entry.last_backup_id})"
    else:
        held = (
            f"{entry.behind} backups behind, {_duration(entry.lag_seconds or 0)} "
            f"(newest copy {entry.last_backup_id})"
        )
    line = f"Replica {entry.name}: {held}"
    if entry.failing:
        backup_id, error = entry.failing[0]
        line += f"; {len(entry.failing)} failed, latest reason: {error}"
    return line


def replica_lines(replicas) -> list[str]:
    return [replica_lag(entry) for entry in replicas]


def replication(result) -> str:
    lines = [result.message]
    for row in result.rows:
        if row.status == "REPLICATED":
            lines.append(
                f"{row.replica}: {row.backup_id} replicated ({row.chunks_copied} chunks, "
                f"{row.bytes_copied} bytes copied), read back and matched"
            )
        else:
            lines.append(f"{row.replica}: {row.backup_id} {row.status}: {row.error}")
    failed_rows = {row.replica for row in result.rows if row.status == "FAILED"}
    lines += [
        f"Replica {name} failed: {problem}"
        for name, problem in result.problems
        if name not in failed_rows  # its rows said why already
    ]
    return "\n".join(lines)


def replica_verification(result) -> str:
    body = verification(result.results)
    return f"Replica {result.replica} ({result.where}):\n{body}" if body else body


def replica_cleanup(entries) -> list[str]:
    lines = []
    for entry in entries:
        if entry.error:
            lines.append(f"Replica {entry.name}: not cleaned up: {entry.error}")
            continue
        line = f"Replica {entry.name}: {entry.deleted} deleted"
        if entry.locked:
            line += f"; {len(entry.locked)} kept, still locked (Object Lock): " + ", ".join(
                entry.locked[:5]
            ) + (" ..." if len(entry.locked) > 5 else "")
        lines.append(line)
    return lines


def recovery(result) -> str:
    report = result.report
    lines = [result.message]
    if report.copied_into and not report.dry_run:
        lines.append(
            f"Copied {report.files_copied} file(s), {report.bytes_copied} bytes, into the "
            f"configured store ({report.copied_into})"
        )
    added = "Would add:" if report.dry_run else "Added:"
    lines += _bullets(added, [backup_line(record) for record in report.added])
    lines += _bullets(
        "Already present (left as they are):", [str(record.id) for record in report.present]
    )
    lines += _bullets(
        "Conflicts (rows that differ, not overwritten):",
        [f"{c.backup_id}: differs in {', '.join(c.fields)}" for c in report.conflicts],
    )
    lines += _bullets(
        "Damaged (not recovered):", [f"{d.name}: {d.problem}" for d in report.damaged]
    )
    if report.anchors:
        lines.append(
            f"Audit anchors in the source: {report.anchors}, up to event #{report.highest_anchor} "
            "(the old audit trail's length; the trail here starts again)"
        )
    last_safe = report.last_safe
    lines.append(f"Last safe backup: {last_safe.id if last_safe else 'none'}")
    lines += _bullets("Next:", result.next_steps)
    return "\n".join(lines)


# --- retention -----------------------------------------------------------------------


def _decision_table(decisions, zone) -> list[str]:
    header = ("ID", f"Created ({zone.key})", "Type", "Status", "Reasons")
    rows = [
        (
            str(decision.backup.id),
            f"{decision.backup.created_at.astimezone(zone):%Y-%m-%d %H:%M:%S}",
            decision.backup.type,
            decision.backup.status,
            ", ".join(decision.reasons),
        )
        for decision in decisions
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(4)]

    def line(row) -> str:
        # The reasons, last, are as long as they are.
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        return "  ".join([*cells, row[4]])

    rule = "  ".join("-" * width for width in [*widths, len(header[4])])
    return [line(header), rule] + [line(row) for row in rows]


def prune(result) -> list[tuple[str, bool]]:
    """(line, is_alarm) pairs, as restic's `forget` prints: the policy, the backups kept and
    those forgotten with the rules that decided each, then what was collected."""
    plan = result.plan
    zone = zoneinfo.ZoneInfo(plan.policy.time_zone)
    lines = [(f"Applying policy: {plan.policy.describe()}", False)]
    forget_title = "would forget" if result.dry_run else "forget"
    for title, decisions in (("keep", plan.kept), (forget_title, plan.forgotten)):
        if decisions:
            lines.append(("", False))
            lines.append((f"{title} {len(decisions)} backups:", False))
            lines += [(line, False) for line in _decision_table(decisions, zone)]
    lines.append(("", False))
    lines.append((result.summary, False))
    for entry in result.replicas:
        if entry.error:
            lines.append((f"Replica {entry.name}: not cleaned up: {entry.error}", True))
            continue
        line = f"Replica {entry.name}: {entry.deleted} manifests of forgotten backups deleted"
        if entry.locked:
            line += f"; {len(entry.locked)} kept, still locked (Object Lock)"
        lines.append((line, False))
    if result.garbage is not None:
        lines += garbage(result.garbage)
    elif result.garbage_error:
        lines.append((f"Chunks not collected: {result.garbage_error}; run failsafe_gc later", True))
    return lines


def pinned(backup) -> str:
    return f"{seed.pin_message(backup)} ({backup.id})"


def acknowledged(backup) -> str:
    return (
        f"Emergency backup {backup.id} acknowledged by {backup.reviewed_by_username or '-'} "
        f"at {iso(backup.reviewed_at, timespec='seconds')}: retention keeps it only while a "
        "rule does"
    )


# --- notifications ---------------------------------------------------------------------


def notification_channel(channel) -> str:
    if channel.kind == "webhook":
        # An unsigned webhook's note says why it is unsigned.
        state = "signed" if channel.signed else channel.note or "unsigned"
        line = f"webhook {channel.to} ({state})"
        return f"{line}: {channel.problem}" if channel.problem else line
    line = f"e-mail to {channel.to}"
    return f"{line} ({channel.note})" if channel.note else line


def notification_channels(channels, *, how_to_configure: str) -> str:
    if not channels:
        return how_to_configure
    return "\n".join(notification_channel(channel) for channel in channels)


def notification_test(record, *, undelivered: list[str]) -> str:
    """One line per channel, then what did not reach anyone (notify.undelivered)."""
    lines = []
    for delivery in record.deliveries:
        if delivery.get("ok") and not delivery.get("note"):
            outcome = "sent"
        elif delivery.get("ok"):
            outcome = delivery["note"]
        else:
            outcome = f"FAILED: {delivery.get('error') or 'no reason recorded'}"
        lines.append(f"{delivery['channel']} {delivery['to']}: {outcome}")
    if not record.deliveries:
        lines += list(undelivered)
    elif undelivered:
        lines.append(f"Not delivered everywhere ({len(undelivered)} of {len(record.deliveries)})")
    else:
        lines.append("Test notification sent to every channel")
    return "\n".join(lines)


# --- schedules -------------------------------------------------------------------------


def run_due(result) -> list[tuple[str, bool]]:
    """(line, is_alarm) pairs: one line per schedule that ran, then the summary."""
    lines = [
        (
            f"{'ok' if outcome.ok else 'FAILED'}  {outcome.name}: {outcome.message} "
            f"({outcome.seconds:.1f} s)",
            not outcome.ok,
        )
        for outcome in result.outcomes
    ]
    lines.append((result.summary, not result.ok))
    return lines


def _when(state) -> str:
    if state.due:
        return "due now"
    if state.next_at is None:
        return state.why  # off, expired, ran once
    return f"next {iso(state.next_at, timespec='seconds')}"


def schedules(states) -> str:
    if not states:
        return "No failsafe schedules: manage.py raos_bootstrap creates the defaults."
    header = ("Schedule", "Task", "When", "Last run", "Runs", "")
    rows = [
        (
            state.task.name,
            state.task.task,
            str(state.task.scheduler),
            iso(state.task.last_run_at, timespec="seconds") or "never",
            str(state.task.total_run_count),
            _when(state),
        )
        for state in states
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(5)]

    def line(row) -> str:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        return "  ".join([*cells, row[5]]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule] + [line(row) for row in rows])
