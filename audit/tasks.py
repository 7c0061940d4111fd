"""Audit housekeeping run by Celery beat."""

from __future__ import annotations

import logging

from celery import shared_task

from audit import snapshots

logger = logging.getLogger("meshhub.audit")


@shared_task(name="audit.tasks.snapshot_audit", autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def snapshot_audit() -> list[str]:
    """Sign every finished UTC day that has no snapshot yet, oldest first.

    Idempotent, so beat runs it hourly: a hub that was off for days catches up on its next
    run. A day whose events no longer hash is refused (and audited as a deny) on every run
    until someone looks; the days after it are still signed.
    """
    taken = []
    for day in snapshots.due_days():
        try:
            snapshot = snapshots.take_snapshot(day)
        except snapshots.SnapshotError as refused:
            logger.error("audit snapshot of %s refused: %s", day.isoformat(), refused.reason, extra={"reason": refused.reason})
            continue
        taken.append(snapshot.date.isoformat())
    return taken
