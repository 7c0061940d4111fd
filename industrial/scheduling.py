"""One django-celery-beat entry per bridge: `industrial.tasks.poll_bridge(bridge_id)`.

Beat's interval resolution is a whole second, so poll intervals are rounded up to whole
seconds (the configuration refuses anything under 1 s). A poll that comes due while the
previous one still runs is skipped by the bridge's lease, and one that waited in the
queue longer than its interval expires instead of piling up.
"""

from __future__ import annotations

import json
import math

from django_celery_beat.models import IntervalSchedule, PeriodicTask

from industrial.models import ModbusBridge

TASK = "industrial.tasks.poll_bridge"


def task_name(bridge: ModbusBridge) -> str:
    return f"modbus poll {bridge.device.node_id}"


def schedule(bridge: ModbusBridge) -> PeriodicTask:
    every = max(1, math.ceil(bridge.poll_interval_s))
    interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
    task, _ = PeriodicTask.objects.update_or_create(
        name=task_name(bridge),
        defaults={
            "task": TASK,
            "interval": interval,
            "args": json.dumps([bridge.pk]),
            "enabled": bridge.enabled,
            "expires": None,
            "expire_seconds": every,
            "description": f"Polls the points of Modbus bridge {bridge.device.node_id} every {every} s.",
        },
    )
    return task


def unschedule(bridge: ModbusBridge) -> None:
    PeriodicTask.objects.filter(task=TASK, args=json.dumps([bridge.pk])).delete()
