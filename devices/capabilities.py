"""A device's capability declaration (from its `hello`) checked and stored."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from devices.models import Capability, CapabilityKind, Device, ValueType

MAX_CAPABILITIES = 64


def check_declaration(declared: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Normalize a list of capability objects; returns (capabilities, problems)."""
    if not isinstance(declared, list) or not declared:
        return [], ["capabilities must be a non-empty list"]
    if len(declared) > MAX_CAPABILITIES:
        return [], [f"at most {MAX_CAPABILITIES} capabilities, got {len(declared)}"]
    problems: list[str] = []
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, item in enumerate(declared):
        where = f"capabilities[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object")
            continue
        name, kind, value_type = item.get("name"), item.get("kind"), item.get("value_type")
        if not isinstance(name, str) or not name or len(name) > 64:
            problems.append(f"{where}.name must be 1-64 characters")
            continue
        if name in names:
            problems.append(f"capability '{name}' declared twice")
        names.add(name)
        if kind not in CapabilityKind.values:
            problems.append(f"capability '{name}': kind must be one of {', '.join(CapabilityKind.values)}")
        if value_type not in ValueType.values:
            problems.append(f"capability '{name}': value_type must be one of {', '.join(ValueType.values)}")
        low, high = item.get("min"), item.get("max")
        for label, bound in (("min", low), ("max", high)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
                problems.append(f"capability '{name}': {label} must be a number")
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            problems.append(f"capability '{name}': min above max")
        enum_values = item.get("enum_values") or []
        if value_type == ValueType.ENUM and (not isinstance(enum_values, list) or not enum_values or not all(isinstance(v, str) for v in enum_values)):
            problems.append(f"capability '{name}': an enum needs a list of string enum_values")
        writable = bool(item.get("writable", kind != CapabilityKind.SENSOR))
        if kind == CapabilityKind.SENSOR and writable:
            problems.append(f"capability '{name}': a sensor cannot be writable")
        out.append(
            {
                "name": name,
                "kind": kind,
                "value_type": value_type,
                "unit": str(item.get("unit") or "")[:20],
                "min_value": low,
                "max_value": high,
                "enum_values": enum_values if value_type == ValueType.ENUM else [],
                "writable": writable,
            }
        )
    return out, problems


def store_declaration(device: Device, capabilities: list[dict[str, Any]]) -> None:
    """Make the device's Capability rows exactly the declared ones."""
    with transaction.atomic():
        declared = {c["name"] for c in capabilities}
        Capability.objects.filter(device=device).exclude(name__in=declared).delete()
        for cap in capabilities:
            Capability.objects.update_or_create(device=device, name=cap["name"], defaults={k: v for k, v in cap.items() if k != "name"})
