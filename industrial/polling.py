"""Polling one bridge: plan the reads, read, decode, and feed the device state path.

`plan_reads()` is pure: points sorted by register type and address, contiguous (or
overlapping) addresses merged into one request up to the protocol limits (125 registers,
2,000 bits). `poll_bridge()` holds the bridge's lease (no two polls of one PLC at once),
backs off after connection failures, and never raises for what the PLC does: an exception
response marks that request's points `bad`, a lost connection marks the rest `stale`, a
value the codec or the point's range refuses marks that point `bad`, each with its reason.
Good values outside the deadband go through `devices.state.apply_reports` like a
device's report (telemetry, presence, automation, dashboard).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from devices import state
from devices.models import Device
from industrial import codec
from industrial.client import MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ, PlcError, client_for
from industrial.models import BIT_REGISTERS, ModbusBridge, ModbusPoint, Quality

logger = logging.getLogger("meshhub.modbus")

MAX_BACKOFF_S = 60.0


@dataclass
class ReadBlock:
    register: str
    start: int
    count: int
    points: list[ModbusPoint] = field(default_factory=list)


def point_width(point: ModbusPoint) -> int:
    return 1 if point.register in BIT_REGISTERS else codec.register_count(point.data_type)


def plan_reads(points: Iterable[ModbusPoint]) -> list[ReadBlock]:
    """As few requests as the limits allow; only contiguous or overlapping addresses merge
    (a gap could be an address the PLC refuses, failing its neighbours too)."""
    blocks: list[ReadBlock] = []
    for point in sorted(points, key=lambda p: (p.register, p.address, p.pk or 0)):
        limit = MAX_BITS_PER_READ if point.register in BIT_REGISTERS else MAX_REGISTERS_PER_READ
        end = point.address + point_width(point)  # exclusive
        last = blocks[-1] if blocks else None
        if last is not None and last.register == point.register and point.address <= last.start + last.count and end - last.start <= limit:
            last.count = max(last.count, end - last.start)
            last.points.append(point)
        else:
            blocks.append(ReadBlock(point.register, point.address, end - point.address, [point]))
    return blocks


def decode_point(point: ModbusPoint, words: list[int]) -> bool | int | float:
    """The engineering value, or CodecError (with the reason) for a value not to trust."""
    value = codec.decode(
        words,
        point.data_type,
        byte_order=point.effective_byte_order,
        word_order=point.effective_word_order,
        scale=point.scale,
        offset=point.offset,
    )
    if not isinstance(value, bool):
        codec.check_range(value, point.min_value, point.max_value)
    return value


def outside_deadband(point: ModbusPoint, value: Any, previous: Any, was_good: bool) -> bool:
    """Report `value`? `previous` is the last reported one (the device's `reported`)."""
    if previous is None or not was_good:
        return True
    if isinstance(value, bool) or isinstance(previous, bool) or not isinstance(previous, int | float):
        return bool(value != previous)
    return abs(float(value) - float(previous)) > point.deadband


@dataclass
class PollResult:
    node_id: str
    skipped: str = ""
    read_ok: int = 0
    reported: dict[str, Any] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)
    requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "skipped": self.skipped,
            "read_ok": self.read_ok,
            "reported": self.reported,
            "bad": self.bad,
            "stale": self.stale,
            "requests": self.requests,
        }


_plans: dict[int, tuple[str, list[ReadBlock]]] = {}


def _planned(bridge: ModbusBridge) -> list[ReadBlock]:
    """The bridge's requests, planned once per configuration version and process (loading
    and planning thousands of points each second would cost more than reading them)."""
    cached = _plans.get(bridge.pk)
    if cached is None or cached[0] != bridge.config_token or not bridge.config_token:
        cached = _plans[bridge.pk] = (bridge.config_token, plan_reads(bridge.points.all()))
    return cached[1]


def forget_plan(bridge_id: int) -> None:
    _plans.pop(bridge_id, None)


def _take_lease(bridge_id: int, now: datetime, seconds: float) -> bool:
    return (
        ModbusBridge.objects.filter(pk=bridge_id, enabled=True)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(lease_until=now + timedelta(seconds=seconds))
        == 1
    )


