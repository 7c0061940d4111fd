"""The devices app's own frame handlers: hello, state, event, ack, result, ping, pong,
error and cert.renew, registered in `DevicesConfig.ready()` through the same registry
(`devices.session.frames`) that OTA and other apps use.

Each handler gets the live session (`DeviceConsumer`) and a frame that already passed
the envelope, node, session-token, anti-replay and scope checks; it raises
`ProtocolError` to refuse (answered with an `error` frame and audited by the session).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from audit.models import ActorType, Decision
from audit.services import Actor, record
from devices import capabilities as declarations
from devices import delivery, identity, state
from devices.consumers import now_ms
from devices.models import Certificate, CertificateStatus, Device
from devices.session import DeviceScope, FrameRegistry, frames
from hub import outages
from hub.mesh.protocol import Envelope, ProtocolError

if TYPE_CHECKING:
    from devices.consumers import DeviceConsumer

logger = logging.getLogger("meshhub.consumer")


def register(registry: FrameRegistry) -> None:
    """Called from DevicesConfig.ready(): the frames every device speaks."""
    app = "devices"
    registry.register("hello", DeviceScope.SESSION, on_hello, app=app)
    registry.register("ping", DeviceScope.SESSION, on_ping, app=app)
    registry.register("pong", DeviceScope.SESSION, on_pong, app=app)
    registry.register("error", DeviceScope.SESSION, on_error, app=app)
    registry.register("state", DeviceScope.REPORT, on_state, app=app)
    registry.register("event", DeviceScope.REPORT, on_event, app=app)
    registry.register("ack", DeviceScope.ANSWER, on_ack, app=app)
    registry.register("result", DeviceScope.ANSWER, on_result, app=app)
    registry.register("cert.renew", DeviceScope.RENEW, on_cert_renew, app=app)


# --- state batching ---------------------------------------------------------------------


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
                outages.report_failure(exc, f"state batch of {len(batch)} reports")  # one line per outage; a bug's traceback
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            outages.report_success(outages.DATABASE)
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


# --- database work (in a thread) -----------------------------------------------------------


def _renewal_due(serial: str) -> bool:
    horizon = timezone.now() + timedelta(days=settings.CERT_RENEW_BEFORE_DAYS)
    cert = Certificate.objects.filter(serial=serial, status=CertificateStatus.ACTIVE).first()
    return cert is not None and cert.not_after < horizon and not hasattr(cert, "replaced_by")


def _confirm_renewal_if_new(serial: str, node_id: str) -> None:
    """A session on a renewed certificate proves the device switched: supersede the old one."""
    cert = Certificate.objects.filter(serial=serial, replaces__isnull=False).first()
    if cert is not None:
        identity.confirm_renewal(Actor(ActorType.DEVICE, node_id, frozenset()), cert)


@database_sync_to_async
def _accept_hello(node_id: str, body: dict[str, Any], serial: str, clock_offset_ms: int | None) -> tuple[list[str], dict[str, Any]]:
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
        record(
            Actor(ActorType.DEVICE, node_id, frozenset()),
            "mesh.session",
            Decision.ALLOW,
            target_type="device",
            target_id=node_id,
            details={"firmware_version": version, "clock_offset_ms": clock_offset_ms},
        )
    return problems, state.capability_specs(device)


# --- handlers ------------------------------------------------------------------------------


async def on_hello(session: DeviceConsumer, envelope: Envelope) -> None:
    if session.established:
        raise ProtocolError("bad_session", "the session is already established")
    problems, session.specs = await _accept_hello(session.node_id, envelope.body, session.scope["cert_serial"], session.inbound.offset_ms)
    if problems:
        raise ProtocolError("bad_hello", "; ".join(problems))
    # `renew` is granted only when the hub wants a renewal: a device cannot have
    # certificates issued whenever it likes.
    renewal_due = await database_sync_to_async(_renewal_due)(session.scope["cert_serial"])
    granted = {scope for scope in frames.scopes() if scope != DeviceScope.RENEW or renewal_due}
    await session.establish(ref=envelope.id, scopes=granted)
    await session.deliver_pending()
    if renewal_due:
        await session.send_frame("cert.renew", {"reason": "certificate expires soon: send a CSR for a new key"})


async def on_ack(session: DeviceConsumer, envelope: Envelope) -> None:
    try:
        await database_sync_to_async(delivery.mark_delivered)(session.node_id, envelope.body.get("id"))
    except delivery.AnswerRefused as exc:
        raise ProtocolError(exc.code, exc.reason) from None


async def on_result(session: DeviceConsumer, envelope: Envelope) -> None:
    body = envelope.body
    try:
        await database_sync_to_async(delivery.record_result)(session.node_id, body.get("id"), body.get("status"), body.get("value"), body.get("reason"))
    except delivery.AnswerRefused as exc:
        raise ProtocolError(exc.code, exc.reason) from None


async def on_state(session: DeviceConsumer, envelope: Envelope) -> None:
    errors = state.check_values(session.specs, envelope.body.get("values"))
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
    report = state.StateReport(session.node_id, dict(envelope.body["values"]), datetime.fromtimestamp(ts_ms / 1000, tz=UTC))
    if len(session.storing) >= settings.MESH_STATE_IN_FLIGHT:  # back-pressure: the next frame waits
        await asyncio.wait(session.storing, return_when=asyncio.FIRST_COMPLETED)
    task = asyncio.get_running_loop().create_task(_ack_when_stored(session, state_batcher().submit(report), envelope.id))
    session.storing.add(task)
    task.add_done_callback(session.storing.discard)


async def _ack_when_stored(session: DeviceConsumer, stored: asyncio.Future[None], ref: str) -> None:
    """`ack` only after the report's batch committed; a failed batch is never acked."""
    try:
        await stored
    except Exception:
        await session.send_frame("error", {"code": "unavailable", "reason": "state not stored; resend later", "ref": ref})
        return
    await session.send_frame("ack", {"ref": ref})


