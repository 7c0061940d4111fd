"""The transfer of one image to one device, inside its session on the gateway: the OTA
app's session extension (devices.session.extensions) and the handlers of the frames a
device answers a transfer with.

The gateway offers when the driver says so (an `app.message` "offer" on the node's group)
or when a device whose transfer was cut comes back; it then streams the image from the
firmware storage, `window` chunks ahead of the device's acknowledgements, reading each
chunk when it is sent (hub memory stays flat whatever the image size and however many
devices update at once). Every event goes through the state machine; the offset is
written to the row at most once a second while chunks flow, and at once on every change
of state, so a restarted gateway resumes from an offset the device really holds.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from devices.session import DeviceScope
from hub import messages
from hub.mesh.protocol import Envelope, ProtocolError
from ota import deployments
from ota import statemachine as sm
from ota.models import Deployment, DeploymentState, DeviceFirmware
from ota.releases import firmware_storage

if TYPE_CHECKING:
    from devices.consumers import DeviceConsumer

logger = logging.getLogger("meshhub.ota")
# Bytes read from storage at a time per transfer: the memory a transfer holds on the
# gateway (100 at once: 6.4 MB), whatever the image's size.
READ_AHEAD = 64 * 1024


def _int(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_frame", f"'{name}' must be an integer")
    return value


class OtaSession:
    """Per device session: the deployment being transferred, its machine state (with the
    chunks in flight, which only this gateway knows) and the open image."""

    def __init__(self, session: DeviceConsumer) -> None:
        self.session = session
        self.deployment_id: int | None = None
        self.state: sm.DeploymentState | None = None
        self.image: IO[bytes] | None = None
        self.ahead = b""  # the image from `ahead_at` on, read in READ_AHEAD blocks
        self.ahead_at = 0
        self.saved_at = 0.0
        self.saving: asyncio.Future[bool] | None = None  # the offset being written, off the ack path

    # --- the session's life -----------------------------------------------------------

    async def on_established(self) -> None:
        """A device whose transfer was cut while the hub recorded it in transfer gets it
        offered again by the gateway's sweep (`resume`, once the transfer has been silent
        for STALE_S): by then the device's boot frame has said whether it is running that
        image on trial already, and the previous session has handled its last frames."""

    async def on_message(self, event: str, data: dict[str, Any]) -> None:
        if event == "offer":
            await self.offer(int(data["deployment"]))
        elif event == "resume" and data.get("deployment") != self.deployment_id:
            deployment = await database_sync_to_async(_interrupted_for)(self.session.node_id)
            if deployment is not None:
                await self.offer(deployment)
        elif event == "abort":
            await self.tell_abort(int(data["deployment"]), str(data.get("reason", "")))
        elif event == "order":
            await self.send_order(data)

    async def tell_abort(self, deployment_id: int, reason: str) -> None:
        """The deployment ended on the hub: the device drops what it holds of it, once."""
        if not await database_sync_to_async(_take_abort)(self.session.node_id, deployment_id):
            return
        await self.session.send_signed_frame("ota.abort", {"deployment": deployment_id, "reason": reason[:200] or "the deployment ended on the hub"})
        if deployment_id == self.deployment_id:
            self._done()

    async def send_order(self, data: dict[str, Any]) -> None:
        """A signed order an operator gave (rollback, clear, bootguard.clear), once: taken
        from the device's row, so the nudge and the sweep cannot both send it."""
        order = await database_sync_to_async(_take_order)(self.session.node_id, str(data.get("id", "")))
        if order is None:
            return
        reason = str(order.get("reason", ""))[:200]
        if order["kind"] == "bootguard.clear":
            await self.session.send_signed_frame("reset", {"kind": "bootguard.clear"}, frame_id=order["id"])
        else:
            await self.session.send_signed_frame(f"ota.{order['kind']}", {"reason": reason}, frame_id=order["id"])

    async def on_closed(self) -> None:
        try:
            await self._settle()
        except Exception:  # an outage: the Disconnected below meets it too, or the sweep does
            logger.warning("offset of deployment %s not written as its session closed", self.deployment_id)
        if self.deployment_id is not None and self.state is not None and self.state.state in (sm.State.OFFERED, sm.State.TRANSFERRING, sm.State.VERIFYING):
            try:
                await self._apply(sm.Disconnected())
            except ProtocolError:  # taken over by a newer session: nothing of ours to undo
                pass
        self._close_image()

    # --- offering ---------------------------------------------------------------------

    async def offer(self, deployment_id: int) -> None:
        if self.deployment_id is not None:
            # One transfer per session; the one held may have moved on without this session
            # (the device's boot frame caught it up, an operator aborted it).
            held = self.deployment_id
            still = await database_sync_to_async(
                Deployment.objects.filter(pk=held, holder=self.session.session_token, state__in=list(deployments.TRANSFER_STATES)).exists
            )()
            if still:
                return
            self._done()
        try:
            applied = await database_sync_to_async(deployments.apply)(deployment_id, sm.Offer(), holder=self.session.session_token)
        except sm.TransitionRefused as refused:
            logger.info("offer of deployment %s not made: %s", deployment_id, refused.reason)
            return
        except Deployment.DoesNotExist:
            return
        if applied.deployment.device.node_id != self.session.node_id:
            logger.error("deployment %s is not for %s", deployment_id, self.session.node_id)
            return
        self.deployment_id, self.state = deployment_id, applied.state
        release = applied.deployment.rollout.release
        self.image = await database_sync_to_async(firmware_storage().open)(release.blob, "rb")
        await self.session.send_signed_frame(
            "ota.offer",
            {
                "deployment": deployment_id,
                "release": release.pk,
                "version": release.version,
                "size": release.size,
                "sha256": release.sha256,
                "document": release.document,
                "chunk_size": applied.state.params.chunk_size,
                "window": applied.state.params.window,
                "health_beacons": applied.state.params.health_beacons,
                "deadline_s": int(applied.state.params.deadline_s),
                "offset": applied.state.acked_offset,
            },
        )

    # --- the device's answers -----------------------------------------------------------

    def _mine(self, body: dict[str, Any]) -> int:
        deployment = _int(body, "deployment")
        if deployment != self.deployment_id or self.state is None:
            raise ProtocolError("unknown_deployment", f"deployment {deployment} is not being transferred in this session")
        return deployment

    async def accepted(self, body: dict[str, Any]) -> None:
        self._mine(body)
        await self._apply(sm.Accepted(_int(body, "resume_offset")))

    async def rejected(self, body: dict[str, Any]) -> None:
        self._mine(body)
        code = str(body.get("code", ""))[:40] or "rejected"
        await self._apply(sm.Rejected(f"{code}: {str(body.get('reason', ''))[:200]}"))
        self._done()

    async def chunk_acked(self, body: dict[str, Any]) -> None:
        self._mine(body)
        await self._apply(sm.ChunkAcked(_int(body, "offset")), progress=True)

    async def verified(self, body: dict[str, Any]) -> None:
        self._mine(body)
        await self._apply(sm.Verified(bool(body.get("ok")), str(body.get("reason", ""))[:200]))

    async def status(self, body: dict[str, Any]) -> None:
        status = body.get("status")
        if status == "aborted" and body.get("deployment") != self.deployment_id:
            return  # the answer to an abort of a deployment this session no longer holds
        self._mine(body)
        events: dict[Any, sm.Event] = {
            "installing": sm.Installing(),
            "rebooting": sm.Rebooting(),
            "failed": sm.FailureReported(str(body.get("reason", "the device reported a failure"))[:200]),
        }
        if status == "aborted":
            self._done()
            return
        if status not in events:
            raise ProtocolError("bad_frame", f"unknown ota.status {status!r}")
        await self._apply(events[status])
        if status in ("rebooting", "failed"):
            self._done()  # the rest (boot, health, complete) comes in the next session

    # --- the machine and its actions ------------------------------------------------------

    async def _apply(self, event: sm.Event, progress: bool = False) -> None:
        assert self.deployment_id is not None and self.state is not None
        now = time.monotonic()
        if progress:
            # Chunk acks: the machine runs here, the row gets the offset once a second (and
            # at once when the state changes, e.g. the last ack moves to verifying).
            try:
                result = sm.transition(self.state, event, timezone.now().timestamp())
            except sm.TransitionRefused as refused:
                raise ProtocolError("bad_frame", refused.reason) from None
            if result.state.state == self.state.state:
                self.state = result.state
                if self.saving is not None and self.saving.done() and not await self._settle():
                    await self._lost()
                    return
                if now - self.saved_at >= settings.OTA_PROGRESS_SAVE_S and self.saving is None:
                    # Written while the next chunks go out: awaited inline, every device's
                    # window stalled once a second behind the other sessions' writes.
                    self.saved_at = now
                    save = database_sync_to_async(deployments.save_progress)
                    self.saving = asyncio.ensure_future(
                        save(self.deployment_id, result.state, expected={self.state.state.value}, holder=self.session.session_token)
                    )
                await self._act(result.actions)
                return
            if not await self._settle():
                await self._lost()
                return
            await database_sync_to_async(deployments.save_progress)(
                self.deployment_id, self.state, expected={self.state.state.value}, holder=self.session.session_token
            )
        else:
            await self._settle()  # in order: the offset write first (the apply checks the row itself)
        try:
            applied = await database_sync_to_async(deployments.apply)(
                self.deployment_id, event, sent_offset=self.state.sent_offset, holder=self.session.session_token
            )
        except sm.TransitionRefused as refused:
            raise ProtocolError("bad_frame", refused.reason) from None
        self.state = applied.state
        self.saved_at = now
        await self._act(applied.actions)
        if applied.state.terminal:
            self._done()

    async def _settle(self) -> bool:
        """Wait for the offset write in flight, if any: False when the row had moved on
        without this session (aborted, timed out, taken over)."""
        saving, self.saving = self.saving, None
        return True if saving is None else await saving

    async def _act(self, actions: tuple[sm.Action, ...]) -> None:
        for action in actions:
            if isinstance(action, sm.SendChunk):
                data = await self._chunk(action.offset, action.length)
                await self.session.send_frame("ota.chunk", {"deployment": self.deployment_id, "offset": action.offset, "data": base64.b64encode(data).decode()})
            elif isinstance(action, sm.SendAbort) and self.deployment_id is not None:
                await self.tell_abort(self.deployment_id, action.reason)

    async def _chunk(self, offset: int, length: int) -> bytes:
        """A chunk from the read-ahead block, which is refilled from storage in a thread of
        the default pool (a file read needs no database connection, so it does not queue
        behind the sessions' database work on the one thread-sensitive executor)."""
        start = offset - self.ahead_at
        if start < 0 or start + length > len(self.ahead):
            self.ahead = await sync_to_async(self._read, thread_sensitive=False)(offset, max(length, READ_AHEAD))
            self.ahead_at, start = offset, 0
        return self.ahead[start : start + length]

    def _read(self, offset: int, length: int) -> bytes:
        assert self.image is not None
        self.image.seek(offset)
        return self.image.read(length)

    async def _lost(self) -> None:
        """The row moved on without us (timed out, aborted by an operator): stop sending."""
        assert self.deployment_id is not None
        deployment_id = self.deployment_id
        self._done()
        await self.tell_abort(deployment_id, "the deployment ended on the hub")

    def _done(self) -> None:
        self._close_image()
        self.deployment_id, self.state = None, None
        if self.saving is not None:  # the ended transfer's last offset write: not the next one's business
            self.saving.add_done_callback(lambda done: done.cancelled() or done.exception())
            self.saving = None

    def _close_image(self) -> None:
        self.ahead, self.ahead_at = b"", 0
        if self.image is not None:
            self.image.close()
            self.image = None