def poll_bridge(bridge_id: int) -> PollResult:
    bridge = ModbusBridge.objects.select_related("device").filter(pk=bridge_id).first()
    if bridge is None:
        return PollResult(node_id="", skipped="no such bridge")
    result = PollResult(node_id=bridge.device.node_id)
    blocks = _planned(bridge)
    now = timezone.now()
    lease_s = min(300.0, 5.0 + len(blocks) * bridge.timeout_s * (bridge.retries + 1))
    if not _take_lease(bridge.pk, now, lease_s):
        result.skipped = "disabled, backing off, or another poll holds the lease"
        return result
    try:
        _poll(bridge, blocks, result)  # releases the lease with its last write
    except BaseException:
        ModbusBridge.objects.filter(pk=bridge.pk).update(lease_until=None)
        raise
    return result


def _poll(bridge: ModbusBridge, blocks: list[ReadBlock], result: PollResult) -> None:
    client = client_for(bridge)
    values: dict[int, Any] = {}
    lost: str = ""
    for block in blocks:
        if lost:
            for point in block.points:
                result.stale[point.capability] = lost
            continue
        result.requests += 1
        try:
            words = client.read(block.register, block.start, block.count)
        except PlcError as error:
            target = result.stale if error.connection_lost else result.bad
            for point in block.points:
                target[point.capability] = error.reason
            if error.connection_lost:
                lost = error.reason
            continue
        for point in block.points:
            begin = point.address - block.start
            try:
                values[point.pk] = decode_point(point, words[begin : begin + point_width(point)])
                result.read_ok += 1
            except codec.CodecError as error:
                result.bad[point.capability] = error.reason
    _store(bridge, blocks, values, result, lost)


def _store(bridge: ModbusBridge, blocks: list[ReadBlock], values: dict[int, Any], result: PollResult, lost: str) -> None:
    """Per poll: the changed values down the state path (one device row, one telemetry
    row per reported value), one bridge row (its `live` values and status), and point
    rows only for points whose quality changed."""
    now = timezone.now()
    node_id = bridge.device.node_id
    reported_before = bridge.device.reported
    points = [p for block in blocks for p in block.points]
    report: dict[str, Any] = {}
    live: dict[str, Any] = dict(bridge.live)
    quality_changed: list[ModbusPoint] = []
    # The quality each point had is the device's `metadata.points` (one row, loaded with
    # the bridge), not the cached point objects another worker process may have outdated.
    known: dict[str, Any] = bridge.device.metadata.get("points") or {}
    quality_map: dict[str, dict[str, str]] = {}
    for point in points:
        old = known.get(point.capability) or {}
        before = (old.get("quality", Quality.UNKNOWN), old.get("reason", ""))
        now_quality = before
        if point.pk in values:
            value = values[point.pk]
            if outside_deadband(point, value, reported_before.get(point.capability), before[0] == Quality.GOOD):
                report[point.capability] = value
            live[point.capability] = value
            now_quality = (Quality.GOOD, "")
        elif point.capability in result.bad:
            now_quality = (Quality.BAD, result.bad[point.capability][:300])
        elif point.capability in result.stale:
            now_quality = (Quality.STALE, result.stale[point.capability][:300])
        quality_map[point.capability] = {"quality": now_quality[0], "reason": now_quality[1]}
        if now_quality != before:
            point.quality, point.quality_reason = now_quality
            quality_changed.append(point)
    result.reported = report
    if report:
        state.apply_reports([state.StateReport(node_id, report, now)], now=now)
    with transaction.atomic():
        for point in quality_changed:
            ModbusPoint.objects.filter(pk=point.pk).update(quality=point.quality, quality_reason=point.quality_reason)
        if quality_changed or set(known) != set(quality_map):
            device = Device.objects.select_for_update().get(pk=bridge.device_id)
            device.metadata = {**device.metadata, "points": quality_map}
            device.save(update_fields=["metadata", "updated_at"])
        if result.read_ok and not report:
            state.touch(node_id, now)
            if not bridge.device.online:
                state.set_presence(node_id, True, now)
        elif not result.read_ok and points and bridge.device.online:
            state.set_presence(node_id, False, now)
        failures = bridge.consecutive_failures + 1 if lost else 0
        ModbusBridge.objects.filter(pk=bridge.pk).update(
            lease_until=None,
            live=live,
            last_poll_at=now,
            last_ok_at=now if result.read_ok else bridge.last_ok_at,
            last_error=(lost or "; ".join(f"{k}: {v}" for k, v in result.bad.items()))[:500],
            consecutive_failures=failures,
            next_attempt_at=now + timedelta(seconds=min(MAX_BACKOFF_S, 0.5 * 2**failures)) if lost else None,
        )
    if lost:
        logger.warning("modbus bridge %s: %s", node_id, lost, extra={"node_id": node_id})
