"""DeviceConsumer: one instance per device connection, driven by the mesh gateway.

It owns the protocol of a live session: envelope checks and anti-replay on every frame,
the welcome → hello → session handshake, state reports (validated, batched, acked after
commit), heartbeats, and the group messages for its node (`session.revoke`).
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
from datetime import UTC, datetime
from typing import Any

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.conf import settings

from audit.models import ActorType, Decision
from audit.services import Actor, record
from devices import capabilities as declarations
from devices import delivery, state
from devices.models import Device
from hub.mesh.protocol import Envelope, ProtocolError, ReplayWindow, check_device_type, check_node, parse_envelope, signing_payload

logger = logging.getLogger("meshhub.consumer")

HUB_VERSION = "meshhub/0.1"
HANDLED = {"hello", "state", "ping", "pong", "event", "error", "ack", "result", "cert.renew"}


def now_ms() -> int:
    return int(time.time() * 1000)


class StateBatcher:
    """Collects state reports from every session of this process; one transaction per
    flush (by size or after MESH_STATE_FLUSH_S); each report's future resolves after commit."""

    def __init__(self) -> None:
        self._pending: list[tuple[state.StateReport, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()

    def _schedule_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def submit(self, report: state.StateReport) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((report, future))
        if len(self._pending) >= settings.MESH_STATE_BATCH:
            self._schedule_flush()
        elif self._timer is None:
            self._timer = loop.call_later(settings.MESH_STATE_FLUSH_S, self._schedule_flush)
        return future

    async def flush(self) -> None:
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await database_sync_to_async(state.apply_reports)([report for report, _ in batch])
            except Exception as exc:  # nothing was acknowledged: devices keep and resend
                logger.exception("state batch of %d reports failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


_batchers: dict[asyncio.AbstractEventLoop, StateBatcher] = {}


def state_batcher() -> StateBatcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = StateBatcher()
    return batcher


@database_sync_to_async
def _load_specs(node_id: str) -> dict[str, Any]:
    device = Device.objects.get(node_id=node_id)
    return state.capability_specs(device)


def _renewal_due(serial: str) -> bool:
    from datetime import timedelta

    from django.utils import timezone

    from devices.models import Certificate, CertificateStatus

    horizon = timezone.now() + timedelta(days=settings.CERT_RENEW_BEFORE_DAYS)
    cert = Certificate.objects.filter(serial=serial, status=CertificateStatus.ACTIVE).first()
    return cert is not None and cert.not_after < horizon and not hasattr(cert, "replaced_by")


def _confirm_renewal_if_new(serial: str, node_id: str) -> None:
    """A session on a renewed certificate proves the device switched: supersede the old one."""
    from devices import identity
    from devices.models import Certificate

    cert = Certificate.objects.filter(serial=serial, replaces__isnull=False).first()
    if cert is not None:
        identity.confirm_renewal(Actor(ActorType.DEVICE, node_id), cert)


@database_sync_to_async
def _accept_hello(node_id: str, body: dict[str, Any], serial: str) -> tuple[list[str], dict[str, Any]]:
    device = Device.objects.get(node_id=node_id)
    _confirm_renewal_if_new(serial, node_id)
    problems: list[str] = []
    if "capabilities" in body:
        caps, problems = declarations.check_declaration(body["capabilities"])
        if not problems:
            declarations.store_declaration(device, caps)
    if not problems:
        version = body.get("firmware_version")
        if isinstance(version, str) and version and version != device.firmware_version:
            Device.objects.filter(pk=device.pk).update(firmware_version=version[:50])
        state.set_presence(node_id, True)
        record(Actor(ActorType.DEVICE, node_id), "mesh.session", Decision.ALLOW, target_type="device", target_id=node_id, details={"firmware_version": version})
    return problems, state.capability_specs(device)


@database_sync_to_async
def _audit_deny(node_id: str, action: str, reason: str, details: dict[str, Any]) -> None:
    record(Actor(ActorType.DEVICE, node_id), action, Decision.DENY, target_type="device", target_id=node_id, reason=reason, details=details)


def _sign(payload: bytes) -> str:
    from devices import identity

    return base64.b64encode(identity.signing_key().sign(payload)).decode()


@database_sync_to_async
def _went_offline(node_id: str) -> None:
    state.set_presence(node_id, False)


class DeviceConsumer(AsyncConsumer):
    """Scope: {"type": "mesh", "node_id", "cert_serial", "peer"} from the gateway."""

    async def mesh_connect(self, message: dict[str, Any]) -> None:
        self.node_id: str = self.scope["node_id"]
        self.group = f"node.{self.node_id}"
        self.inbound = ReplayWindow(skew_ms=settings.MESH_CLOCK_SKEW_S * 1000)
        self.out_seq = 0
        self.session_token = secrets.token_urlsafe(18)
        self.established = False
        self.replaced = False
        self.specs: dict[str, Any] = {}
        self.sent: set[str] = set()
        # State reports waiting for their batch to commit: a device may have several in
        # flight (acks come after commit, in any order), up to MESH_STATE_IN_FLIGHT.
        self.storing: set[asyncio.Task[None]] = set()
        if self.channel_layer is not None:
            await self.channel_layer.group_add(self.group, self.channel_name)
            # One session per node across gateways: an older session elsewhere ends itself.
            # (On this gateway the server already replaced it; this reaches the others.)
            try:
                await self.channel_layer.group_send(
                    self.group, {"type": "session.takeover", "gateway": self.scope.get("gateway", ""), "peer": self.scope.get("peer", "")}
                )
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
            if envelope.type not in HANDLED:
                raise ProtocolError("not_supported", f"'{envelope.type}' frames are not handled by this hub version")
            await getattr(self, "on_" + envelope.type.replace(".", "_"))(envelope)
        except ProtocolError as error:
            await self.refuse(error, frame)

    async def on_hello(self, envelope: Envelope) -> None:
        if self.established:
            raise ProtocolError("bad_session", "the session is already established")
        problems, self.specs = await _accept_hello(self.node_id, envelope.body, self.scope["cert_serial"])
        if problems:
            raise ProtocolError("bad_hello", "; ".join(problems))
        await self.send_frame(
            "session", {"token": self.session_token, "scopes": ["read-status", "command"], "heartbeat_s": settings.MESH_HEARTBEAT_S}, ref=envelope.id
        )
        self.established = True
        await self.deliver_pending()
        if await database_sync_to_async(_renewal_due)(self.scope["cert_serial"]):
            await self.send_frame("cert.renew", {"reason": "certificate expires soon: send a CSR for a new key"})

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

    async def on_ack(self, envelope: Envelope) -> None:
        problem = await database_sync_to_async(delivery.mark_delivered)(self.node_id, envelope.body.get("id"))
        if problem:
            raise ProtocolError("bad_ack", problem)

    async def on_result(self, envelope: Envelope) -> None:
        body = envelope.body
        problem = await database_sync_to_async(delivery.record_result)(self.node_id, body.get("id"), body.get("status"), body.get("value"), body.get("reason"))
        if problem:
            raise ProtocolError("bad_result", problem)

    async def on_state(self, envelope: Envelope) -> None:
        errors = state.check_values(self.specs, envelope.body.get("values"))
        if errors:
            raise ProtocolError("bad_state", "; ".join(errors.values()))
        # ts is when the device measured: it may be old (reports buffered while offline),
        # never from the future beyond the allowed skew.
        ts_ms = envelope.body.get("ts", envelope.issued_at)
        now = now_ms()
        if (
            isinstance(ts_ms, bool)
            or not isinstance(ts_ms, int)
            or ts_ms > now + settings.MESH_CLOCK_SKEW_S * 1000
            or ts_ms < now - settings.MESH_STATE_MAX_AGE_S * 1000
        ):
            raise ProtocolError("bad_state", f"ts must be milliseconds since the epoch, at most {settings.MESH_STATE_MAX_AGE_S} s old and not in the future")
        report = state.StateReport(self.node_id, dict(envelope.body["values"]), datetime.fromtimestamp(ts_ms / 1000, tz=UTC))
        if len(self.storing) >= settings.MESH_STATE_IN_FLIGHT:  # back-pressure: the next frame waits
            await asyncio.wait(self.storing, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.get_running_loop().create_task(self._ack_when_stored(state_batcher().submit(report), envelope.id))
        self.storing.add(task)
        task.add_done_callback(self.storing.discard)

    async def _ack_when_stored(self, stored: asyncio.Future[None], ref: str) -> None:
        """`ack` only after the report's batch committed; a failed batch is never acked."""
        try:
            await stored
        except Exception:
            await self.send_frame("error", {"code": "unavailable", "reason": "state not stored; resend later", "ref": ref})
            return
        await self.send_frame("ack", {"ref": ref})

    async def on_event(self, envelope: Envelope) -> None:
        name = envelope.body.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError("bad_event", "event needs a name")
        data = envelope.body.get("data")
        logger.info("event %s from %s", name, self.node_id, extra={"node_id": self.node_id, "event": name, "data": data})
        if name == "dropped_events" and isinstance(data, dict) and isinstance(data.get("count"), int):
            await database_sync_to_async(state.record_dropped_events)(self.node_id, data["count"])
        await self.send_frame("ack", {"ref": envelope.id})

    async def on_cert_renew(self, envelope: Envelope) -> None:
        """The device's answer: a CSR for a fresh key. The new cert is used from its next connection."""
        from devices import identity

        try:
            cert = await database_sync_to_async(identity.renew_certificate)(Actor(ActorType.DEVICE, self.node_id), self.node_id, envelope.body.get("csr"))
        except identity.IdentityError as exc:
            raise ProtocolError(exc.code, exc.reason) from None
        chain = await database_sync_to_async(lambda: [ca.cert_pem for ca in identity.trusted_cas()])()
        await self.send_frame("cert.issued", {"cert": cert.pem, "ca_chain": chain, "serial": cert.serial}, ref=envelope.id)

    async def on_ping(self, envelope: Envelope) -> None:
        await database_sync_to_async(state.touch)(self.node_id)
        await self.send_frame("pong", {"ref": envelope.id, "time_ms": now_ms()})

    async def on_pong(self, envelope: Envelope) -> None:
        return None

    async def on_error(self, envelope: Envelope) -> None:
        logger.info("device %s reported an error: %s", self.node_id, envelope.body)

    async def session_reset(self, message: dict[str, Any]) -> None:
        """Group message from provision.reset / factory_reset: tell the device, signed, then end."""
        frame = self.envelope("reset", {"kind": message["kind"]})
        frame["sig"] = await database_sync_to_async(_sign)(signing_payload(frame, self.node_id))
        await self.send({"type": "mesh.send", "frame": frame})
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
