"""`/ws/live/`: one WebSocket per open page, pushing what changed for the devices it shows.

The session cookie authenticates the socket (AuthMiddlewareStack); the user's scopes are
re-checked before every message goes out and on every message that comes in (a user
demoted or deactivated stops receiving at once), not just at connect. A page
receives only events about what it watches (its devices, commands and enrollment codes)
plus alerts, and a device list the rows of devices that enroll while it is open. Events are
coalesced per client (latest value per device and capability, per device presence, per
command) and flushed at most every LIVE_FLUSH_S.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.utils.dateparse import parse_datetime

from automation import runs
from devices.models import Command, Device, Enrollment, EnrollmentStatus
from hub import live
from hub.actors import scopes_for_user
from hub.scopes import Scope

LIVE_FLUSH_S = 0.25
MAX_WATCHED = 500


@database_sync_to_async
def _may_read(user: Any) -> bool:
    if user is None or not user.is_authenticated:
        return False
    fresh = get_user_model().objects.filter(pk=user.pk).first()  # deactivated or demoted since connect?
    return fresh is not None and Scope.READ_STATUS in scopes_for_user(fresh)


@database_sync_to_async
def _snapshot(
    node_ids: list[str],
    command_ids: list[str],
    enrolling: list[str],
    enrolled_since: datetime | None,
    rule_ids: frozenset[int] = frozenset(),
    runs_since: datetime | None = None,
) -> list[dict[str, Any]]:
    """What a (re)connecting page missed: presence and reported values of the devices it
    shows, whether those that were waiting for enrollment have enrolled, the status of
    the commands it shows (one may have finished in between), for a device list the
    rows of devices enrolled since it was rendered (also those between render and connect),
    and for a rules page the runs of its rules since it was rendered."""
    valid_ids = []
    for text in command_ids:
        try:
            valid_ids.append(uuid.UUID(text))
        except ValueError:
            continue
    events: list[dict[str, Any]] = [
        dict(live.command_event(str(pk), status, result or {}))
        for pk, status, result in Command.objects.filter(pk__in=valid_ids).values_list("pk", "status", "result")
    ]
    latest: dict[str, tuple[str, str]] = {}  # a node's newest enrollment decides: an older used one is not this code
    for node_id, status, device_type in Enrollment.objects.filter(node_id__in=enrolling).order_by("created_at").values_list("node_id", "status", "device_type"):
        latest[node_id] = (status, device_type)
    events.extend(dict(live.enrolled_event(node_id, device_type)) for node_id, (status, device_type) in latest.items() if status == EnrollmentStatus.USED)
    for node_id, online, reported in Device.objects.filter(node_id__in=node_ids).values_list("node_id", "online", "reported"):
        events.append(dict(live.presence_event(node_id, online)))
        events.extend(dict(live.state_event(node_id, cap, value)) for cap, value in (reported or {}).items())
    if enrolled_since is not None:
        recent = Enrollment.objects.filter(status=EnrollmentStatus.USED, used_at__gt=enrolled_since).values("node_id")
        rows = Device.objects.filter(node_id__in=recent).only(*live.DEVICE_ROW_FIELDS).order_by("node_id")[:MAX_WATCHED]
        events.extend(dict(live.device_event(device)) for device in rows)
    if rule_ids and runs_since is not None:
        events.extend(dict(event) for event in runs.missed_events(rule_ids, runs_since))
    return events


def _since(value: Any) -> datetime | None:
    """A device list's render time (ISO 8601, aware), or None: not a device list."""
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if not await _may_read(self.user):
            await self.close(code=4403)
            return
        self.pending: dict[tuple[str, ...], dict[str, Any]] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=live.ALERTS_PER_MESSAGE)  # newest few, not every one of a storm
        # What the page shows (its last "watch"): everything else on the group is dropped here,
        # so a page about one device does not receive the whole fleet's reports.
        self.nodes: frozenset[str] = frozenset()
        self.commands: frozenset[str] = frozenset()
        self.enrolling: frozenset[str] = frozenset()
        self.rules: frozenset[int] = frozenset()  # rule ids whose runs the page shows
        self.lists_devices = False  # a device list: it adds the rows of devices that enroll
        await self.channel_layer.group_add(live.DASHBOARD_GROUP, self.channel_name)
        await self.accept()
        self.flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def disconnect(self, code: int) -> None:
        flusher = getattr(self, "flusher", None)
        if flusher is not None:
            flusher.cancel()
        await self.channel_layer.group_discard(live.DASHBOARD_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """`{"type": "watch", "nodes": [...], "commands": [...], "enrolling": [...], "rules": [id, …], "devices_since": ISO 8601?, "runs_since": ISO 8601?}`:
        send their current state. `devices_since` (a device list's render time) subscribes to
        the rows of devices that enroll from then on; `runs_since` (a rules page's) adds the
        runs of its rules since then."""
        if not await _may_read(self.user):
            await self.close(code=4403)
            return
        if not isinstance(content, dict) or content.get("type") != "watch":
            await self.send_json({"type": "error", "reason": 'expected {"type": "watch", "nodes": [node_id, …]}'})
            return
        nodes = [n for n in content.get("nodes", []) if isinstance(n, str)][:MAX_WATCHED]
        commands = [c for c in content.get("commands", []) if isinstance(c, str)][:MAX_WATCHED]
        enrolling = [n for n in content.get("enrolling", []) if isinstance(n, str)][:MAX_WATCHED]
        since = _since(content.get("devices_since"))
        self.rules = frozenset([r for r in content.get("rules", []) if isinstance(r, int) and not isinstance(r, bool)][:MAX_WATCHED])
        self.nodes, self.commands, self.enrolling = frozenset(nodes), frozenset(commands), frozenset(enrolling)
        self.lists_devices = since is not None
        snapshot = await _snapshot(nodes, commands, enrolling, since, self.rules, _since(content.get("runs_since")))
        self._watch_listed(snapshot)
        await self.send_json({"type": "events", "snapshot": True, "events": snapshot})

    def _watch_listed(self, events: list[dict[str, Any]]) -> None:
        """A row the list may have added is a device it shows: its presence and values follow."""
        added = [e["node_id"] for e in events if e["type"] == "device" and e["node_id"] not in self.nodes]
        if added and len(self.nodes) < 2 * MAX_WATCHED:  # bounded, like the page's own list
            self.nodes = self.nodes | frozenset(added)

    # Group messages: only what the page watches; coalesce, latest wins.
    async def device_state(self, message: dict[str, Any]) -> None:
        for node_id, values in message.get("devices", {}).items():
            if node_id not in self.nodes:
                continue
            for capability, value in values.items():
                self.pending[("state", node_id, capability)] = dict(live.state_event(node_id, capability, value))

    async def live_presence(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event["node_id"] in self.nodes:
            self.pending[("presence", event["node_id"])] = event

    async def live_command(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event["id"] in self.commands:
            self.pending[("command", event["id"])] = event

    async def live_rule_run(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event["rule_id"] in self.rules:
            self.pending[("rule_run", event["run_id"])] = event

    async def live_alert(self, message: dict[str, Any]) -> None:
        self.alerts.extend(message["events"])

    async def live_enrolled(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event["node_id"] in self.enrolling:
            self.pending[("enrolled", event["node_id"])] = event

    async def live_device(self, message: dict[str, Any]) -> None:
        if self.lists_devices:
            event = message["event"]
            self.pending[("device", event["node_id"])] = event
            self._watch_listed([event])

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(LIVE_FLUSH_S)
            if not self.pending and not self.alerts:
                continue
            if not await _may_read(self.user):
                await self.close(code=4403)
                return
            batch, self.pending = [*self.pending.values(), *self.alerts], {}
            self.alerts.clear()
            await self.send_json({"type": "events", "events": batch})
