"""Hub-level Celery tasks."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from hub import idempotency
from hub.models import Heartbeat


@shared_task(name="hub.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Beat schedules it and a worker runs it, so a fresh stamp proves both are alive.
    Also forgets gateways that stopped stamping a day ago (killed without closing)."""
    now = timezone.now()
    Heartbeat.objects.update_or_create(name="worker", defaults={"at": now})
    Heartbeat.objects.filter(name__startswith="gateway:", at__lt=now - timedelta(days=1)).delete()


@shared_task(name="hub.tasks.prune_idempotency_keys", autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def prune_idempotency_keys() -> int:
    """API idempotency keys past MESHHUB_IDEMPOTENCY_KEY_TTL_S are forgotten (and free again)."""
    return idempotency.prune_expired()
