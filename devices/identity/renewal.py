"""Renewal: a device with a certificate near its end sends a new CSR over its live
session; the old certificate is superseded once the device uses the new one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, record
from devices import pki
from devices.identity.authority import issue_certificate, regenerate_crl
from devices.identity.errors import IdentityError
from devices.identity.gateways import announce_crl_changed
from devices.models import Certificate, CertificateAuthority, CertificateStatus, Device, DeviceStatus, RevocationKind


def renew_certificate(actor: Actor, node_id: str, csr_pem: Any) -> Certificate:
    """Issue a replacement from a new CSR; the old cert stays active until `confirm_renewal`."""
    try:
        parsed = pki.parse_csr(csr_pem)
    except pki.CSRRejected as rejected:
        record(actor, "certificate.renew", Decision.DENY, target_type="device", target_id=node_id, reason=rejected.reason)
        raise IdentityError(rejected.code, rejected.reason) from None
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(node_id=node_id, status=DeviceStatus.PROVISIONED).first()
        current = Certificate.objects.filter(device=device, status=CertificateStatus.ACTIVE).order_by("-issued_at").first() if device else None
        if device is None or current is None:
            reason = f"device '{node_id}' is not provisioned with an active certificate"
        elif parsed.common_name != node_id:
            reason = f"csr common name '{parsed.common_name}' does not match node id '{node_id}'"
        else:
            new = issue_certificate(device, parsed, replaces=current)
            record(
                actor, "certificate.renew", Decision.ALLOW, target_type="device", target_id=node_id, details={"serial": new.serial, "replaces": current.serial}
            )
            return new
    record(actor, "certificate.renew", Decision.DENY, target_type="device", target_id=node_id, reason=reason)
    raise IdentityError("renewal_refused", reason)


def confirm_renewal(actor: Actor, new_cert: Certificate) -> None:
    """The device is using its new cert: the one it replaces becomes superseded (and listed in the CRL)."""
    with transaction.atomic():
        old = Certificate.objects.select_for_update().filter(replaced_by=new_cert, status=CertificateStatus.ACTIVE).first()
        if old is None:
            return
        old.status = CertificateStatus.SUPERSEDED
        old.revoked_at = timezone.now()
        old.revocation_kind = RevocationKind.SUPERSEDED
        old.revocation_reason = f"superseded by {new_cert.serial}"
        old.save(update_fields=["status", "revoked_at", "revocation_kind", "revocation_reason"])
        regenerate_crl(CertificateAuthority.objects.select_for_update().get(pk=old.ca_id))
        record(
            actor,
            "certificate.supersede",
            Decision.ALLOW,
            target_type="device",
            target_id=new_cert.device.node_id,
            details={"serial": old.serial, "by": new_cert.serial},
        )
        transaction.on_commit(announce_crl_changed)


def certificates_expiring(within_days: int | None = None) -> list[Certificate]:
    horizon = timezone.now() + timedelta(days=within_days if within_days is not None else settings.CERT_RENEW_BEFORE_DAYS)
    return list(Certificate.objects.filter(status=CertificateStatus.ACTIVE, not_after__lt=horizon).select_related("device").order_by("not_after"))
