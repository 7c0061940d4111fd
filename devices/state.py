"""The state path shared by every source of device state (mesh gateway, Modbus bridges).

Reports are validated against declared capabilities, then applied in batches: one
transaction merges `reported`, writes the TelemetrySamples and updates presence for a
whole batch; the caller acknowledges only after it commits; subscribers in
`devices.events` (automation, the live pages) run after commit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from devices import events
from devices.models import Capability, Device, TelemetrySample
from devices.values import ValueSpec, check_value


@dataclass
class StateReport:
    """Values one device reported at `ts` (its clock, already checked for skew)."""

    node_id: str
    values: dict[str, Any]
    ts: datetime
    firmware_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def capability_specs(device: Device) -> dict[str, ValueSpec]:
    return {
        cap.name: ValueSpec(cap.name, cap.value_type, cap.min_value, cap.max_value, tuple(cap.enum_values or ()))
        for cap in Capability.objects.filter(device=device)
    }


def check_values(specs: Mapping[str, ValueSpec], values: Any) -> dict[str, str]:
    """Why each value cannot be accepted ({} when all fit): unknown capability, wrong type, range."""
    if not isinstance(values, dict) or not values:
        return {"values": "values must be a non-empty object of capability: value"}
    errors: dict[str, str] = {}
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            errors[name] = f"unknown capability '{name}'"
            continue
        reason = check_value(spec, value)
        if reason:
            errors[name] = reason
    return errors


SampleRow = tuple[int, str, datetime, float | None, str]


def _sample(device_id: int, name: str, value: Any, ts: datetime) -> SampleRow:
    if isinstance(value, bool):
        return (device_id, name, ts, 1.0 if value else 0.0, "")
    if isinstance(value, int | float) and math.isfinite(value):
        return (device_id, name, ts, float(value), "")
    return (device_id, name, ts, None, str(value)[:256])


def insert_samples(rows: list[SampleRow]) -> None:
    """Insert through Django's connection, skipping any (device, capability, ts) already
    stored: a report the device resends (lost ack, `unavailable`) is stored once. One
    `unnest` INSERT on PostgreSQL, one `executemany` on SQLite: the ORM's bulk_create
    builds a model and prepares every field of every row, several times the cost of the
    INSERT itself on the hot path of every report (COPY has no ON CONFLICT)."""
    if not rows:
        return
    ops = connection.ops
    table = ops.quote_name(TelemetrySample._meta.db_table)
    columns = ", ".join(ops.quote_name(c) for c in ("device_id", "capability", "ts", "value", "text"))
    if connection.vendor == "postgresql":
        sql = (
            f"INSERT INTO {table} ({columns}) "  # noqa: S608  # names from the model, values as parameters
            "SELECT * FROM unnest(%s::bigint[], %s::varchar[], %s::timestamptz[], %s::float8[], %s::varchar[]) "
            "ON CONFLICT DO NOTHING"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])
        return
    sql = f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"  # noqa: S608  # names from the model, values as parameters
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(d, c, ops.adapt_datetimefield_value(ts), v, t) for d, c, ts, v, t in rows])


def apply_reports(reports: Iterable[StateReport], now: datetime | None = None) -> int:
    """Apply a batch in one transaction; returns the number of samples offered (a resent
    report's samples are skipped by `insert_samples`, not counted apart).

    Callers validated the values; the batch is all or nothing, so an acknowledged
    report is always a committed one.
    """
    reports = list(reports)
    if not reports:
        return 0
    now = now or timezone.now()
    by_node: dict[str, list[StateReport]] = {}
    for report in reports:
        by_node.setdefault(report.node_id, []).append(report)
    samples: list[SampleRow] = []
    with transaction.atomic():
        devices = Device.objects.select_for_update().filter(node_id__in=by_node).order_by("pk")
        for device in devices:
            merged = dict(device.reported)
            fields = {"reported", "last_seen", "online", "updated_at"}
            for report in sorted(by_node[device.node_id], key=lambda r: r.ts):
                merged.update(report.values)
                samples.extend(_sample(device.pk, name, value, report.ts) for name, value in report.values.items())
                if report.firmware_version and report.firmware_version != device.firmware_version:
                    device.firmware_version = report.firmware_version
                    fields.add("firmware_version")
            device.reported = merged
            device.last_seen = now
            device.online = True
            device.save(update_fields=sorted(fields))
        insert_samples(samples)
        transaction.on_commit(lambda: events.state_committed(reports))
    return len(samples)


def set_presence(node_id: str, online: bool, now: datetime | None = None) -> bool:
    """Mark a device online or offline; returns whether anything changed."""
    now = now or timezone.now()
    updates: dict[str, Any] = {"online": online, "updated_at": now}
    if online:
        updates["last_seen"] = now
    changed = Device.objects.filter(node_id=node_id).exclude(online=online).update(**updates) > 0
    if online and not changed:
        Device.objects.filter(node_id=node_id).update(last_seen=now)
    if changed:
        transaction.on_commit(lambda: events.presence_changed(node_id, online))
    return changed


def touch(node_id: str, now: datetime | None = None) -> None:
    """A heartbeat: the device is alive even when it has nothing new to report."""
    Device.objects.filter(node_id=node_id).update(last_seen=now or timezone.now())


# Devices whose presence their poller keeps (a PLC polled every 10 minutes is not silent
# for 3 heartbeats): the Modbus bridge marks them offline when the PLC stops answering.
POLLED_DEVICE_TYPES = ("plc",)


def mark_silent_offline(silence_s: float, now: datetime | None = None) -> list[str]:
    """The presence watchdog: devices marked online that nobody heard from for
    `silence_s` (3 heartbeats) are offline, also when their gateway died without saying so."""
    from datetime import timedelta

    now = now or timezone.now()
    stale = list(
        Device.objects.filter(online=True, last_seen__lt=now - timedelta(seconds=silence_s))
        .exclude(device_type__in=POLLED_DEVICE_TYPES)
        .values_list("node_id", flat=True)
    )
    for node_id in stale:
        with transaction.atomic():
            set_presence(node_id, False, now)
    return stale


def record_dropped_events(node_id: str, count: int) -> None:
    """The agent's counter of reports it dropped while offline (its buffer was full)."""
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(node_id=node_id).first()
        if device is not None:
            device.metadata = {**device.metadata, "dropped_events": max(0, count)}
            device.save(update_fields=["metadata", "updated_at"])
