"""Hub-level Celery tasks."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from hub.models import Heartbeat


@shared_task(name="hub.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """Beat schedules it and a worker runs it, so a fresh stamp proves both are alive."""
    Heartbeat.objects.update_or_create(name="worker", defaults={"at": timezone.now()})
