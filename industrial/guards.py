"""The PLC allow-list as a command guard (devices.guards): a command to a PLC point that
is not writable, missing, or asked for a value outside the point's range is refused at
level `interlock` before any outbox row exists. The capability mirrors the point, so the
six levels usually refuse first; the guard holds when the two drift (a capability
edited by hand, a point changed by an import), with the point as the authority.
"""

from __future__ import annotations

from devices.guards import CommandRequest, Refusal
from industrial.hooks import PLC_DEVICE_TYPE
from industrial.models import ModbusPoint
from industrial.writes import allow_list_refusal


def plc_allow_list(request: CommandRequest) -> Refusal | None:
    if request.device.device_type != PLC_DEVICE_TYPE:
        return None
    point = ModbusPoint.objects.filter(bridge__device_id=request.device.pk, capability=request.capability.name).first()
    reason = allow_list_refusal(request.device.node_id, point, request.capability.name, request.action, request.value)
    return Refusal(reason, field="capability") if reason is not None else None