async def on_event(session: DeviceConsumer, envelope: Envelope) -> None:
    name = envelope.body.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError("bad_event", "event needs a name")
    data = envelope.body.get("data")
    logger.info("event %s from %s", name, session.node_id, extra={"node_id": session.node_id, "event": name, "data": data})
    if name == "dropped_events" and isinstance(data, dict) and isinstance(data.get("count"), int):
        try:
            await database_sync_to_async(state.record_dropped_events)(session.node_id, data["count"])
        except DatabaseError:  # not stored, so not acked: the device sends it again
            logger.exception("dropped_events of %s not stored", session.node_id)
            await session.send_frame("error", {"code": "unavailable", "reason": "event not stored; resend later", "ref": envelope.id})
            return
    await session.send_frame("ack", {"ref": envelope.id})


async def on_cert_renew(session: DeviceConsumer, envelope: Envelope) -> None:
    """The device's answer: a CSR for a fresh key. The new cert is used from its next connection."""
    try:
        actor = Actor(ActorType.DEVICE, session.node_id, session.scopes)
        cert = await database_sync_to_async(identity.renew_certificate)(actor, session.node_id, envelope.body.get("csr"))
    except identity.IdentityError as exc:
        raise ProtocolError(exc.code, exc.reason) from None
    chain = await database_sync_to_async(lambda: [ca.cert_pem for ca in identity.trusted_cas()])()
    await session.send_frame("cert.issued", {"cert": cert.pem, "ca_chain": chain, "serial": cert.serial}, ref=envelope.id)


async def on_ping(session: DeviceConsumer, envelope: Envelope) -> None:
    await database_sync_to_async(state.touch)(session.node_id)
    await session.send_frame("pong", {"ref": envelope.id, "time_ms": now_ms()})


async def on_pong(session: DeviceConsumer, envelope: Envelope) -> None:
    return None


@database_sync_to_async
def _audit_device_refusal(node_id: str, code: str, reason: str, ref: str) -> None:
    record(
        Actor(ActorType.DEVICE, node_id, frozenset()),
        "mesh.device.refused",
        Decision.DENY,
        target_type="device",
        target_id=node_id,
        reason=f"the device refused hub frame {ref or '?'}: {code}: {reason}",
        details={"code": code, "ref": ref},
    )


async def on_error(session: DeviceConsumer, envelope: Envelope) -> None:
    """The device refused one of our frames (anti-replay, signature, certificate...): it did
    not act on it. Logged and audited as a deny with the device's code, reason and ref."""
    body = envelope.body
    code, reason, ref = (str(body.get(key) or "")[:limit] for key, limit in (("code", 32), ("reason", 300), ("ref", 64)))
    logger.warning("device %s refused hub frame %s: %s: %s", session.node_id, ref or "?", code or "error", reason)
    await _audit_device_refusal(session.node_id, code or "error", reason, ref)
