"""PLC configuration as JSON (ARCHITECTURE §9): validate everything, then write everything.

`parse()` checks a whole document and reports every problem with its path
(`bridges[0].points[2].data_type: …`); `apply()` writes it in one transaction, idempotent
by `node_id`: a bridge becomes (or stays) a provisioned Device of type `plc` whose
capabilities are its points. `export()` gives back the same shape.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from audit.models import Decision
from audit.services import Actor, record
from devices.models import NODE_ID_PATTERN, Capability, CapabilityKind, Device, DeviceStatus, ValueType
from industrial import codec
from industrial.hooks import PLC_DEVICE_TYPE
from industrial.models import BIT_REGISTERS, WRITABLE_REGISTERS, ByteOrder, DataType, ModbusBridge, ModbusPoint, RegisterType

CAPABILITY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
MAX_BRIDGES = 1000
MAX_POINTS = 2000

BRIDGE_FIELDS = {"node_id", "name", "host", "port", "unit_id", "poll_interval_s", "timeout_s", "retries", "enabled", "byte_order", "word_order", "points"}
POINT_FIELDS = {"capability", "register", "address", "data_type", "byte_order", "word_order", "scale", "offset", "unit", "min", "max", "writable", "deadband"}


class ConfigError(Exception):
    """Every problem of a document, each `path: reason`; nothing was written."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class PointSpec:
    capability: str
    register: str
    address: int
    data_type: str
    byte_order: str = ""
    word_order: str = ""
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    min: float | None = None
    max: float | None = None
    writable: bool = False
    deadband: float = 0.0


