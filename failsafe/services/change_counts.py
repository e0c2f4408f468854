"""Change counts: what each scheduled backup records for anomaly detection (failsafe.anomaly)."""

from __future__ import annotations

import logging

from django.db import transaction

from .. import anomaly, archives
from ..exceptions import one_line
from ..models import Backup

logger = logging.getLogger(__name__)


def previous_complete_backup(backup: Backup) -> Backup | None:
    """The complete backup before `backup` that its changes are counted from.

    A PRE_RESTORE backup is passed over: the restore right after it changes whatever it
    restores, and the counts would measure the restore, not the site's usual churn.
    """
    return (
        Backup.objects.filter(status=Backup.Status.COMPLETE, created_at__lt=backup.created_at)
        .exclude(type=Backup.Type.PRE_RESTORE)
        .exclude(pk=backup.pk)
        .order_by("-created_at")
        .first()
    )


def record_change_counts(backup: Backup) -> dict:
    """Count what changed since the previous complete backup into `backup.change_counts`.

    The two archives are read side by side, leaving out the chunks they share (they hold
    the same rows on both sides, so the counts are those of reading everything). Never
    raises: a failure records nothing and logs one line, because the backup itself is good
    and anomaly detection only loses one interval (it skips backups without counts).
    """
    try:
        previous = previous_complete_backup(backup)
        if previous is None:
            return {}
        with archives.open_pair(previous, backup) as (old, new):
            counts = anomaly.count_changes(baseline=old, current=new)
        record = anomaly.change_counts_record(counts, previous=previous)
        # In a savepoint: a database error here must not break a caller's transaction.
        with transaction.atomic():
            Backup.objects.filter(pk=backup.pk).update(change_counts=record)
    except Exception as exc:  # noqa: BLE001 - counting never fails the backup
        logger.warning("Change counts of backup %s not recorded: %s", backup.id, one_line(exc))
        return {}
    backup.change_counts = record
    return record