STALE_S = 5.0  # no word from a transfer's session for this long: the session is gone


def _interrupted_for(node_id: str) -> int | None:
    """A deployment of this device cut before it verified and now queued again with an
    offset, or still marked in transfer by a session that is gone (a killed gateway), in a
    running rollout. A transfer that moved in the last seconds is left alone: the device's
    previous session may still be handling its last frames (it reconnects as soon as it
    reboots), and taking over then would undo them; so is one the device already runs on
    trial."""
    deployment = deployments.current_for(node_id, {DeploymentState.OFFERED, DeploymentState.TRANSFERRING, DeploymentState.VERIFYING})
    if deployment is not None:
        if (timezone.now() - deployment.progress_at).total_seconds() < STALE_S:
            return None
        if DeviceFirmware.objects.filter(device__node_id=node_id, pending_deployment=deployment.pk).exists():
            return None  # the device runs it on trial: its boot frame catches the hub up
        # The gateway that held it is gone: the machine treats that as a drop.
        try:
            deployments.apply(deployment.pk, sm.Disconnected())
        except sm.TransitionRefused:
            return None
        return deployment.pk if deployment.rollout.state == "running" else None
    queued = deployments.current_for(node_id, {DeploymentState.QUEUED})
    if queued is not None and queued.offset > 0 and queued.rollout.state == "running":
        return queued.pk
    return None


