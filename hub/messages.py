"""Every channel-layer message the hub sends: one TypedDict and one builder per type.

Channels routes a message by its `type` to the consumer method of the same name (dots
become underscores: `session.reset` → `DeviceConsumer.session_reset`), so a misspelt key
or type is a message nobody handles. Building each one here, and nowhere else, keeps
sender and receiver agreeing. No Django, no domain imports: any app may use it.

Groups: `node.<node_id>` (the device's live session, on whichever gateway holds it),
`mesh.gateways` (every gateway), `dashboard` (every operator page's live consumer).
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

GATEWAYS_GROUP = "mesh.gateways"
DASHBOARD_GROUP = "dashboard"


def node_group(node_id: str) -> str:
    return f"node.{node_id}"


# --- to a device's session (group node.<node_id>) --------------------------------------------


class CommandPending(TypedDict):
    """A command waits in the outbox (after commit, or from the gateway's 1 s sweep)."""

    type: Literal["command.pending"]
    command_id: str


class SessionRevoke(TypedDict):
    """The session's certificate was revoked: close now."""

    type: Literal["session.revoke"]
    reason: str
    serials: list[str]


class SessionReset(TypedDict):
    """Send the device its signed `reset` frame, then close (kind: provision.reset / factory_reset)."""

    type: Literal["session.reset"]
    kind: str


class SessionTakeover(TypedDict):
    """A newer session of the node opened (on `gateway`): an older one elsewhere ends itself."""

    type: Literal["session.takeover"]
    gateway: str
    peer: str


class AppMessage(TypedDict):
    """For an app's session extension (devices.session.extensions): `app` names it, `event`
    and `data` are the app's own (ota: {"event": "offer", "data": {"deployment": id}})."""

    type: Literal["app.message"]
    app: str
    event: str
    data: dict[str, Any]


def app_message(app: str, event: str, data: dict[str, Any]) -> AppMessage:
    return {"type": "app.message", "app": app, "event": event, "data": data}


def command_pending(command_id: str = "") -> CommandPending:
    return {"type": "command.pending", "command_id": command_id}


def session_revoke(reason: str, serials: list[str]) -> SessionRevoke:
    return {"type": "session.revoke", "reason": reason, "serials": list(serials)}


def session_reset(kind: str) -> SessionReset:
    return {"type": "session.reset", "kind": kind}


def session_takeover(gateway: str, peer: str) -> SessionTakeover:
    return {"type": "session.takeover", "gateway": gateway, "peer": peer}


# --- to every gateway (group mesh.gateways) ---------------------------------------------------


class CrlChanged(TypedDict):
    """A CRL or the set of trusted CAs changed: rebuild the TLS context."""

    type: Literal["pki.crl_changed"]


def crl_changed() -> CrlChanged:
    return {"type": "pki.crl_changed"}


# --- liveness probe (/healthz sends one to itself) ----------------------------------------------


class HealthzPing(TypedDict):
    type: Literal["healthz.ping"]
    nonce: str


def healthz_ping(nonce: str) -> HealthzPing:
    return {"type": "healthz.ping", "nonce": nonce}


# --- to the operator pages (group dashboard) -------------------------------------------------
# The events inside are the browser-facing TypedDicts of hub.live.


class DeviceStateMessage(TypedDict):
    """The latest value per device and capability of one committed batch."""

    type: Literal["device.state"]
    devices: dict[str, dict[str, Any]]


class LiveEventMessage(TypedDict):
    """One live event (presence, command, enrolled…) for the pages; `type` is `live.<event type>`."""

    type: str
    event: dict[str, Any]


class LiveAlertMessage(TypedDict):
    type: Literal["live.alert"]
    events: list[dict[str, Any]]


def device_state(devices: dict[str, dict[str, Any]]) -> DeviceStateMessage:
    return {"type": "device.state", "devices": devices}


def live_event(event: Any) -> LiveEventMessage:
    """Wrap a hub.live event: routed to `LiveConsumer.live_<its type>`."""
    return {"type": f"live.{event['type']}", "event": dict(event)}


def live_alert(events: list[Any]) -> LiveAlertMessage:
    return {"type": "live.alert", "events": [dict(e) for e in events]}
