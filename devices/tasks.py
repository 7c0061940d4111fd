"""Housekeeping for the registry, run by Celery beat."""

from __future__ import annotations

from celery import shared_task

from devices import services


@shared_task(name="devices.tasks.expire_commands", autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def expire_commands() -> int:
    """Open commands past expires_at become expired (idempotent: the update is conditional)."""
    return services.expire_commands()
