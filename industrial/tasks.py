"""Celery tasks of the industrial bridge; they take ids and are idempotent."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from industrial import polling, writes


@shared_task(name="industrial.tasks.poll_bridge", ignore_result=True)
def poll_bridge(bridge_id: int) -> dict[str, Any]:
    """One poll (scheduled per bridge by django-celery-beat). Not retried: the next tick is the retry."""
    return polling.poll_bridge(bridge_id).as_dict()


@shared_task(name="industrial.tasks.execute_command", autoretry_for=(ConnectionError,), retry_backoff=True, max_retries=3)
def execute_command(command_id: str) -> str:
    """A command for a PLC, queued when its outbox row commits; only a pending one is carried out."""
    return writes.execute_command(command_id)


@shared_task(name="industrial.tasks.sweep_commands", ignore_result=True)
def sweep_commands() -> int:
    """Beat: PLC commands whose task was lost (failed enqueue, killed worker) are queued again."""
    return writes.sweep_commands()
