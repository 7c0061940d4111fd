"""Commands to a PLC: the allow-list, the write, and the read-back that confirms it.

`send_command()` already checked the command against the device's capabilities (a
point that is not writable is a sensor capability, refused at level 5). This is the
second check, at the point itself, just before the wire: only points marked writable,
only values inside the point's range, inverse-scaled and encoded by the codec; then the
registers are read back and decoded, and the command succeeds only if the PLC holds
the value. Each decision is audited; a confirmed value also goes down the state path.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.models import ActorType, Decision
from audit.services import Actor, record
from devices import delivery, state
from devices.models import Command, CommandAction, CommandStatus
from industrial import codec
from industrial.client import PlcError, client_for
from industrial.models import ModbusBridge, ModbusPoint, PlcWriteClaim
from industrial.polling import decode_point, point_width

HUB = Actor(ActorType.SYSTEM, "modbus")
logger = logging.getLogger("meshhub.industrial")


class WriteRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _confirmed(point: ModbusPoint, wanted: Any, got: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(got, bool):
        return bool(wanted) == bool(got)
    # What the registers can hold: one raw step (scale) for integers, f32's precision for floats.
    step = abs(point.scale) / 2 if point.data_type not in ("f32", "f64") else 0.0
    return math.isclose(float(wanted), float(got), rel_tol=1e-6, abs_tol=max(step, 1e-9))


def _claim(command: Command, now: datetime) -> PlcWriteClaim | None:
    """Take the command for this run: a pending one (the first run), or one whose earlier
    run's lease has passed (a worker killed mid-write). None when another run holds it."""
    lease_until = now + timedelta(seconds=settings.PLC_WRITE_LEASE_S)
    with transaction.atomic():
        if Command.objects.filter(pk=command.pk, status=CommandStatus.PENDING).update(status=CommandStatus.DELIVERED, delivered_at=now):
            return PlcWriteClaim.objects.create(command=command, lease_until=lease_until)
        taken = PlcWriteClaim.objects.filter(command=command, lease_until__lt=now, command__status=CommandStatus.DELIVERED).update(
            lease_until=lease_until, attempts=F("attempts") + 1
        )
        if taken:
            claim = PlcWriteClaim.objects.get(command=command)
            logger.warning(
                "PLC command %s taken over from a run that did not finish (attempt %d)",
                command.pk,
                claim.attempts,
                extra={"command_id": str(command.pk), "wanted": claim.wanted},
            )
            return claim
    return None


def execute_command(command_id: str) -> str:
    """Carry out one PLC command, at most once on the wire per decided value: safe to run
    twice, and after a worker died in the middle (see PlcWriteClaim)."""
    command = Command.objects.select_related("device").filter(pk=command_id).first()
    if command is None:
        return "no such command"
    now = timezone.now()
    if command.expires_at <= now:
        return "expired"
    claim = _claim(command, now)
    if claim is None:
        return "not pending"
    node_id = command.device.node_id
    try:
        value = _carry_out(command, claim)
    except (WriteRefused, PlcError) as error:
        refused = isinstance(error, WriteRefused)
        record(
            HUB,
            "modbus.write",
            Decision.DENY,
            scope=command.scope,
            target_type="device",
            target_id=node_id,
            reason=error.reason,
            details={"command_id": str(command.pk), "capability": command.capability, "value": command.value, "outcome": "refused" if refused else "failed"},
        )
        delivery.record_result(node_id, str(command.pk), "error", None, error.reason)
        return f"failed: {error.reason}"
    delivery.record_result(node_id, str(command.pk), "ok", value, None)
    return "succeeded"


def sweep_commands() -> int:
    """Hand open PLC commands to a worker again: pending ones whose task never ran (the
    enqueue failed, or the worker and its unacknowledged message were lost) and claimed
    ones whose run's lease passed. Runs from beat; `execute_command` decides, so queuing a
    command twice is harmless. Returns how many were queued."""
    from industrial.tasks import execute_command as task

    now = timezone.now()
    quiet_since = now - timedelta(seconds=settings.PLC_WRITE_LEASE_S)
    open_commands = Command.objects.filter(device__device_type="plc", expires_at__gt=now)
    stale = open_commands.filter(
        Q(status=CommandStatus.PENDING, created_at__lt=quiet_since) | Q(status=CommandStatus.DELIVERED, plc_claim__lease_until__lt=now)
    ).values_list("pk", flat=True)[:500]
    queued = 0
    for pk in stale:
        try:
            task.delay(str(pk))
        except Exception:  # the broker is away: the next sweep tries again
            logger.exception("could not queue PLC command %s; the next sweep retries", pk)
            continue
        queued += 1
    if queued:
        logger.info("PLC command sweep queued %d commands again", queued, extra={"queued": queued})
    return queued


