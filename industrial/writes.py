"""Commands to a PLC: the allow-list, the write, and the read-back that confirms it.

`send_command()` already checked the command against the device's capabilities (a
point that is not writable is a sensor capability, refused at level 5). This is the
second check, at the point itself, just before the wire: only points marked writable,
only values inside the point's range, inverse-scaled and encoded by the codec; then the
registers are read back and decoded, and the command succeeds only if the PLC holds
the value. Each decision is audited; a confirmed value also goes down the state path.
"""

from __future__ import annotations

import math
from typing import Any

from django.utils import timezone

from audit.models import ActorType, Decision
from audit.services import Actor, record
from devices import delivery, state
from devices.models import Command, CommandAction, CommandStatus
from industrial import codec
from industrial.client import PlcError, client_for
from industrial.models import ModbusBridge, ModbusPoint
from industrial.polling import decode_point, point_width

HUB = Actor(ActorType.SYSTEM, "modbus")


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


def execute_command(command_id: str) -> str:
    """Carry out one pending command for a PLC (idempotent: only a pending one is taken)."""
    command = Command.objects.select_related("device").filter(pk=command_id).first()
    if command is None:
        return "no such command"
    now = timezone.now()
    if command.expires_at <= now:
        return "expired"
    # Claim it: pending → delivered once, so a second worker never writes it again.
    if not Command.objects.filter(pk=command.pk, status=CommandStatus.PENDING).update(status=CommandStatus.DELIVERED, delivered_at=now):
        return "not pending"
    node_id = command.device.node_id
    try:
        value = _carry_out(command)
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


def _carry_out(command: Command) -> Any:
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
    if command.action == CommandAction.TOGGLE:
        current = decode_point(point, client.read(point.register, point.address, width))
        wanted: Any = not current
    else:
        wanted = command.value
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
        },
    )
    now = timezone.now()
    state.apply_reports([state.StateReport(command.device.node_id, {point.capability: got}, now)], now=now)
    ModbusPoint.objects.filter(pk=point.pk).exclude(quality="good", quality_reason="").update(quality="good", quality_reason="")
    bridge.refresh_from_db(fields=["live"])
    ModbusBridge.objects.filter(pk=bridge.pk).update(live={**bridge.live, point.capability: got})
    return got
