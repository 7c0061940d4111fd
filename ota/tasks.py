"""Celery tasks of the OTA app; they take ids and are idempotent (ota/driver.py)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from ota import driver


@shared_task(name="ota.tasks.drive_rollout", ignore_result=True)
def drive_rollout(rollout_id: int) -> dict[str, Any]:
    """One drive of one rollout: timeouts, the wave's verdict, offers."""
    report = driver.drive(rollout_id)
    return {"rollout": report.rollout, "state": report.state, "timed_out": report.timed_out, "offered": report.offered, "verdict": report.verdict}


@shared_task(name="ota.tasks.drive_rollouts", ignore_result=True)
def drive_rollouts() -> int:
    """Beat: every running rollout, so nothing waits on an event that was lost."""
    running = driver.running_rollouts()
    for rollout_id in running:
        driver.drive(rollout_id)
    return len(running)
