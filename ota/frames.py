"""The frames a device sends about its firmware outside a transfer: `boot` (every session,
what it runs and why it booted), `health` (beacons while a new image awaits confirmation)
and `ota.complete` (its signed word that the new image is good).

`boot` keeps the device's firmware state (DeviceFirmware: version, slot, safe mode, boot
loops, rollbacks) that the pages, the API and the command guards read, and moves a
deployment that is installing on: the new version booted, or the device reverted.
`ota.complete` finalizes a deployment only with a valid signature by the device's own key,
once, for the deployment in its health check: a forged or replayed one is refused and
audited.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import transaction
from django.utils import timezone

from audit.models import ActorType
from audit.services import Actor, Decision, record
from devices.models import Certificate, Device
from hub.mesh.protocol import Envelope, ProtocolError
from hub.scopes import Scope
from ota import deployments
from ota import statemachine as sm
from ota.models import DeploymentState, DeviceFirmware

if TYPE_CHECKING:
    from devices.consumers import DeviceConsumer

logger = logging.getLogger("meshhub.ota")

BOOT_REASONS = ("power-on", "ota", "watchdog", "panic", "rollback")
SLOTS = ("a", "b")


def _device(node_id: str) -> Actor:
    return Actor(ActorType.DEVICE, node_id, frozenset())


def _text(body: dict[str, Any], name: str, max_length: int = 64, *, required: bool = True) -> str:
    value = body.get(name, None if required else "")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > max_length or (required and not value):
        raise ProtocolError("bad_frame", f"'{name}' must be a string of 1 to {max_length} characters")
    return value


def _deployment(body: dict[str, Any]) -> int | None:
    value = body.get("deployment")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_frame", "'deployment' must be an integer or null")
    return value


def parse_boot(body: dict[str, Any]) -> dict[str, Any]:
    slot = body.get("slot")
    if slot not in SLOTS:
        raise ProtocolError("bad_frame", "'slot' must be 'a' or 'b'")
    reason = body.get("reason")
    if reason not in BOOT_REASONS:
        raise ProtocolError("bad_frame", f"'reason' must be one of {', '.join(BOOT_REASONS)}")
    fails = body.get("consecutive_fails", 0)
    if isinstance(fails, bool) or not isinstance(fails, int) or not 0 <= fails <= 10_000:
        raise ProtocolError("bad_frame", "'consecutive_fails' must be a count")
    for name in ("safe_mode", "pending"):
        if not isinstance(body.get(name, False), bool):
            raise ProtocolError("bad_frame", f"'{name}' must be true or false")
    rollback = body.get("rollback")
    if rollback is not None and (not isinstance(rollback, dict) or not isinstance(rollback.get("reason", ""), str)):
        raise ProtocolError("bad_frame", "'rollback' must be an object with a reason")
    diagnostic = body.get("diagnostic")
    if diagnostic is not None and (not isinstance(diagnostic, dict) or len(json.dumps(diagnostic)) > 2000):
        raise ProtocolError("bad_frame", "'diagnostic' must be an object of at most 2,000 bytes")
    epoch = body.get("boot_epoch", 0)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ProtocolError("bad_frame", "'boot_epoch' must be a count")
    return {
        "slot": slot,
        "version": _text(body, "version"),
        "boot_epoch": epoch,
        "reason": reason,
        "consecutive_fails": fails,
        "safe_mode": bool(body.get("safe_mode", False)),
        "pending": bool(body.get("pending", False)),
        "previous_version": _text(body, "previous_version", required=False),
        "deployment": _deployment(body),
        "rollback": {"from_version": str(rollback.get("from_version", ""))[:64], "reason": str(rollback.get("reason", ""))[:200]} if rollback else None,
        "diagnostic": diagnostic or {},
    }


def record_boot(node_id: str, boot: dict[str, Any]) -> None:
    now = timezone.now()
    actor = _device(node_id)
    with transaction.atomic():
        device = Device.objects.get(node_id=node_id)
        firmware, _ = DeviceFirmware.objects.select_for_update().get_or_create(device=device)
        if boot["boot_epoch"] < firmware.boot_epoch:
            # From a session that ended before the device booted again, handled late (two
            # sessions of one device run side by side for a moment): the newer boot stands.
            logger.info("boot frame of %s for boot %s after boot %s: ignored", node_id, boot["boot_epoch"], firmware.boot_epoch)
            return
        # The boot frame opens every session: the same boot told again after a reconnect
        # is not a reboot, and must not make a health check start over.
        repeated = boot["boot_epoch"] == firmware.boot_epoch and boot["boot_epoch"] > 0 and firmware.last_boot_at is not None
        firmware.boot_epoch = boot["boot_epoch"]
        firmware.pending_deployment = boot["deployment"] if boot["pending"] else None
        entered_safe_mode = boot["safe_mode"] and not firmware.safe_mode
        firmware.version = boot["version"]
        firmware.slot = boot["slot"]
        firmware.previous_version = boot["previous_version"] or firmware.previous_version
        firmware.safe_mode = boot["safe_mode"]
        firmware.consecutive_fails = boot["consecutive_fails"]
        firmware.last_boot_reason = boot["reason"]
        firmware.last_boot_at = now
        firmware.diagnostic = boot["diagnostic"] if boot["safe_mode"] else {}
        if boot["rollback"]:
            firmware.last_rollback_at = now
            firmware.last_rollback_reason = boot["rollback"]["reason"]
        firmware.save()
        if device.firmware_version != boot["version"]:
            Device.objects.filter(pk=device.pk).update(firmware_version=boot["version"])
        details = {k: boot[k] for k in ("slot", "version", "reason", "consecutive_fails", "safe_mode", "pending", "rollback")}
        record(actor, "ota.boot", Decision.ALLOW, scope=Scope.OTA, target_type="device", target_id=node_id, details=details)
        if entered_safe_mode:
            record(
                actor,
                "ota.safe_mode",
                Decision.DENY,
                scope=Scope.OTA,
                target_type="device",
                target_id=node_id,
                reason=f"boot loop: {boot['consecutive_fails']} failed boots",
                details={"diagnostic": boot["diagnostic"]},
            )
    if boot["pending"] and boot["deployment"] is not None and boot["reason"] == "ota":
        deployments.catch_up(boot["deployment"], node_id, boot["version"], actor)
    deployment = deployments.current_for(node_id, {DeploymentState.INSTALLING, DeploymentState.REBOOTING, DeploymentState.HEALTH_CHECK})
    if deployment is None or (repeated and deployment.state == DeploymentState.HEALTH_CHECK):
        return
    event: sm.Event
    if boot["reason"] == "rollback":
        why = (boot["rollback"] or {}).get("reason") or "the device reverted to its previous image"
        event = sm.RollbackReported(why)
    else:
        event = sm.Booted(boot["slot"], boot["version"], boot["reason"])
    try:
        deployments.apply(deployment.pk, event, actor=actor)
    except sm.TransitionRefused as refused:
        logger.info("boot of %s did not move deployment %s: %s", node_id, deployment.pk, refused.reason)


def record_health(node_id: str, body: dict[str, Any]) -> None:
    deployment_id = _deployment(body)
    ok = body.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError("bad_frame", "'ok' must be true or false")
    deployment = deployments.current_for(node_id, {DeploymentState.HEALTH_CHECK})
    if deployment is None or (deployment_id is not None and deployment.pk != deployment_id):
        return  # a beacon with nothing to confirm (before the boot frame, or after the end)
    try:
        deployments.apply(deployment.pk, sm.HealthBeacon(ok), actor=_device(node_id))
    except sm.TransitionRefused as refused:
        logger.info("health beacon of %s not applied: %s", node_id, refused.reason)


def complete_payload(node_id: str, body: dict[str, Any], issued_at: int) -> bytes:
    """What the device signs in `ota.complete` (docs/ota.md)."""
    subject = {
        "type": "ota.complete",
        "deployment": body.get("deployment"),
        "version": body.get("version"),
        "slot": body.get("slot"),
        "node_id": node_id,
        "issued_at": issued_at,
    }
    return json.dumps(subject, sort_keys=True, separators=(",", ":")).encode()


def device_signature_valid(cert_serial: str, payload: bytes, signature_b64: Any) -> bool:
    if not isinstance(signature_b64, str):
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        cert = x509.load_pem_x509_certificate(Certificate.objects.get(serial=cert_serial).pem.encode())
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            return False
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, Certificate.DoesNotExist):
        return False
    return True


def record_complete(node_id: str, cert_serial: str, envelope: Envelope) -> None:
    body = envelope.body
    deployment_id = _deployment(body)
    actor = _device(node_id)
    valid = device_signature_valid(cert_serial, complete_payload(node_id, body, envelope.issued_at), body.get("signature"))
    deployment = deployments.current_for(node_id, {DeploymentState.HEALTH_CHECK})
    reason = ""
    if not valid:
        reason = "the signature is not the device key's over this deployment, version, slot and time"
    elif deployment is None or deployment.pk != deployment_id:
        reason = f"deployment {deployment_id} is not in its health check (replayed, or finished already)"
    elif body.get("version") != deployment.rollout.release.version:
        reason = f"version {body.get('version')!r} is not the release's {deployment.rollout.release.version}"
    if not reason and deployment is not None:
        # The device confirms its slot as it sends this: it is no longer on trial.
        DeviceFirmware.objects.filter(device__node_id=node_id, pending_deployment=deployment.pk).update(pending_deployment=None)
        try:
            deployments.apply(deployment.pk, sm.Completed(True), actor=actor)
            return
        except sm.TransitionRefused as refused:
            reason = refused.reason
    record(
        actor,
        "ota.complete",
        Decision.DENY,
        scope=Scope.OTA,
        target_type="device",
        target_id=node_id,
        reason=reason[:500],
        details={"deployment": deployment_id},
    )
    raise ProtocolError("bad_complete", reason)


async def on_boot(session: DeviceConsumer, envelope: Envelope) -> None:
    await database_sync_to_async(record_boot)(session.node_id, parse_boot(envelope.body))


async def on_health(session: DeviceConsumer, envelope: Envelope) -> None:
    await database_sync_to_async(record_health)(session.node_id, envelope.body)


async def on_complete(session: DeviceConsumer, envelope: Envelope) -> None:
    await database_sync_to_async(record_complete)(session.node_id, session.scope.get("cert_serial", ""), envelope)


FRAMES = {"boot": on_boot, "health": on_health, "ota.complete": on_complete}
