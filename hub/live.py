"""Live events for the operator pages: one TypedDict per event type, one builder each.

The post-commit hooks of `devices.events` (committed state, presence changes, finished
commands, completed enrollments and the enrolled device's list row) publish on channel-layer group `dashboard`; each browser's `LiveConsumer` coalesces what it
receives (latest value per key) and flushes at most every LIVE_FLUSH_S, so a busy fleet
cannot flood a browser.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.urls import reverse

from devices.models import Device
from hub import messages, outages

if TYPE_CHECKING:
    from devices.state import StateReport

logger = logging.getLogger("meshhub.live")

DASHBOARD_GROUP = messages.DASHBOARD_GROUP


class StateEvent(TypedDict):
    type: Literal["state"]
    node_id: str
    capability: str
    value: Any


class PresenceEvent(TypedDict):
    type: Literal["presence"]
    node_id: str
    online: bool


class CommandEvent(TypedDict):
    type: Literal["command"]
    id: str
    status: str
    result: dict[str, Any]


class EnrolledEvent(TypedDict):
    type: Literal["enrolled"]
    node_id: str
    device_type: str


class DeviceEvent(TypedDict):
    """A device's row as `/devices/` renders it (templates/devices/device_list.html), so an
    open list can add a device that enrolled after it loaded."""

    type: Literal["device"]
    node_id: str
    url: str
    name: str
    device_type: str
    status: str
    online: bool
    last_seen: str | None
    firmware_version: str


class RuleRunEvent(TypedDict):
    """A rule run started, waited, finished or was cancelled (automation.runs)."""

    type: Literal["rule_run"]
    rule_id: int
    run_id: int
    started_at: str
    outcome: str
    reason: str
    trigger: str
    actions: str


class AlertEvent(TypedDict):
    """Something an operator should see now (today: a denied attempt, from the audit log)."""

    type: Literal["alert"]
    kind: str
    seq: int
    ts: str
    who: str
    action: str
    reason: str


def state_event(node_id: str, capability: str, value: Any) -> StateEvent:
    return {"type": "state", "node_id": node_id, "capability": capability, "value": value}


def presence_event(node_id: str, online: bool) -> PresenceEvent:
    return {"type": "presence", "node_id": node_id, "online": online}


def command_event(command_id: str, status: str, result: dict[str, Any]) -> CommandEvent:
    return {"type": "command", "id": command_id, "status": status, "result": result}


def enrolled_event(node_id: str, device_type: str) -> EnrolledEvent:
    return {"type": "enrolled", "node_id": node_id, "device_type": device_type}


DEVICE_ROW_FIELDS = ("node_id", "name", "device_type", "status", "online", "last_seen", "firmware_version")  # for .only()


def device_event(device: Device) -> DeviceEvent:
    return {
        "type": "device",
        "node_id": device.node_id,
        "url": reverse("device-page", args=[device.node_id]),
        "name": device.name,
        "device_type": device.device_type,
        "status": device.status,
        "online": device.online,
        "last_seen": device.last_seen.isoformat() if device.last_seen else None,
        "firmware_version": device.firmware_version,
    }


def rule_run_event(rule_id: int, run_id: int, started_at: datetime, outcome: str, reason: str, trigger: str, actions: str) -> RuleRunEvent:
    return {
        "type": "rule_run",
        "rule_id": rule_id,
        "run_id": run_id,
        "started_at": started_at.isoformat(),
        "outcome": outcome,
        "reason": reason[:200],
        "trigger": trigger[:200],
        "actions": actions[:300],
    }


def alert_event(kind: str, seq: int, ts: str, who: str, action: str, reason: str) -> AlertEvent:
    return {"type": "alert", "kind": kind, "seq": seq, "ts": ts, "who": who, "action": action, "reason": reason[:200]}


ALERTS_PER_MESSAGE = 8  # a deny storm sends the newest few; the overview shows as many


def _publish(message: Mapping[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, message)
    except Exception as exc:  # the pages catch up when they reconnect; the change itself is committed
        outages.report_failure(exc, "live push")  # one line per outage; a bug's traceback


def on_state(reports: list[StateReport]) -> None:
    """devices.events hook: one message per committed batch, the latest value per device and
    capability (each browser's consumer coalesces further)."""
    latest: dict[str, dict[str, Any]] = {}
    for report in sorted(reports, key=lambda r: r.ts):
        latest.setdefault(report.node_id, {}).update(report.values)
    if latest:
        _publish(messages.device_state(latest))


def on_presence(node_id: str, online: bool) -> None:
    """devices.events hook: a device went online or offline."""
    _publish(messages.live_event(presence_event(node_id, online)))


def on_command_finished(command_id: str, status: str, result: dict[str, Any]) -> None:
    """devices.events hook: a command succeeded or failed."""
    _publish(messages.live_event(command_event(command_id, status, result)))


def on_enrolled(node_id: str, device_type: str) -> None:
    """devices.events hook: an enrollment code was redeemed; the device holds its certificate.
    The enrollment pages learn it, and the open device lists get the device's row (read
    once here, after the commit, rather than by every open list)."""
    _publish(messages.live_event(enrolled_event(node_id, device_type)))
    device = Device.objects.filter(node_id=node_id).only(*DEVICE_ROW_FIELDS).first()
    if device is not None:
        _publish(messages.live_event(device_event(device)))


def on_rule_run(event: RuleRunEvent) -> None:
    """automation.runs, after the commit: a rule's run for its pages."""
    _publish(messages.live_event(event))


def on_denied(events: list[Any]) -> None:
    """audit.services deny hook: the newest denied attempts of a committed batch."""
    alerts = [alert_event("denied", e.seq, e.ts.isoformat(), f"{e.actor_type}:{e.actor_id}", e.action, e.reason) for e in events[-ALERTS_PER_MESSAGE:]]
    _publish(messages.live_alert(alerts))
