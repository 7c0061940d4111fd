"""Frame handlers and session extensions that apps register: the one way a device frame
type gets handled, and the one way an app keeps something per session.

An app registers, in its `AppConfig.ready()`, each device→hub frame type it handles,
the device scope that frame needs, and an async handler. The device session
(`devices.consumers.DeviceConsumer`) looks every accepted frame up here: a type nobody
registered is answered `not_supported`; a handler whose scope the session does not grant
is answered `forbidden_scope`. The `session` frame lists the scopes granted, which are
the scopes of the registered handlers: an app that registers OTA frames adds `ota`.

The device scopes are the capability matrix of ARCHITECTURE §4: a device may open and
keep its session, report, answer what the hub asked, and renew its certificate; it may
never command, reset, provision or roll back anything (those frame types are refused by
`hub.mesh.protocol.check_device_type` before a handler is looked up, and cannot be
registered).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ImproperlyConfigured

from hub.mesh.protocol import DEVICE_TYPES, Envelope

if TYPE_CHECKING:
    from devices.consumers import DeviceConsumer


class DeviceScope(StrEnum):
    """What a device may do in a session (device→hub), one scope per kind of frame."""

    SESSION = "session"  # open and keep the session: hello, ping, pong, error
    REPORT = "report"  # state and events it measured
    ANSWER = "answer"  # acknowledge and answer what the hub sent: ack, result
    RENEW = "renew"  # a CSR for its next certificate
    OTA = "ota"  # answers within a firmware transfer (ota.*), boot and health beacons


Handler = Callable[["DeviceConsumer", Envelope], Awaitable[None]]


@dataclass(frozen=True)
class FrameHandler:
    frame_type: str
    scope: DeviceScope
    handle: Handler
    app: str


class FrameRegistry:
    """Frame type → handler. Registration happens once per process, in `ready()`."""

    def __init__(self) -> None:
        self._handlers: dict[str, FrameHandler] = {}

    def register(self, frame_type: str, scope: DeviceScope, handle: Handler, *, app: str) -> None:
        if frame_type not in DEVICE_TYPES:
            raise ImproperlyConfigured(f"{app} registers '{frame_type}', which is not a frame type devices may send (hub.mesh.protocol.DEVICE_TYPES)")
        existing = self._handlers.get(frame_type)
        if existing is not None and existing.handle is not handle:
            raise ImproperlyConfigured(f"{app} registers '{frame_type}', already handled by {existing.app}")
        self._handlers[frame_type] = FrameHandler(frame_type, DeviceScope(scope), handle, app)

    def unregister(self, frame_type: str) -> None:
        self._handlers.pop(frame_type, None)

    def get(self, frame_type: str) -> FrameHandler | None:
        return self._handlers.get(frame_type)

    def scopes(self) -> list[str]:
        """What the `session` frame grants: every scope some registered handler needs."""
        return sorted({str(h.scope) for h in self._handlers.values()})

    def types(self) -> list[str]:
        return sorted(self._handlers)


frames = FrameRegistry()


class SessionExtension(Protocol):
    """What an app keeps per device session (OTA: the transfer in progress). The session
    calls it when it is established, for each `app.message` to its app on the node's group
    (hub.messages.app_message), and when it ends; frame handlers reach it through
    `session.extensions[app]`."""

    async def on_established(self) -> None: ...

    async def on_message(self, event: str, data: dict[str, Any]) -> None: ...

    async def on_closed(self) -> None: ...


ExtensionFactory = Callable[["DeviceConsumer"], SessionExtension]


class ExtensionRegistry:
    """App name → factory of its per-session extension; registered once in `ready()`."""

    def __init__(self) -> None:
        self._factories: dict[str, ExtensionFactory] = {}

    def register(self, app: str, factory: ExtensionFactory) -> None:
        existing = self._factories.get(app)
        if existing is not None and existing is not factory:
            raise ImproperlyConfigured(f"{app} registers a second session extension")
        self._factories[app] = factory

    def unregister(self, app: str) -> None:
        self._factories.pop(app, None)

    def build(self, session: DeviceConsumer) -> dict[str, SessionExtension]:
        return {app: factory(session) for app, factory in self._factories.items()}


extensions = ExtensionRegistry()


Sweeper = Callable[[list[str]], dict[str, list[dict[str, Any]]]]


class SweepRegistry:
    """App name → a function the gateway's 1 s sweep calls with its connected node ids; it
    returns, per node, `app.message`s to hand to that session as if they came over the
    channel layer. What an app must not lose to a lost nudge (an OTA offer, a signed order
    to a device) waits in its rows and reaches the session through here."""

    def __init__(self) -> None:
        self._sweepers: dict[str, Sweeper] = {}

    def register(self, app: str, sweeper: Sweeper) -> None:
        existing = self._sweepers.get(app)
        if existing is not None and existing is not sweeper:
            raise ImproperlyConfigured(f"{app} registers a second sweeper")
        self._sweepers[app] = sweeper

    def unregister(self, app: str) -> None:
        self._sweepers.pop(app, None)

    def sweep(self, node_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for sweeper in list(self._sweepers.values()):
            for node_id, queued in sweeper(node_ids).items():
                found.setdefault(node_id, []).extend(queued)
        return found


sweepers = SweepRegistry()
