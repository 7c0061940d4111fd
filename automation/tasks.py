"""Celery tasks of the automation app; they take ids and are idempotent (automation/evaluator.py)."""

from __future__ import annotations

from celery import shared_task

from automation import evaluator


@shared_task(name="automation.tasks.recheck_due", ignore_result=True)
def recheck_due() -> int:
    """Beat, every second: rules whose `for` duration ran out without new state."""
    return evaluator.recheck_due()
