"""DeviceConsumer: one instance per device connection, driven by the mesh gateway.

It owns the protocol of a live session: envelope checks and anti-replay on every frame,
the welcome → hello → session handshake, the scope check, and the group messages for its
node (`command.pending`, `session.revoke`, `session.reset`, `session.takeover`). What a
frame type means is not decided here: each type is handled by the handler an app
registered in `devices.session.frames` (the devices app's own in `devices.frames`).
The node id always comes from the certificate (the scope), never from a frame.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import time
import uuid
from typing import Any

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings

from audit.models import ActorType, Decision
from audit.services import Actor, record
from devices import delivery, identity, state
from devices.session import extensions as session_extensions
from devices.session import frames
from hub import messages, outages
from hub.mesh.protocol import ProtocolError, ReplayWindow, check_device_type, check_node, parse_envelope, signing_payload

logger = logging.getLogger("meshhub.consumer")

HUB_VERSION = "meshhub/0.1"


def now_ms() -> int:
    return int(time.time() * 1000)


@database_sync_to_async
def _audit_deny(node_id: str, action: str, reason: str, details: dict[str, Any]) -> None:
    record(Actor(ActorType.DEVICE, node_id, frozenset()), action, Decision.DENY, target_type="device", target_id=node_id, reason=reason, details=details)


def _sign(payload: bytes) -> str:
    return base64.b64encode(identity.signing_key().sign(payload)).decode()


@database_sync_to_async
def _went_offline(node_id: str) -> None:
    state.set_presence(node_id, False)


LAYER_RETRY_MIN_S = 0.5
LAYER_RETRY_MAX_S = 10.0


class DeviceConsumer(AsyncConsumer):
    """Scope: {"type": "mesh", "node_id", "cert_serial", "peer"} from the gateway."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """AsyncConsumer's loop, except that the channel layer is not the session's lifeline.

        The layer only carries nudges (`command.pending`), revocations, resets and takeovers;
        all of them have a fallback in the gateway's sweep. Channels ends a consumer whose
        channel receive raises, so with Redis away every device session ended and no device
        could connect until it was back, although the database (which is all that reports and
        commands need) was up. Here a failing receive waits and tries again, and the session's
        group membership is renewed once the layer answers."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        self._layer_lost = False
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            sources.append(self._layer_receive)
        try:
            await await_many_dispatch(sources, self.dispatch)
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """AsyncConsumer's dispatch without its `aclose_old_connections()` per message.

        That call is a hop to the one thread-sensitive executor that every session's
        database work shares: each frame of each device waited in its queue before being
        handled, so a firmware transfer (a chunk ack per 4 KiB) moved at the pace of that
        thread. Every database access here goes through `database_sync_to_async`, which
        closes stale connections around each call itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']!r}")
        await handler(message)

    async def _layer_receive(self) -> dict[str, Any]:
        delay = LAYER_RETRY_MIN_S
        while True:
            try:
                message: dict[str, Any] = await self.channel_layer.receive(self.channel_name)
            except Exception as exc:
                if outages.unavailable(exc) is None:
                    raise  # a bug, not an outage
                outages.report_failure(exc, f"channel receive of device session {self.scope.get('node_id')}")
                self._layer_lost = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAYER_RETRY_MAX_S)
                if hasattr(self, "group"):
                    await self._join_group()
                continue
            return message

    async def _join_group(self) -> None:
        """Join node.<id>; with the layer away the session goes on (the sweep delivers what a
        nudge would have) and the next successful receive joins again."""
        try:
            await self.channel_layer.group_add(self.group, self.channel_name)
        except Exception as exc:
            if outages.unavailable(exc) is None:
                raise
            outages.report_failure(exc, f"group_add of device session {self.node_id}")
            self._layer_lost = True
        else:
            if self._layer_lost:
                self._layer_lost = False
                outages.report_success(outages.CHANNEL_LAYER)
                try:
                    await self.deliver_pending()  # a nudge may have been lost meanwhile
                except Exception as exc:
                    if outages.unavailable(exc) is None:
                        raise
                    outages.report_failure(exc, f"delivery to device session {self.node_id}")  # the sweep tries again

    async def mesh_connect(self, message: dict[str, Any]) -> None:
        self.node_id: str = self.scope["node_id"]
        self.group = messages.node_group(self.node_id)
        self.inbound = ReplayWindow(skew_ms=settings.MESH_CLOCK_SKEW_S * 1000)
        self.out_seq = 0
        self.session_token = secrets.token_urlsafe(18)
        self.established = False
        self.scopes: frozenset[str] = frozenset()  # granted at `session`, from the frame registry
        self.replaced = False
        self.specs: dict[str, Any] = {}
        self.sent: set[str] = set()
        # State reports waiting for their batch to commit: a device may have several in
        # flight (acks come after commit, in any order), up to MESH_STATE_IN_FLIGHT.
        self.storing: set[asyncio.Task[None]] = set()
        self.extensions = session_extensions.build(self)
        if self.channel_layer is not None:
            await self._join_group()
            # One session per node across gateways: an older session elsewhere ends itself.
            # (On this gateway the server already replaced it; this reaches the others.)
            try:
                await self.channel_layer.group_send(self.group, messages.session_takeover(self.scope.get("gateway", ""), self.scope.get("peer", "")))
            except Exception:  # the layer is away: the other gateway's session ends on its idle timeout
                logger.warning("session.takeover for %s not sent", self.node_id, exc_info=True)
        await self.send_frame("welcome", {"hub_version": HUB_VERSION, "time_ms": now_ms(), "node_id": self.node_id, "heartbeat_s": settings.MESH_HEARTBEAT_S})

    async def mesh_disconnect(self, message: dict[str, Any]) -> None:
        # Offline first: presence must not depend on the channel layer being reachable. Only
        # a session that went online (hello) goes offline, and not when a newer session of
        # the node replaced it: that one is online now.
        storing: set[asyncio.Task[None]] = getattr(self, "storing", set())
        if storing:  # reports still in a batch would mark the device online again after this
            await asyncio.wait(storing, timeout=10)
        try:
            for extension in getattr(self, "extensions", {}).values():
                try:
                    await extension.on_closed()
                except Exception:  # one app's failure must not keep the device online
                    logger.exception("session extension on_closed failed for %s", self.node_id)
            if getattr(self, "established", False) and not message.get("replaced") and not getattr(self, "replaced", False):
                await _went_offline(self.node_id)
        finally:
            if self.channel_layer is not None:
                try:
                    await self.channel_layer.group_discard(self.group, self.channel_name)
                except Exception:  # the group entry expires on its own (group_expiry)
                    logger.warning("group_discard for %s failed", self.node_id, exc_info=True)
        raise StopConsumer()

    def envelope(self, kind: str, body: dict[str, Any], *, frame_id: str | None = None, ttl_ms: int = 30_000, **extra: Any) -> dict[str, Any]:
        """The next outbound frame of this session (its own seq, a fresh nonce)."""
        self.out_seq += 1
        frame = {
            "v": 1,
            "type": kind,
            "id": frame_id or str(uuid.uuid4()),
            "seq": self.out_seq,
            "issued_at": now_ms(),
            "ttl_ms": ttl_ms,
            "nonce": base64.b64encode(os.urandom(16)).decode(),
            "body": body,
            **extra,
        }
        if self.established:
            frame["session"] = self.session_token
        return frame

    async def send_frame(self, kind: str, body: dict[str, Any], **extra: Any) -> None:
        await self.send({"type": "mesh.send", "frame": self.envelope(kind, body, **extra)})

    async def refuse(self, error: ProtocolError, frame: dict[str, Any]) -> None:
        await _audit_deny(self.node_id, "mesh.frame", error.reason, {"code": error.code, "type": str(frame.get("type"))[:32]})
        ref = frame.get("id") if isinstance(frame.get("id"), str) else None
        await self.send_frame("error", {"code": error.code, "reason": error.reason, "ref": ref})

    async def mesh_frame(self, message: dict[str, Any]) -> None:
        frame = message["frame"]
        try:
            envelope = parse_envelope(frame)
            check_device_type(envelope.type)
            check_node(envelope.body, self.node_id)
            if not self.established:
                if envelope.type != "hello":
                    raise ProtocolError("bad_session", f"expected 'hello' first, got '{envelope.type}'")
            elif envelope.session != self.session_token:
                raise ProtocolError("bad_session", "missing or wrong session token")
            self.inbound.check(envelope, now_ms())
            handler = frames.get(envelope.type)
            if handler is None:
                raise ProtocolError("not_supported", f"'{envelope.type}' frames are not handled by this hub version")
            # The scope is re-checked on every frame: the open connection is not authority.
            if self.established and handler.scope not in self.scopes:
                raise ProtocolError("forbidden_scope", f"'{envelope.type}' frames need scope '{handler.scope}', which this session does not grant")
            await handler.handle(self, envelope)
        except ProtocolError as error:
            await self.refuse(error, frame)

    async def establish(self, *, ref: str, scopes: set[str] | None = None) -> None:
        """`hello` accepted: grant `scopes` (by default every scope of the registered frame
        handlers; the hello handler withholds what this device may not do now) and say so."""
        self.scopes = frozenset(frames.scopes() if scopes is None else scopes)
        await self.send_frame("session", {"token": self.session_token, "scopes": sorted(self.scopes), "heartbeat_s": settings.MESH_HEARTBEAT_S}, ref=ref)
        self.established = True
        for extension in self.extensions.values():
            await extension.on_established()

    async def send_signed_frame(self, kind: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """A frame signed with the hub signing key over {type, id, issued_at, node_id, body}
        (ota.*, reset): the device acts on it only with a valid signature."""
        # Signed first, numbered after: the signature covers type, id, issued_at and body (not
        # seq), and awaiting it must not let a later frame overtake this one's seq (the device
        # refuses a seq below one it accepted).
        frame_id = extra.pop("frame_id", None) or str(uuid.uuid4())
        subject = {"type": kind, "id": frame_id, "issued_at": now_ms(), "body": body}
        signature = await database_sync_to_async(_sign)(signing_payload(subject, self.node_id))
        frame = self.envelope(kind, body, frame_id=frame_id, **extra)
        frame["issued_at"] = subject["issued_at"]
        frame["sig"] = signature
        await self.send({"type": "mesh.send", "frame": frame})
        return frame

    async def app_message(self, message: dict[str, Any]) -> None:
        """Group message for an app's session extension (hub.messages.app_message)."""
        extension = self.extensions.get(message.get("app", ""))
        if extension is not None and self.established:
            await extension.on_message(message["event"], message.get("data") or {})

    async def deliver_pending(self) -> None:
        """Send what the outbox holds for this node and this session has not sent yet."""
        if not self.established:
            return
        commands = await database_sync_to_async(delivery.pending_for)(self.node_id, self.sent)
        for command in commands:
            self.sent.add(command["id"])
            await self.send_command(command)

    async def send_command(self, command: dict[str, Any]) -> None:
        # The message id is the command id: at most once, on both ends.
        frame = self.envelope("command", command["body"], frame_id=command["id"], ttl_ms=command["ttl_ms"])
        await self.send({"type": "mesh.send", "frame": frame})

    async def command_pending(self, message: dict[str, Any]) -> None:
        """A nudge: from send_command() after commit (group node.<id>) or the gateway's sweep."""
        await self.deliver_pending()

    async def session_reset(self, message: dict[str, Any]) -> None:
        """Group message from provision.reset / factory_reset: tell the device, signed, then end."""
        await self.send_signed_frame("reset", {"kind": message["kind"]})
        await self.send({"type": "mesh.close", "reason": f"device reset ({message['kind']})"})

    async def session_takeover(self, message: dict[str, Any]) -> None:
        """A newer session of this node started (on any gateway): this one ends."""
        if message.get("gateway") == self.scope.get("gateway", ""):
            return  # on its own gateway the server has already replaced the older session
        self.replaced = True
        await _audit_deny(
            self.node_id,
            "mesh.session.replaced",
            "a newer connection of the same node replaced this session",
            {"peer": self.scope.get("peer", ""), "new_peer": message.get("peer", "")},
        )
        await self.send({"type": "mesh.close", "code": "replaced", "reason": "a newer connection of this node replaced this session"})

    async def session_revoke(self, message: dict[str, Any]) -> None:
        """Group message from the revocation service: this session ends now."""
        await self.send({"type": "mesh.close", "code": "revoked", "reason": f"certificate revoked: {message.get('reason', '')}"})