def allow_list_refusal(node_id: str, point: ModbusPoint | None, capability: str, action: str, value: Any) -> str | None:
    """The PLC allow-list, judged at the point itself: why this command may not touch the
    wire (None when it may). Asked twice: by the `plc.allow_list` command guard before the
    command is written, and again just before the write (the point may change in between)."""
    if point is None:
        return f"PLC '{node_id}' has no point '{capability}'"
    if action == CommandAction.GET:
        return None
    if not point.writable:
        return f"point '{point.capability}' is not writable (not on the PLC allow-list)"
    if action not in (CommandAction.SET, CommandAction.TOGGLE):
        return f"a PLC point takes set, toggle or get, not {action}"
    if action == CommandAction.SET and not isinstance(value, bool):
        try:
            codec.check_range(value, point.min_value, point.max_value)
        except codec.CodecError as error:
            return error.reason
    return None


def _carry_out(command: Command, claim: PlcWriteClaim) -> Any:
    bridge = ModbusBridge.objects.get(device_id=command.device_id)
    point = bridge.points.filter(capability=command.capability).first()
    refusal = allow_list_refusal(command.device.node_id, point, command.capability, command.action, command.value)
    if refusal is not None:
        raise WriteRefused(refusal)
    assert point is not None
    client = client_for(bridge)
    width = point_width(point)
    if command.action == CommandAction.GET:
        return decode_point(point, client.read(point.register, point.address, width))
    wanted: Any
    if claim.wanted is not None:
        # An earlier run decided (and maybe wrote) this value before it died: if the PLC
        # holds it, the write happened; either way the target stays the same.
        wanted = claim.wanted["value"]
        try:
            held = decode_point(point, client.read(point.register, point.address, width))
        except codec.CodecError:
            held = None
        if held is not None and _confirmed(point, wanted, held):
            return _confirmed_write(command, point, bridge, wanted, held, words=None)
    elif command.action == CommandAction.TOGGLE:
        current = decode_point(point, client.read(point.register, point.address, width))
        wanted = not current
    else:
        wanted = command.value
    if claim.wanted is None:
        # Decided before the wire: a run after a crash writes this, not its own decision.
        PlcWriteClaim.objects.filter(pk=claim.pk).update(wanted={"value": wanted})
    try:
        words = codec.encode(
            wanted,
            point.data_type,
            byte_order=point.effective_byte_order,
            word_order=point.effective_word_order,
            scale=point.scale,
            offset=point.offset,
        )
    except codec.CodecError as error:
        raise WriteRefused(error.reason) from None
    client.write(point.register, point.address, words)
    try:
        got = decode_point(point, client.read(point.register, point.address, width))
    except codec.CodecError as error:
        raise PlcError(f"read-back after writing {point.capability}: {error.reason}", connection_lost=False) from None
    if not _confirmed(point, wanted, got):
        raise PlcError(f"read-back after writing {point.capability} gives {got!r}, not {wanted!r}", connection_lost=False)
    return _confirmed_write(command, point, bridge, wanted, got, words=words)


def _confirmed_write(command: Command, point: ModbusPoint, bridge: ModbusBridge, wanted: Any, got: Any, *, words: list[int] | None) -> Any:
    """The PLC holds the value: audit the write, and report the value down the state path."""
    record(
        HUB,
        "modbus.write",
        Decision.ALLOW,
        scope=command.scope,
        target_type="device",
        target_id=command.device.node_id,
        details={
            "command_id": str(command.pk),
            "capability": point.capability,
            "value": wanted,
            "register": point.register,
            "address": point.address,
            "raw": words,
            "written_by": "this run" if words is not None else "an earlier run that did not finish (read back)",
        },
    )
    now = timezone.now()
    state.apply_reports([state.StateReport(command.device.node_id, {point.capability: got}, now)], now=now)
    ModbusPoint.objects.filter(pk=point.pk).exclude(quality="good", quality_reason="").update(quality="good", quality_reason="")
    bridge.refresh_from_db(fields=["live"])
    ModbusBridge.objects.filter(pk=bridge.pk).update(live={**bridge.live, point.capability: got})
    return got
