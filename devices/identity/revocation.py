"""Revocation and resets: throwing a certificate or a whole device out, the provisioning
and (two-step) factory resets, and the sweep that revokes certificates never used.

Each operation regenerates the CRLs it changes in its transaction; after commit the
gateways reload them and close the device's live session (a reset is sent first, signed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, authorize, record
from devices.identity.authority import regenerate_crl
from devices.identity.errors import IdentityError
from devices.identity.gateways import announce_crl_changed, group_send
from devices.models import (
    OPEN_COMMAND_STATUSES,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    Command,
    CommandStatus,
    Device,
    DeviceStatus,
    Enrollment,
    EnrollmentStatus,
    FactoryResetRequest,
    RevocationKind,
)
from hub import messages
from hub.scopes import Scope


def _revoke_rows(certs: list[Certificate], kind: RevocationKind, reason: str, now: datetime) -> None:
    for cert in certs:
        cert.status = CertificateStatus.REVOKED
        cert.revoked_at = now
        cert.revocation_kind = kind
        cert.revocation_reason = reason[:200]
        cert.save(update_fields=["status", "revoked_at", "revocation_kind", "revocation_reason"])
    for ca in CertificateAuthority.objects.select_for_update().filter(pk__in={c.ca_id for c in certs}).order_by("pk"):  # id order: see refresh_crls
        regenerate_crl(ca)


def _after_revocation(node_id: str, serials: list[str], reason: str, reset_kind: RevocationKind | None = None) -> None:
    transaction.on_commit(announce_crl_changed)
    if reset_kind is not None:  # the device hears the signed reset before its session is closed
        transaction.on_commit(lambda: group_send(messages.node_group(node_id), messages.session_reset(reset_kind)))
    transaction.on_commit(lambda: group_send(messages.node_group(node_id), messages.session_revoke(reason, serials)))


def revoke_certificate(actor: Actor, cert: Certificate, reason: str) -> Certificate:
    """Revoke one certificate; the device is `revoked` once it has no active one left."""
    authorize(actor, Scope.RESET, "certificate.revoke", target_type="device", target_id=cert.device.node_id, details={"serial": cert.serial})
    return _revoke_certificate(actor, cert, RevocationKind.OPERATOR, reason)


def _revoke_certificate(actor: Actor, cert: Certificate, kind: RevocationKind, reason: str) -> Certificate:
    if not reason.strip():
        raise IdentityError("reason_required", "a revocation needs a reason")
    with transaction.atomic():
        # The device first, then its certificate: the order of every other path that locks
        # both (revoke_device, renewal), so two of them at once wait instead of deadlocking.
        Device.objects.select_for_update().filter(pk=cert.device_id).first()
        cert = Certificate.objects.select_for_update(of=("self",)).select_related("device").get(pk=cert.pk)
        if cert.status == CertificateStatus.REVOKED:
            raise IdentityError("already_revoked", f"certificate {cert.serial} is already revoked")
        _revoke_rows([cert], kind, reason, timezone.now())
        device = cert.device
        if not device.certificates.filter(status=CertificateStatus.ACTIVE).exists() and device.status == DeviceStatus.PROVISIONED:
            device.status = DeviceStatus.REVOKED
            device.save(update_fields=["status", "updated_at"])
        record(
            actor,
            "certificate.revoke",
            Decision.ALLOW,
            scope="reset",
            target_type="device",
            target_id=device.node_id,
            reason=reason,
            details={"serial": cert.serial},
        )
        _after_revocation(device.node_id, [cert.serial], reason)
    return cert


def revoke_device(actor: Actor, node_id: str, reason: str) -> list[Certificate]:
    """Throw a device out in one action: every active cert revoked, open enrollments
    cancelled, open commands rejected, live session closed (by the gateway)."""
    authorize(actor, Scope.RESET, "device.revoke", target_type="device", target_id=node_id)
    if not reason.strip():
        raise IdentityError("reason_required", "a revocation needs a reason")
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(node_id=node_id).first()
        if device is None:
            record(actor, "device.revoke", Decision.DENY, scope="reset", target_type="device", target_id=node_id[:150], reason=f"no device '{node_id}'")
            raise IdentityError("unknown_device", f"no device with node_id '{node_id}'")
        certs = list(Certificate.objects.select_for_update().filter(device=device, status=CertificateStatus.ACTIVE))
        now = timezone.now()
        _revoke_rows(certs, RevocationKind.OPERATOR, reason, now)
        Enrollment.objects.filter(node_id=node_id, status=EnrollmentStatus.OPEN).update(status=EnrollmentStatus.CANCELLED)
        _reject_open_commands(device, f"device revoked: {reason}", now)
        device.status = DeviceStatus.REVOKED
        device.save(update_fields=["status", "updated_at"])
        serials = [c.serial for c in certs]
        record(actor, "device.revoke", Decision.ALLOW, scope="reset", target_type="device", target_id=node_id, reason=reason, details={"serials": serials})
        _after_revocation(node_id, serials, reason)
    return certs


def _reject_open_commands(device: Device, why: str, now: datetime) -> int:
    return Command.objects.filter(device=device, status__in=OPEN_COMMAND_STATUSES).update(
        status=CommandStatus.REJECTED, completed_at=now, result={"reason": why}
    )


def provision_reset(actor: Actor, node_id: str) -> Device:
    """Revoke every active cert, cancel pending commands, clear desired state, mark the
    device unprovisioned. Its row, telemetry, commands and audit trail stay."""
    authorize(actor, Scope.RESET, "device.provision_reset", target_type="device", target_id=node_id)
    return _reset(actor, node_id, RevocationKind.PROVISION_RESET)


def _reset(actor: Actor, node_id: str, kind: RevocationKind) -> Device:
    """A provisioning or (confirmed) factory reset: `kind` is set here, from the operation,
    and it alone makes the gateway send the device its signed wipe."""
    reason = str(kind.value)
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(node_id=node_id).first()
        if device is None:
            record(
                actor, "device.provision_reset", Decision.DENY, scope="reset", target_type="device", target_id=node_id[:150], reason=f"no device '{node_id}'"
            )
            raise IdentityError("unknown_device", f"no device with node_id '{node_id}'")
        now = timezone.now()
        certs = list(Certificate.objects.select_for_update().filter(device=device, status=CertificateStatus.ACTIVE))
        _revoke_rows(certs, kind, reason, now)
        cancelled = _reject_open_commands(device, f"cancelled by {reason}", now)
        Enrollment.objects.filter(node_id=node_id, status=EnrollmentStatus.OPEN).update(status=EnrollmentStatus.CANCELLED)
        device.desired = {}
        device.status = DeviceStatus.UNPROVISIONED
        device.online = False
        device.save(update_fields=["desired", "status", "online", "updated_at"])
        serials = [c.serial for c in certs]
        record(
            actor,
            "device.provision_reset",
            Decision.ALLOW,
            scope="reset",
            target_type="device",
            target_id=node_id,
            reason=reason,
            details={"serials": serials, "commands_cancelled": cancelled},
        )
        _after_revocation(node_id, serials, reason, reset_kind=kind)
    return device


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def request_factory_reset(actor: Actor, node_id: str) -> tuple[FactoryResetRequest, str]:
    """Step one: a confirmation token valid FACTORY_RESET_CONFIRM_S seconds, shown once."""
    authorize(actor, Scope.RESET, "device.factory_reset.request", target_type="device", target_id=node_id)
    device = Device.objects.filter(node_id=node_id).first()
    if device is None:
        record(
            actor, "device.factory_reset.request", Decision.DENY, scope="reset", target_type="device", target_id=node_id[:150], reason=f"no device '{node_id}'"
        )
        raise IdentityError("unknown_device", f"no device with node_id '{node_id}'")
    token = secrets.token_urlsafe(24)
    with transaction.atomic():
        request = FactoryResetRequest.objects.create(
            device=device,
            token_hash=_token_hash(token),
            requested_by=f"{actor.type}:{actor.id}",
            expires_at=timezone.now() + timedelta(seconds=settings.FACTORY_RESET_CONFIRM_S),
        )
        record(
            actor, "device.factory_reset.request", Decision.ALLOW, scope="reset", target_type="device", target_id=node_id, details={"request_id": request.pk}
        )
    return request, token


def confirm_factory_reset(actor: Actor, node_id: str, token: Any) -> Device:
    """Step two: the token of an open request for this device, before it expires."""
    authorize(actor, Scope.RESET, "device.factory_reset.confirm", target_type="device", target_id=node_id)
    now = timezone.now()
    with transaction.atomic():
        candidates = list(FactoryResetRequest.objects.select_for_update().filter(device__node_id=node_id, confirmed_at__isnull=True).order_by("-created_at"))
        match = next((r for r in candidates if isinstance(token, str) and hmac.compare_digest(r.token_hash, _token_hash(token))), None)
        refusal = None
        if match is None:
            refusal = IdentityError("bad_token", "invalid confirmation token for this device")
        elif match.expires_at <= now:
            refusal = IdentityError("token_expired", f"confirmation token expired at {match.expires_at.isoformat()}; request a new one")
        else:
            match.confirmed_at = now
            match.confirmed_by = f"{actor.type}:{actor.id}"
            match.save(update_fields=["confirmed_at", "confirmed_by"])
            record(
                actor, "device.factory_reset.confirm", Decision.ALLOW, scope="reset", target_type="device", target_id=node_id, details={"request_id": match.pk}
            )
            return _reset(actor, node_id, RevocationKind.FACTORY_RESET)
    record(actor, "device.factory_reset.confirm", Decision.DENY, scope="reset", target_type="device", target_id=node_id[:150], reason=refusal.reason)
    raise refusal


def cleanup_provisioning() -> dict[str, int]:
    """Expire stale enrollment codes; revoke certificates that never opened a session;
    mark certificates past not_after as expired."""
    now = timezone.now()
    expired = Enrollment.objects.filter(status=EnrollmentStatus.OPEN, expires_at__lte=now).update(status=EnrollmentStatus.EXPIRED)
    stale = list(
        Certificate.objects.filter(status=CertificateStatus.ACTIVE, first_used_at__isnull=True, issued_at__lt=now - timedelta(days=settings.UNUSED_CERT_DAYS))
    )
    for cert in stale:
        _revoke_certificate(Actor.system("cleanup"), cert, RevocationKind.UNUSED, f"never used in a session within {settings.UNUSED_CERT_DAYS} days")
    outdated = Certificate.objects.filter(status=CertificateStatus.ACTIVE, not_after__lte=now).update(status=CertificateStatus.EXPIRED)
    return {"enrollments_expired": expired, "unused_certs_revoked": len(stale), "certs_expired": outdated}
