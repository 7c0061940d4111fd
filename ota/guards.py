"""Command guards of the OTA app (devices.guards): no actuation of a device that is in the
middle of an update or in safe mode. A `get` still goes through: reading is not actuating."""

from __future__ import annotations

from devices.guards import CommandRequest, Refusal
from ota import deployments
from ota.models import Deployment, DeviceFirmware

INSTALLING = {*deployments.TRANSFER_STATES, *deployments.INSTALL_STATES}


def not_while_updating(request: CommandRequest) -> Refusal | None:
    if request.action == "get":
        return None
    busy = Deployment.objects.filter(device=request.device, state__in=INSTALLING).values_list("state", flat=True).first()
    if busy is not None:
        return Refusal(f"device is installing firmware (deployment {busy})")
    return None


def not_in_safe_mode(request: CommandRequest) -> Refusal | None:
    if request.action == "get":
        return None
    if DeviceFirmware.objects.filter(device=request.device, safe_mode=True).exists():
        return Refusal("device is in safe mode: it takes no actuation commands until its boot guard is cleared")
    return None