def _take_order(node_id: str, order_id: str) -> dict[str, Any] | None:
    with transaction.atomic():
        firmware = DeviceFirmware.objects.select_for_update(of=("self",)).filter(device__node_id=node_id).first()  # not the device row
        if firmware is None or not firmware.pending_order or firmware.pending_order.get("id") != order_id:
            return None
        order = dict(firmware.pending_order)
        firmware.pending_order = None
        firmware.save(update_fields=["pending_order", "updated_at"])
    return order


def _take_abort(node_id: str, deployment_id: int) -> bool:
    return Deployment.objects.filter(pk=deployment_id, device__node_id=node_id, abort_pending=True).update(abort_pending=False) == 1


def waiting_for(node_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The gateway's 1 s sweep (devices.session.sweepers): offers the driver chose and
    orders an operator gave, for the connected devices, in case their nudge was lost."""
    found: dict[str, list[dict[str, Any]]] = {}
    offers = Deployment.objects.filter(device__node_id__in=node_ids, state=DeploymentState.QUEUED, offer_requested_at__isnull=False, rollout__state="running")
    for node_id, pk in offers.values_list("device__node_id", "pk"):
        found.setdefault(node_id, []).append(dict(messages.app_message("ota", "offer", {"deployment": pk})))
    stale = Deployment.objects.filter(
        device__node_id__in=node_ids,
        state__in=[DeploymentState.OFFERED, DeploymentState.TRANSFERRING, DeploymentState.VERIFYING],
        progress_at__lt=timezone.now() - timedelta(seconds=STALE_S),
        rollout__state="running",
    )
    for node_id, pk in stale.values_list("device__node_id", "pk"):
        found.setdefault(node_id, []).append(dict(messages.app_message("ota", "resume", {"deployment": pk})))
    ended = Deployment.objects.filter(device__node_id__in=node_ids, abort_pending=True)
    for node_id, pk, reason in ended.values_list("device__node_id", "pk", "reason"):
        found.setdefault(node_id, []).append(dict(messages.app_message("ota", "abort", {"deployment": pk, "reason": reason})))
    orders = DeviceFirmware.objects.filter(device__node_id__in=node_ids, pending_order__isnull=False)
    for node_id, order in orders.values_list("device__node_id", "pending_order"):
        if order:
            found.setdefault(node_id, []).append(dict(messages.app_message("ota", "order", {"id": order.get("id")})))
    return found


def _session_ota(session: DeviceConsumer) -> OtaSession:
    extension = session.extensions.get("ota")
    assert isinstance(extension, OtaSession)
    return extension


async def on_accept(session: DeviceConsumer, envelope: Envelope) -> None:
    await _session_ota(session).accepted(envelope.body)


async def on_reject(session: DeviceConsumer, envelope: Envelope) -> None:
    await _session_ota(session).rejected(envelope.body)


async def on_chunk_ack(session: DeviceConsumer, envelope: Envelope) -> None:
    await _session_ota(session).chunk_acked(envelope.body)


async def on_verify(session: DeviceConsumer, envelope: Envelope) -> None:
    await _session_ota(session).verified(envelope.body)


async def on_status(session: DeviceConsumer, envelope: Envelope) -> None:
    await _session_ota(session).status(envelope.body)


FRAMES = {
    "ota.accept": on_accept,
    "ota.reject": on_reject,
    "ota.chunk_ack": on_chunk_ack,
    "ota.verify": on_verify,
    "ota.status": on_status,
}
SCOPE = DeviceScope.OTA
