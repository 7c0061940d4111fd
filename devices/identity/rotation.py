"""CA rotation: a new active CA while the old one stays trusted, then retiring the old."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, authorize, record
from devices.identity.authority import create_ca
from devices.identity.errors import IdentityError
from devices.identity.gateways import announce_crl_changed
from devices.identity.listeners import ensure_server_cert
from devices.models import CertificateAuthority
from hub.scopes import Scope


def rotate_ca(actor: Actor) -> CertificateAuthority:
    """A new active CA for new certificates. The old one stays trusted (and keeps signing
    the gateway's server certificate) until retired, so no device loses its session."""
    authorize(actor, Scope.ADMIN, "pki.ca.rotate", target_type="ca", target_id="active")
    with transaction.atomic():
        old = CertificateAuthority.objects.select_for_update().filter(active=True).first()
        if old is not None:
            old.active = False
            old.save(update_fields=["active"])
        new = create_ca(f"meshhub root CA {timezone.now():%Y-%m-%d}")
        record(
            actor,
            "pki.ca.rotate",
            Decision.ALLOW,
            scope="admin",
            target_type="ca",
            target_id=new.fingerprint,
            details={"previous": old.fingerprint if old else None},
        )
        transaction.on_commit(announce_crl_changed)
    return new


def retire_ca(actor: Actor, ca: CertificateAuthority) -> None:
    """Stop trusting a non-active CA: devices still on its certificates are cut off."""
    ca = CertificateAuthority.objects.get(pk=ca.pk)
    authorize(actor, Scope.ADMIN, "pki.ca.retire", target_type="ca", target_id=ca.fingerprint)
    if ca.active:
        raise IdentityError("ca_active", "the active CA cannot be retired; rotate first")
    with transaction.atomic():
        CertificateAuthority.objects.filter(pk=ca.pk).update(trusted=False, retired_at=timezone.now())
        record(actor, "pki.ca.retire", Decision.ALLOW, scope="admin", target_type="ca", target_id=ca.fingerprint)
        transaction.on_commit(announce_crl_changed)
    ensure_server_cert()