@dataclass
class BridgeSpec:
    node_id: str
    host: str
    name: str = ""
    port: int = 502
    unit_id: int = 1
    poll_interval_s: float = 1.0
    timeout_s: float = 1.0
    retries: int = 1
    enabled: bool = True
    byte_order: str = "big"
    word_order: str = "big"
    points: list[PointSpec] = field(default_factory=list)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, path: str, reason: str) -> None:
        self.errors.append(f"{path}: {reason}")

    def unknown_keys(self, path: str, item: dict[str, Any], allowed: set[str]) -> None:
        for key in sorted(set(item) - allowed):
            self.fail(f"{path}.{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def string(self, path: str, value: Any, *, required: bool = False, max_length: int = 255, pattern: str | None = None, default: str = "") -> str:
        if value is None:
            if required:
                self.fail(path, "is required")
            return default
        if not isinstance(value, str) or "\x00" in value:
            self.fail(path, f"must be a string, got {type(value).__name__}")
            return default
        if required and not value.strip():
            self.fail(path, "must not be empty")
        if len(value) > max_length:
            self.fail(path, f"at most {max_length} characters, got {len(value)}")
        if pattern and not re.fullmatch(pattern, value):
            self.fail(path, f"{value!r} does not match {pattern}")
        return value

    def integer(self, path: str, value: Any, low: int, high: int, default: int, *, required: bool = False) -> int:
        if value is None:
            if required:
                self.fail(path, "is required")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"must be a whole number, got {value!r}")
            return default
        if not low <= value <= high:
            self.fail(path, f"{value} is outside {low}..{high}")
        return value

    def number(self, path: str, value: Any, default: float | None, *, low: float | None = None, high: float | None = None) -> float | None:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(path, f"must be a finite number, got {value!r}")
            return default
        if low is not None and value < low:
            self.fail(path, f"{value} is below the minimum {low:g}")
        if high is not None and value > high:
            self.fail(path, f"{value} is above the maximum {high:g}")
        return float(value)

    def boolean(self, path: str, value: Any, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, got {value!r}")
            return default
        return value

    def choice(self, path: str, value: Any, choices: list[str], default: str, *, required: bool = False) -> str:
        if value is None:
            if required:
                self.fail(path, f"is required (one of {', '.join(choices)})")
            return default
        if value not in choices:
            self.fail(path, f"{value!r} is not one of {', '.join(choices)}")
            return default
        return str(value)


def parse(document: Any) -> list[BridgeSpec]:
    """The validated bridges of a document; raises ConfigError listing every problem."""
    check = _Checker()
    if not isinstance(document, dict) or not isinstance(document.get("bridges"), list):
        raise ConfigError(['document: must be an object {"bridges": [...]}'])
    check.unknown_keys("document", document, {"bridges"})
    raw_bridges = document["bridges"]
    if len(raw_bridges) > MAX_BRIDGES:
        raise ConfigError([f"bridges: at most {MAX_BRIDGES}, got {len(raw_bridges)}"])
    bridges: list[BridgeSpec] = []
    seen_nodes: set[str] = set()
    for b, item in enumerate(raw_bridges):
        path = f"bridges[{b}]"
        if not isinstance(item, dict):
            check.fail(path, "must be an object")
            continue
        check.unknown_keys(path, item, BRIDGE_FIELDS)
        node_id = check.string(f"{path}.node_id", item.get("node_id"), required=True, max_length=64, pattern=NODE_ID_PATTERN)
        if node_id in seen_nodes:
            check.fail(f"{path}.node_id", f"'{node_id}' appears twice in this document")
        seen_nodes.add(node_id)
        bridge = BridgeSpec(
            node_id=node_id,
            name=check.string(f"{path}.name", item.get("name"), max_length=100),
            host=check.string(f"{path}.host", item.get("host"), required=True, max_length=255),
            port=check.integer(f"{path}.port", item.get("port"), 1, 65535, 502),
            unit_id=check.integer(f"{path}.unit_id", item.get("unit_id"), 0, 255, 1),
            poll_interval_s=check.number(f"{path}.poll_interval_s", item.get("poll_interval_s"), 1.0, low=1.0, high=86400.0) or 1.0,
            timeout_s=check.number(f"{path}.timeout_s", item.get("timeout_s"), 1.0, low=0.05, high=60.0) or 1.0,
            retries=check.integer(f"{path}.retries", item.get("retries"), 0, 10, 1),
            enabled=check.boolean(f"{path}.enabled", item.get("enabled"), True),
            byte_order=check.choice(f"{path}.byte_order", item.get("byte_order"), ByteOrder.values, "big"),
            word_order=check.choice(f"{path}.word_order", item.get("word_order"), ByteOrder.values, "big"),
        )
        if " " in bridge.host:
            check.fail(f"{path}.host", "must be a host name or IP address without spaces")
        raw_points = item.get("points")
        if not isinstance(raw_points, list) or not raw_points:
            check.fail(f"{path}.points", "must be a non-empty list")
            raw_points = []
        if len(raw_points) > MAX_POINTS:
            check.fail(f"{path}.points", f"at most {MAX_POINTS} per bridge, got {len(raw_points)}")
            raw_points = []
        names: set[str] = set()
        for p, raw in enumerate(raw_points):
            point = _parse_point(check, f"{path}.points[{p}]", raw)
            if point is None:
                continue
            if point.capability in names:
                check.fail(f"{path}.points[{p}].capability", f"'{point.capability}' appears twice in this bridge")
            names.add(point.capability)
            bridge.points.append(point)
        bridges.append(bridge)
    _check_against_registry(check, bridges)
    if check.errors:
        raise ConfigError(check.errors)
    return bridges


def _parse_point(check: _Checker, path: str, raw: Any) -> PointSpec | None:
    if not isinstance(raw, dict):
        check.fail(path, "must be an object")
        return None
    before = len(check.errors)
    check.unknown_keys(path, raw, POINT_FIELDS)
    point = PointSpec(
        capability=check.string(f"{path}.capability", raw.get("capability"), required=True, max_length=64, pattern=CAPABILITY_PATTERN),
        register=check.choice(f"{path}.register", raw.get("register"), RegisterType.values, "holding", required=True),
        address=check.integer(f"{path}.address", raw.get("address"), 0, 65535, 0, required=True),
        data_type=check.choice(f"{path}.data_type", raw.get("data_type"), DataType.values, "u16", required=True),
        byte_order=check.choice(f"{path}.byte_order", raw.get("byte_order"), ByteOrder.values, ""),
        word_order=check.choice(f"{path}.word_order", raw.get("word_order"), ByteOrder.values, ""),
        scale=check.number(f"{path}.scale", raw.get("scale"), 1.0) or 0.0,
        offset=check.number(f"{path}.offset", raw.get("offset"), 0.0) or 0.0,
        unit=check.string(f"{path}.unit", raw.get("unit"), max_length=20),
        min=check.number(f"{path}.min", raw.get("min"), None),
        max=check.number(f"{path}.max", raw.get("max"), None),
        writable=check.boolean(f"{path}.writable", raw.get("writable"), False),
        deadband=check.number(f"{path}.deadband", raw.get("deadband"), 0.0, low=0.0) or 0.0,
    )
    if len(check.errors) > before:
        return None
    if point.scale == 0:
        check.fail(f"{path}.scale", "must not be 0 (every reading would become the offset)")
    if point.register in BIT_REGISTERS and point.data_type != DataType.BOOL:
        check.fail(f"{path}.data_type", f"a {point.register} holds one bit: data_type must be bool, got {point.data_type}")
    if point.writable and point.register not in WRITABLE_REGISTERS:
        check.fail(f"{path}.writable", f"a {point.register} cannot be written (only coils and holding registers)")
    if point.min is not None and point.max is not None and point.min > point.max:
        check.fail(f"{path}.min", f"min {point.min:g} is above max {point.max:g}")
    end = point.address + codec.register_count(point.data_type) - 1
    if point.register not in BIT_REGISTERS and end > 65535:
        check.fail(f"{path}.address", f"a {point.data_type} at {point.address} would run past register 65535")
    if point.data_type == DataType.BOOL and (point.min is not None or point.max is not None or point.deadband):
        check.fail(path, "a bool point takes no min, max or deadband")
    return point


def _check_against_registry(check: _Checker, bridges: list[BridgeSpec]) -> None:
    """A node_id already used by a device that is not a PLC must not be taken over."""
    taken = dict(Device.objects.filter(node_id__in=[b.node_id for b in bridges if b.node_id]).values_list("node_id", "device_type"))
    for b, bridge in enumerate(bridges):
        kind = taken.get(bridge.node_id)
        if kind is not None and kind != PLC_DEVICE_TYPE:
            check.fail(f"bridges[{b}].node_id", f"'{bridge.node_id}' is already a device of type '{kind}', not a PLC")


def capability_for(point: PointSpec) -> dict[str, Any]:
    """The device capability a point becomes."""
    if point.data_type == DataType.BOOL:
        value_type = ValueType.BOOL
    elif point.data_type in ("f32", "f64") or point.scale != 1 or point.offset != int(point.offset):
        value_type = ValueType.FLOAT
    else:
        value_type = ValueType.INT
    return {
        "kind": CapabilityKind.ACTUATOR if point.writable else CapabilityKind.SENSOR,
        "value_type": value_type,
        "unit": point.unit,
        "min_value": point.min,
        "max_value": point.max,
        "enum_values": [],
        "writable": point.writable,
    }


def apply(actor: Actor, bridges: list[BridgeSpec]) -> dict[str, int]:
    """Write validated bridges in one transaction; returns counts. Points and capabilities
    no longer in a bridge's configuration are removed; telemetry is kept."""
    from industrial import scheduling

    counts = {"bridges_created": 0, "bridges_updated": 0, "points": 0, "points_removed": 0}
    with transaction.atomic():
        for spec in bridges:
            device, created = Device.objects.get_or_create(
                node_id=spec.node_id, defaults={"name": spec.name, "device_type": PLC_DEVICE_TYPE, "status": DeviceStatus.PROVISIONED}
            )
            if not created:
                Device.objects.filter(pk=device.pk).update(name=spec.name or device.name, status=DeviceStatus.PROVISIONED)
            fields = {
                "name": spec.name,
                "host": spec.host,
                "port": spec.port,
                "unit_id": spec.unit_id,
                "poll_interval_s": spec.poll_interval_s,
                "timeout_s": spec.timeout_s,
                "retries": spec.retries,
                "enabled": spec.enabled,
                "byte_order": spec.byte_order,
                "word_order": spec.word_order,
            }
            bridge, bridge_created = ModbusBridge.objects.update_or_create(device=device, defaults=fields)
            counts["bridges_created" if bridge_created else "bridges_updated"] += 1
            keep = [p.capability for p in spec.points]
            counts["points_removed"] += bridge.points.exclude(capability__in=keep).delete()[0]
            Capability.objects.filter(device=device).exclude(name__in=keep).delete()
            _sync_points(bridge, device, spec.points)
            counts["points"] += len(spec.points)
            ModbusBridge.objects.filter(pk=bridge.pk).update(config_token=uuid.uuid4().hex)
            scheduling.schedule(bridge)
        record(
            actor, "modbus.import", Decision.ALLOW, scope="admin", target_type="modbus", target_id=",".join(b.node_id for b in bridges)[:150], details=counts
        )
    return counts


POINT_COLUMNS = ["register", "address", "data_type", "byte_order", "word_order", "scale", "offset", "unit", "min_value", "max_value", "writable", "deadband"]
CAPABILITY_COLUMNS = ["kind", "value_type", "unit", "min_value", "max_value", "enum_values", "writable"]


def _sync_points(bridge: ModbusBridge, device: Device, specs: list[PointSpec]) -> None:
    """Points and capabilities in bulk: a PLC with thousands of points imports in a few
    queries, not four per point."""
    points = {p.capability: p for p in bridge.points.all()}
    caps = {c.name: c for c in Capability.objects.filter(device=device)}
    new_points, changed_points, new_caps, changed_caps = [], [], [], []
    for spec in specs:
        values: dict[str, Any] = {
            "register": spec.register,
            "address": spec.address,
            "data_type": spec.data_type,
            "byte_order": spec.byte_order,
            "word_order": spec.word_order,
            "scale": spec.scale,
            "offset": spec.offset,
            "unit": spec.unit,
            "min_value": spec.min,
            "max_value": spec.max,
            "writable": spec.writable,
            "deadband": spec.deadband,
        }
        point = points.get(spec.capability)
        if point is None:
            new_points.append(ModbusPoint(bridge=bridge, capability=spec.capability, **values))
        elif any(getattr(point, k) != v for k, v in values.items()):
            if any(getattr(point, k) != values[k] for k in ("register", "address", "data_type")):
                # Another register now: what was read from the old one says nothing about the new one.
                point.quality, point.quality_reason = "unknown", ""
            for k, v in values.items():
                setattr(point, k, v)
            changed_points.append(point)
        wanted = capability_for(spec)
        cap = caps.get(spec.capability)
        if cap is None:
            new_caps.append(Capability(device=device, name=spec.capability, **wanted))
        elif any(getattr(cap, k) != v for k, v in wanted.items()):
            for k, v in wanted.items():
                setattr(cap, k, v)
            changed_caps.append(cap)
    ModbusPoint.objects.bulk_create(new_points, batch_size=500)
    ModbusPoint.objects.bulk_update(changed_points, [*POINT_COLUMNS, "quality", "quality_reason"], batch_size=200)
    Capability.objects.bulk_create(new_caps, batch_size=500)
    Capability.objects.bulk_update(changed_caps, CAPABILITY_COLUMNS, batch_size=200)


def export() -> dict[str, Any]:
    """Every bridge in the import shape (defaults included, so the file documents itself)."""
    out = []
    for bridge in ModbusBridge.objects.select_related("device").prefetch_related("points").order_by("device__node_id"):
        points = []
        for p in bridge.points.order_by("register", "address", "capability"):
            point: dict[str, Any] = {
                "capability": p.capability,
                "register": p.register,
                "address": p.address,
                "data_type": p.data_type,
                "scale": p.scale,
                "offset": p.offset,
                "unit": p.unit,
                "min": p.min_value,
                "max": p.max_value,
                "writable": p.writable,
                "deadband": p.deadband,
            }
            if p.byte_order:
                point["byte_order"] = p.byte_order
            if p.word_order:
                point["word_order"] = p.word_order
            points.append(point)
        out.append(
            {
                "node_id": bridge.device.node_id,
                "name": bridge.name,
                "host": bridge.host,
                "port": bridge.port,
                "unit_id": bridge.unit_id,
                "poll_interval_s": bridge.poll_interval_s,
                "timeout_s": bridge.timeout_s,
                "retries": bridge.retries,
                "enabled": bridge.enabled,
                "byte_order": bridge.byte_order,
                "word_order": bridge.word_order,
                "points": points,
            }
        )
    return {"bridges": out}


def import_document(actor: Actor, document: Any) -> dict[str, int]:
    """parse + apply; a refused document is audited with its first problems."""
    try:
        bridges = parse(document)
    except ConfigError as exc:
        record(
            actor,
            "modbus.import",
            Decision.DENY,
            scope="admin",
            target_type="modbus",
            reason="; ".join(exc.errors[:5])[:500],
            details={"errors": len(exc.errors)},
        )
        raise
    return apply(actor, bridges)
