"""The hub's certificate authorities and their revocation lists.

One CA is active (signs new device certificates); every trusted one stays in the
gateways' trust store with its CRL until retired. A CA's key is stored encrypted under
the hub's passphrase (`hub.signing`) and decrypted only to sign.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import IntegrityError, transaction

from audit.models import Decision
from audit.services import Actor, record
from devices import pki
from devices.identity.errors import IdentityError
from devices.identity.gateways import announce_crl_changed
from devices.models import Certificate, CertificateAuthority, CertificateStatus, Device, RevocationKind
from hub import signing


def ca_material(ca: CertificateAuthority) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = signing.decrypt_private(ca.key_pem, f"key of CA {ca.fingerprint}")
    except signing.PassphraseError as wrong:
        raise IdentityError(wrong.code, wrong.reason) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("CA key is not an EC key")
    return key, pki.load_cert(ca.cert_pem)


def create_ca(name: str) -> CertificateAuthority:
    key, cert = pki.create_ca(name)
    ca = CertificateAuthority.objects.create(
        name=name,
        cert_pem=pki.cert_pem(cert).decode(),
        key_pem=signing.encrypt_key(key, signing.passphrase()).decode(),
        fingerprint=pki.fingerprint(cert),
        not_after=cert.not_valid_after_utc,
    )
    regenerate_crl(ca)
    return ca


def active_ca() -> CertificateAuthority:
    """The CA that signs new certificates, created on first use (race-safe)."""
    ca = CertificateAuthority.objects.filter(active=True).first()
    if ca is not None:
        return ca
    try:
        with transaction.atomic():
            ca = create_ca("meshhub root CA")
            record(Actor.system(), "pki.ca.create", Decision.ALLOW, scope="admin", target_type="ca", target_id=ca.fingerprint)
            return ca
    except IntegrityError:  # another process created it first
        return CertificateAuthority.objects.get(active=True)


def trusted_cas() -> list[CertificateAuthority]:
    return list(CertificateAuthority.objects.filter(trusted=True).order_by("created_at"))


def issue_certificate(device: Device, parsed: pki.ParsedCSR, replaces: Certificate | None = None) -> Certificate:
    """The active CA signs a checked CSR (enrollment and renewal); inside their transaction."""
    ca = active_ca()
    ca_key, ca_cert = ca_material(ca)
    cert = pki.sign_device_csr(ca_key, ca_cert, parsed, device.node_id, timedelta(days=settings.CERT_VALIDITY_DAYS))
    return Certificate.objects.create(
        ca=ca,
        device=device,
        serial=format(cert.serial_number, "x"),
        fingerprint=pki.fingerprint(cert),
        pem=pki.cert_pem(cert).decode(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        replaces=replaces,
    )


# --- CRL ----------------------------------------------------------------------------------

REASON_FLAGS = {
    "superseded": x509.ReasonFlags.superseded,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "cessation": x509.ReasonFlags.cessation_of_operation,
}


def regenerate_crl(ca: CertificateAuthority) -> None:
    """Rebuild `ca`'s CRL from its revoked and superseded certificates (inside a transaction)."""
    ca_key, ca_cert = ca_material(ca)
    entries = [
        pki.RevokedEntry(int(serial, 16), revoked_at, REASON_FLAGS.get(reason_key, x509.ReasonFlags.unspecified))
        for serial, revoked_at, reason_key in _revoked_rows(ca)
    ]
    ca.crl_number += 1
    crl = pki.build_crl(ca_key, ca_cert, entries, ca.crl_number)
    ca.crl_pem = pki.crl_pem(crl).decode()
    ca.crl_next_update = crl.next_update_utc
    ca.save(update_fields=["crl_pem", "crl_number", "crl_next_update"])


def _revoked_rows(ca: CertificateAuthority) -> list[tuple[str, datetime, str]]:
    rows = Certificate.objects.filter(ca=ca, status__in=[CertificateStatus.REVOKED, CertificateStatus.SUPERSEDED], revoked_at__isnull=False)
    return [
        (c.serial, c.revoked_at, "superseded" if c.status == CertificateStatus.SUPERSEDED else _reason_key(c.revocation_kind, c.revocation_reason))
        for c in rows.only("serial", "revoked_at", "status", "revocation_kind", "revocation_reason")
        if c.revoked_at is not None
    ]


def _reason_key(kind: str, reason: str) -> str:
    """The CRL's reason code: a reset is a cessation; an operator who says the key was
    compromised or stolen gets that code (informational only: every listed serial is refused)."""
    if kind in (RevocationKind.PROVISION_RESET, RevocationKind.FACTORY_RESET):
        return "cessation"
    lowered = reason.lower()
    return "key_compromise" if "compromise" in lowered or "stolen" in lowered else "unspecified"


def refresh_crls() -> int:
    with transaction.atomic():
        cas = list(CertificateAuthority.objects.select_for_update().filter(trusted=True).order_by("pk"))  # id order, as revocations lock them
        for ca in cas:
            regenerate_crl(ca)
        transaction.on_commit(announce_crl_changed)
    return len(cas)


def current_crl_pem() -> str:
    """Every trusted CA's CRL, concatenated (one CA outside a rotation)."""
    active_ca()
    return "".join(ca.crl_pem for ca in trusted_cas())
