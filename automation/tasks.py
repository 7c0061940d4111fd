"""Celery tasks of the automation app; they take ids and are idempotent (automation/evaluator.py)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from automation import evaluator, runs, webhooks


@shared_task(name="automation.tasks.recheck_due", ignore_result=True)
def recheck_due() -> int:
    """Beat, every second: rules whose `for` duration ran out without new state."""
    return evaluator.recheck_due()


@shared_task(name="automation.tasks.schedule_tick", ignore_result=True)
def schedule_tick(rule_id: int) -> bool:
    """Beat, at a rule's cron times (automation/schedules.py): one evaluation in which its
    schedule condition holds. True when it fired."""
    return evaluator.evaluate_rule(rule_id, schedule_tick=True) is not None


@shared_task(bind=True, name="automation.tasks.post_webhook", ignore_result=True, acks_late=True)
def post_webhook(self: Any, run_id: int, position: int) -> str:
    """A rule run's webhook (automation/webhooks.py): retried with exponential backoff on
    a timeout, a connection failure or a 5xx/408/429 answer, at most
    MESHHUB_AUTOMATION_WEBHOOK_RETRIES times; the run's entry says each outcome."""
    retries = settings.AUTOMATION_WEBHOOK_RETRIES
    status = webhooks.deliver(run_id, position, attempt=self.request.retries + 1, last=self.request.retries >= retries)
    if status == "retry":
        raise self.retry(countdown=min(300.0, settings.AUTOMATION_WEBHOOK_BACKOFF_S * 2**self.request.retries), max_retries=retries)
    return status


@shared_task(name="automation.tasks.prune_runs", ignore_result=True)
def prune_runs() -> int:
    """Beat, hourly: runs older than MESHHUB_AUTOMATION_RUN_DAYS (runs in flight stay)."""
    return runs.prune()
