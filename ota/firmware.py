"""A device's firmware as the API and pages show it (the `firmware` detail section)."""

from __future__ import annotations

from typing import Any

from devices.models import Device
from ota.models import DeviceFirmware


def section(device: Device) -> dict[str, Any] | None:
    firmware = DeviceFirmware.objects.filter(device=device).first()
    if firmware is None:
        return {
            "version": device.firmware_version,
            "slot": "",
            "previous_version": "",
            "safe_mode": False,
            "consecutive_fails": 0,
            "last_boot_reason": "",
            "last_rollback_at": None,
            "last_rollback_reason": "",
            "last_boot_at": None,
            "pending_deployment": None,
            "diagnostic": {},
        }
    return {
        "version": firmware.version,
        "slot": firmware.slot,
        "previous_version": firmware.previous_version,
        "safe_mode": firmware.safe_mode,
        "consecutive_fails": firmware.consecutive_fails,
        "last_boot_reason": firmware.last_boot_reason,
        "last_boot_at": firmware.last_boot_at.isoformat() if firmware.last_boot_at else None,
        "pending_deployment": firmware.pending_deployment,
        "last_rollback_at": firmware.last_rollback_at.isoformat() if firmware.last_rollback_at else None,
        "last_rollback_reason": firmware.last_rollback_reason,
        "diagnostic": firmware.diagnostic,
    }
