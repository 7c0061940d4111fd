"""Where the industrial bridge hooks into the rest of the hub."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("meshhub.industrial")

PLC_DEVICE_TYPE = "plc"


def queue_plc_command(command_id: str, node_id: str, device_type: str) -> None:
    """A command for a PLC goes to a Celery worker (the mesh gateway never sees PLCs)."""
    if device_type != PLC_DEVICE_TYPE:
        return
    from industrial.tasks import execute_command

    try:
        execute_command.delay(command_id)
    except Exception:  # the broker is away: the row is the outbox, and the sweep queues it
        logger.exception("could not queue PLC command %s; the PLC command sweep queues it again", command_id, extra={"command_id": command_id})


def unschedule_deleted_bridge(sender: Any, instance: Any, **kwargs: Any) -> None:
    from industrial import scheduling
    from industrial.client import drop_client
    from industrial.polling import forget_plan

    scheduling.unschedule(instance)
    drop_client(instance.pk)
    forget_plan(instance.pk)
