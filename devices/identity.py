"""Device identity operations: the hub's CA and keys, enrollment, revocation, renewal, resets.

Each operation is one transaction and audits its decision. Side effects (files for the
TLS listeners, channel-layer messages to gateways) go out after commit.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import ActorType, Decision
from audit.services import Actor, record
from devices import events, pki
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
    HubKey,
    HubKeyKind,
    RevocationKind,
    node_id_validator,
)
from hub import signing
from hub.models import SigningKeyKind

# The hub's signing keys live in `hub.signing` (audit signs with them); callers keep `identity.signing_key`.
from hub.signing import holds_signing_key as holds_signing_key
from hub.signing import passphrase as passphrase
from hub.signing import public_key_b64 as public_key_b64
from hub.signing import signing_key as signing_key

logger = logging.getLogger("meshhub.identity")

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CODE_LENGTH = 12  # 60 bits
CODE_HASHER = "pbkdf2_sha256"
GATEWAYS_GROUP = "mesh.gateways"


class IdentityError(Exception):
    """An identity operation refused; `code` is machine-readable, `reason` is for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# --- keys and files ---------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Atomic replace of a 0600 file: readers see the old or the new content, never half."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def ca_material(ca: CertificateAuthority) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = signing.decrypt_private(ca.key_pem, f"key of CA {ca.fingerprint}")
    except signing.PassphraseError as wrong:
        raise IdentityError(wrong.code, wrong.reason) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError("CA key is not an EC key")
    return key, pki.load_cert(ca.cert_pem)


def _create_ca(name: str) -> CertificateAuthority:
    key, cert = pki.create_ca(name)
    ca = CertificateAuthority.objects.create(
        name=name,
        cert_pem=pki.cert_pem(cert).decode(),
        key_pem=signing.encrypt_key(key, signing.passphrase()).decode(),
        fingerprint=pki.fingerprint(cert),
        not_after=cert.not_valid_after_utc,
    )
    _regenerate_crl(ca)
    return ca


def active_ca() -> CertificateAuthority:
    """The CA that signs new certificates, created on first use (race-safe)."""
    ca = CertificateAuthority.objects.filter(active=True).first()
    if ca is not None:
        return ca
    try:
        with transaction.atomic():
            ca = _create_ca("meshhub root CA")
            record(Actor.system(), "pki.ca.create", Decision.ALLOW, scope="admin", target_type="ca", target_id=ca.fingerprint)
            return ca
    except IntegrityError:  # another process created it first
        return CertificateAuthority.objects.get(active=True)


def trusted_cas() -> list[CertificateAuthority]:
    return list(CertificateAuthority.objects.filter(trusted=True).order_by("created_at"))


def _active_server_cert() -> HubKey | None:
    return HubKey.objects.filter(kind=HubKeyKind.SERVER_TLS, active=True).first()


def _server_cert_current(hub_key: HubKey, signer: CertificateAuthority) -> bool:
    cert = pki.load_cert(hub_key.public)
    if hub_key.ca_id != signer.pk:
        return False
    if cert.not_valid_after_utc - timezone.now() < timedelta(days=30):
        return False
    return pki.server_names(cert) >= set(settings.TLS_SERVER_NAMES)


def _ensure_server_cert() -> HubKey:
    """The gateway's TLS certificate, signed by the oldest trusted CA (which every
    device trusts, also mid-rotation) and naming every address devices may dial."""
    active_ca()
    signer = trusted_cas()[0]
    current = _active_server_cert()
    if current is not None and _server_cert_current(current, signer):
        return current
    ca_key, ca_cert = ca_material(signer)
    names = settings.TLS_SERVER_NAMES
    ips = [n for n in names if _is_ip(n)]
    key, cert = pki.issue_server_cert(ca_key, ca_cert, [n for n in names if not _is_ip(n)], ips)
    with transaction.atomic():
        HubKey.objects.filter(kind=HubKeyKind.SERVER_TLS, active=True).update(active=False)
        hub_key = HubKey.objects.create(
            kind=HubKeyKind.SERVER_TLS, public=pki.cert_pem(cert).decode(), key_pem=signing.encrypt_key(key, signing.passphrase()).decode(), ca=signer
        )
        record(Actor.system(), "pki.server_cert.issue", Decision.ALLOW, scope="admin", target_type="hubkey", target_id="server_tls", details={"names": names})
    return hub_key


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class PkiFiles:
    """What the TLS listeners load: server chain + encrypted key, and CAs + CRLs to verify clients."""

    server_chain: Path
    server_key: Path
    trust_bundle: Path  # trusted CA certificates followed by their CRLs
    passphrase: bytes


def ensure_hub_identity() -> PkiFiles:
    """Create whatever is missing (CA, server cert, hub and release keys), refresh a CRL
    near its next update, and write the listeners' files. Idempotent; run at start-up."""
    ca_material(active_ca())  # a wrong passphrase fails here, by name, not deep inside ssl
    server = _ensure_server_cert()
    signing.ensure_signing_key(SigningKeyKind.HUB_SIGNING)
    signing.ensure_signing_key(SigningKeyKind.RELEASE_SIGNING)
    for ca in trusted_cas():
        if ca.crl_next_update is None or ca.crl_next_update - timezone.now() < timedelta(days=2):
            with transaction.atomic():
                _regenerate_crl(ca)
    return write_pki_files(server)


def write_pki_files(server: HubKey | None = None) -> PkiFiles:
    """Write the listeners' files from the database, so every gateway node builds the
    same trust store from the same rows."""
    server = server or _active_server_cert() or _ensure_server_cert()
    directory = Path(settings.PKI_DIR)
    cas = trusted_cas()
    signer = server.ca
    chain = server.public + (signer.cert_pem if signer else "")
    files = PkiFiles(directory / "server-chain.pem", directory / "server-key.pem", directory / "trust-bundle.pem", signing.passphrase())
    _write_private(files.server_chain, chain.encode())
    _write_private(files.server_key, server.key_pem.encode())
    _write_private(files.trust_bundle, ("".join(ca.cert_pem for ca in cas) + "".join(ca.crl_pem for ca in cas)).encode())
    return files


def discovery_answer(enroll_port: int | None = None, mesh_port: int | None = None) -> dict[str, Any]:
    """What the LAN discovery responder tells a device: where to dial (not whom to trust)."""
    return {
        "hub_version": "meshhub/0.1",
        "enroll_host": settings.PUBLIC_HOST,
        "enroll_port": enroll_port or settings.ENROLL_PORT,
        "mesh_host": settings.PUBLIC_HOST,
        "mesh_port": mesh_port or settings.MESH_PORT,
        "ca_fingerprint": active_ca().fingerprint,
    }


def warn_if_devices_dial_elsewhere(enroll_port: int, mesh_port: int) -> list[str]:
    """Enrollment codes and the enrolled answer name MESHHUB_ENROLL_PORT/MESHHUB_MESH_PORT
    (every process agrees on them: the pages, createenrollment, the gateways), not the
    port a listener was told to bind. A listener started with another port is fine behind
    a forwarder and a trap otherwise (devices enrolled here would dial the setting): say so
    once at start. Returns the warnings logged."""
    warnings = []
    listeners = (("enrollment", enroll_port, settings.ENROLL_PORT, "MESHHUB_ENROLL_PORT"), ("mesh", mesh_port, settings.MESH_PORT, "MESHHUB_MESH_PORT"))
    for name, bound, told, variable in listeners:
        if bound != told:
            warnings.append(
                f"the {name} listener binds port {bound} but devices are told {told} ({variable}): set it to {bound} unless a forwarder maps {told} to {bound}"
            )
    for warning in warnings:
        logger.warning(warning)
    return warnings


# --- CRL ----------------------------------------------------------------------------------

REASON_FLAGS = {
    "superseded": x509.ReasonFlags.superseded,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "cessation": x509.ReasonFlags.cessation_of_operation,
}


def _regenerate_crl(ca: CertificateAuthority) -> None:
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
        cas = list(CertificateAuthority.objects.select_for_update().filter(trusted=True))
        for ca in cas:
            _regenerate_crl(ca)
        transaction.on_commit(_announce_crl_changed)
    return len(cas)


def current_crl_pem() -> str:
    """Every trusted CA's CRL, concatenated (one CA outside a rotation)."""
    active_ca()
    return "".join(ca.crl_pem for ca in trusted_cas())


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # the database is the truth: gateways re-check serials after every handshake
        logger.warning("could not send %s to %s", message.get("type"), group, exc_info=True)


def _announce_crl_changed() -> None:
    _group_send(GATEWAYS_GROUP, {"type": "pki.crl_changed"})


# --- enrollment ---------------------------------------------------------------------------


def normalize_code(code: str) -> str:
    cleaned = code.upper().replace("-", "").replace(" ", "")
    return cleaned.translate(str.maketrans("OIL", "011"))


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CODE_LENGTH, 4))


@dataclass(frozen=True)
class EnrollmentTicket:
    """What an operator gets once: the code, the PIN and where to point the device."""

    enrollment: Enrollment
    code: str
    pin: str

    def as_dict(self) -> dict[str, Any]:
        ca = active_ca()
        return {
            "node_id": self.enrollment.node_id,
            "device_type": self.enrollment.device_type,
            "code": self.code,
            "pin": self.pin or None,
            "ca_fingerprint": ca.fingerprint,
            "enroll_host": settings.PUBLIC_HOST,
            "enroll_port": settings.ENROLL_PORT,
            "mesh_host": settings.PUBLIC_HOST,
            "mesh_port": settings.MESH_PORT,
            "expires_at": self.enrollment.expires_at.isoformat(),
            "uri": self.uri(ca.fingerprint),
        }

    def uri(self, ca_fingerprint: str) -> str:
        query = {"host": settings.PUBLIC_HOST, "port": settings.ENROLL_PORT, "node": self.enrollment.node_id, "code": self.code, "fp": ca_fingerprint}
        if self.pin:
            query["pin"] = self.pin
        return "meshhub://enroll?" + urlencode(query)

    def agent_command(self) -> str:
        """What to run on the device (the reference agent's CLI, ARCHITECTURE §9)."""
        pin = f" --pin {self.pin}" if self.pin else ""
        return (
            f"python -m firmware.agent enroll --host {settings.PUBLIC_HOST} --port {settings.ENROLL_PORT} --node-id {self.enrollment.node_id} "
            f"--code {self.code}{pin} --fingerprint {active_ca().fingerprint} --state-dir ./state-{self.enrollment.node_id}"
        )

    def qr_svg(self) -> str:
        import segno

        qr = segno.make(self.uri(active_ca().fingerprint), error="m")
        return str(qr.svg_inline(scale=4, dark="#111", light="#fff"))


def create_enrollment(actor: Actor, node_id: Any, *, device_type: str = "generic", with_pin: bool = False, ttl_s: int | None = None) -> EnrollmentTicket:
    """A one-time code for `node_id`. Refused for a device that holds an active
    certificate: revoke or reset it first, so a code can never clone a live identity."""
    try:
        if not isinstance(node_id, str):
            raise IdentityError("bad_node_id", "node_id must be a string")
        node_id_validator(node_id)
    except Exception as exc:
        reason = exc.reason if isinstance(exc, IdentityError) else "; ".join(getattr(exc, "messages", [str(exc)]))
        record(actor, "enrollment.create", Decision.DENY, scope="reset", target_type="device", target_id=str(node_id)[:150], reason=reason)
        raise IdentityError("bad_node_id", reason) from None
    ttl = ttl_s if ttl_s is not None else settings.ENROLLMENT_TTL_S
    if not 60 <= ttl <= 7 * 24 * 3600:
        raise IdentityError("bad_ttl", "enrollment ttl must be between 60 seconds and 7 days")
    if not isinstance(device_type, str) or not device_type or len(device_type) > 50:
        raise IdentityError("bad_device_type", "device_type must be 1-50 characters")
    active_ca()
    code = new_code()
    pin = f"{secrets.randbelow(10**6):06d}" if with_pin else ""
    code_hash = make_password(normalize_code(code), hasher=CODE_HASHER)
    pin_hash = make_password(pin, hasher=CODE_HASHER) if pin else ""
    with transaction.atomic():
        if Certificate.objects.filter(device__node_id=node_id, status=CertificateStatus.ACTIVE).exists():
            reason = f"device '{node_id}' holds an active certificate; revoke it or reset it before enrolling again"
        else:
            reason = ""
            Enrollment.objects.filter(node_id=node_id, status=EnrollmentStatus.OPEN).update(status=EnrollmentStatus.CANCELLED)
            enrollment = Enrollment.objects.create(
                node_id=node_id,
                device_type=device_type,
                code_hash=code_hash,
                pin_hash=pin_hash,
                expires_at=timezone.now() + timedelta(seconds=ttl),
                created_by=f"{actor.type}:{actor.id}",
            )
            record(actor, "enrollment.create", Decision.ALLOW, scope="reset", target_type="device", target_id=node_id, details={"pin": bool(pin), "ttl_s": ttl})
    if reason:
        record(actor, "enrollment.create", Decision.DENY, scope="reset", target_type="device", target_id=node_id, reason=reason)
        raise IdentityError("already_provisioned", reason)
    return EnrollmentTicket(enrollment, code, pin)


@dataclass(frozen=True)
class EnrollmentResult:
    device: Device
    certificate: Certificate

    def response_body(self) -> dict[str, Any]:
        return {
            "node_id": self.device.node_id,
            "cert": self.certificate.pem,
            "ca_chain": [ca.cert_pem for ca in trusted_cas()],
            "hub_signing_key": public_key_b64(SigningKeyKind.HUB_SIGNING),
            "release_key": public_key_b64(SigningKeyKind.RELEASE_SIGNING),
            "mesh_host": settings.PUBLIC_HOST,
            "mesh_port": settings.MESH_PORT,
        }


def _issue_certificate(device: Device, parsed: pki.ParsedCSR, replaces: Certificate | None = None) -> Certificate:
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


def complete_enrollment(code: Any, pin: Any, csr_pem: Any, peer: str, node_id: Any = None) -> EnrollmentResult:
    """The enrollment port's work: check the CSR, the code and PIN, then issue the cert.

    `node_id` is the enrollment the device claims (the CSR's CN when absent); the CSR's
    CN must equal it.

    Failed attempts are committed (they count towards the lock) before the refusal is
    raised; every outcome is audited without the code or PIN.
    """
    node_hint = ""
    try:
        if not isinstance(code, str) or not code:
            raise IdentityError("bad_request", "body.code must be a non-empty string")
        if pin is not None and not isinstance(pin, str):
            raise IdentityError("bad_request", "body.pin must be a string or null")
        try:
            parsed = pki.parse_csr(csr_pem)
        except pki.CSRRejected as rejected:
            raise IdentityError(rejected.code, rejected.reason) from None
        if node_id is None:
            node_id = parsed.common_name
        if not isinstance(node_id, str):
            raise IdentityError("bad_request", "body.node_id must be a string")
        node_hint = node_id[:64]
        try:
            node_id_validator(node_id)
        except Exception:
            raise IdentityError("bad_node_id", f"'{node_hint}' is not a valid node id") from None
        if parsed.common_name != node_id:
            raise IdentityError("cn_mismatch", f"csr common name '{parsed.common_name[:64]}' does not match the node id '{node_id}' being enrolled")
        result = _redeem(parsed, normalize_code(code), pin or "")
    except IdentityError as refused:
        actor = Actor(ActorType.DEVICE, node_hint or f"unknown@{peer}")
        record(
            actor,
            "device.enroll",
            Decision.DENY,
            target_type="device",
            target_id=node_hint,
            reason=refused.reason,
            details={"peer": peer, "code": refused.code},
        )
        raise
    return result


def _latest_enrollment(node_id: str, *, lock: bool = False) -> Enrollment | None:
    qs = Enrollment.objects.filter(node_id=node_id).order_by("-created_at")
    return (qs.select_for_update() if lock else qs).first()


def _redeem(parsed: pki.ParsedCSR, code: str, pin: str) -> EnrollmentResult:
    """Check the code and PIN *outside* any transaction (PBKDF2 takes ~0.25 s; SQLite's
    single write lock must not be held that long), then re-read the enrollment under a
    lock and apply the outcome only if it is still the same open enrollment."""
    node_id = parsed.common_name
    candidate = _latest_enrollment(node_id)
    if candidate is None:
        raise IdentityError("unknown_node", f"no enrollment for node '{node_id}'")
    wrong: tuple[str, str] | None = None
    if candidate.status == EnrollmentStatus.OPEN and not candidate.is_expired_at(timezone.now()):
        if not check_password(code, candidate.code_hash):
            wrong = ("bad_code", "wrong enrollment code")
        elif candidate.pin_hash and not check_password(pin, candidate.pin_hash):
            wrong = ("bad_pin", "wrong PIN")
    refusal: IdentityError | None = None
    with transaction.atomic():
        enrollment = _latest_enrollment(node_id, lock=True)
        now = timezone.now()
        if enrollment is None or enrollment.pk != candidate.pk:
            raise IdentityError("cancelled", f"enrollment for '{node_id}' was replaced while checking; try the new code")
        if enrollment.status == EnrollmentStatus.OPEN and enrollment.is_expired_at(now):
            enrollment.status = EnrollmentStatus.EXPIRED
            enrollment.save(update_fields=["status"])
            refusal = IdentityError("expired", f"enrollment code for '{node_id}' expired at {enrollment.expires_at.isoformat()}")
        elif enrollment.status != EnrollmentStatus.OPEN:
            refusal = _closed_refusal(enrollment)  # also a concurrent attempt that won or locked it
        elif wrong is not None:
            enrollment.last_attempt_at = now
            enrollment.failed_attempts += 1
            left = Enrollment.MAX_FAILED_ATTEMPTS - enrollment.failed_attempts
            if left <= 0:
                enrollment.status = EnrollmentStatus.LOCKED
                refusal = IdentityError(
                    "locked", f"{wrong[1]}; enrollment for '{node_id}' is now locked after {Enrollment.MAX_FAILED_ATTEMPTS} failed attempts"
                )
            else:
                refusal = IdentityError(wrong[0], f"{wrong[1]} ({left} attempt{'s' if left != 1 else ''} left)")
            enrollment.save(update_fields=["failed_attempts", "status", "last_attempt_at"])
        else:
            enrollment.last_attempt_at = now
            device, created = Device.objects.select_for_update().get_or_create(
                node_id=node_id, defaults={"device_type": enrollment.device_type, "name": node_id}
            )
            if Certificate.objects.filter(device=device, status=CertificateStatus.ACTIVE).exists():
                raise IdentityError("already_provisioned", f"device '{node_id}' already holds an active certificate")
            certificate = _issue_certificate(device, parsed)
            device.status = DeviceStatus.PROVISIONED
            if not created and enrollment.device_type != "generic":
                device.device_type = enrollment.device_type
            device.save(update_fields=["status", "device_type", "updated_at"])
            enrollment.status = EnrollmentStatus.USED
            enrollment.used_at = now
            enrollment.certificate = certificate
            enrollment.save(update_fields=["status", "used_at", "last_attempt_at", "certificate"])
            record(
                Actor(ActorType.DEVICE, node_id),
                "device.enroll",
                Decision.ALLOW,
                target_type="device",
                target_id=node_id,
                details={"serial": certificate.serial, "fingerprint": certificate.fingerprint, "reenrolled": not created},
            )
            device_type = device.device_type
            transaction.on_commit(lambda: events.device_enrolled(node_id, device_type))
            return EnrollmentResult(device, certificate)
    assert refusal is not None
    raise refusal


def _closed_refusal(enrollment: Enrollment) -> IdentityError:
    node_id = enrollment.node_id
    return {
        EnrollmentStatus.USED: IdentityError("code_used", f"the enrollment code for '{node_id}' was already used; create a new one"),
        EnrollmentStatus.LOCKED: IdentityError(
            "locked", f"enrollment for '{node_id}' is locked after {Enrollment.MAX_FAILED_ATTEMPTS} failed attempts; create a new code"
        ),
        EnrollmentStatus.EXPIRED: IdentityError("expired", f"enrollment code for '{node_id}' expired at {enrollment.expires_at.isoformat()}"),
        EnrollmentStatus.CANCELLED: IdentityError("cancelled", f"enrollment for '{node_id}' was cancelled"),
    }[EnrollmentStatus(enrollment.status)]


# --- revocation, renewal, resets ----------------------------------------------------------


def _revoke_rows(certs: list[Certificate], kind: RevocationKind, reason: str, now: datetime) -> None:
    for cert in certs:
        cert.status = CertificateStatus.REVOKED
        cert.revoked_at = now
        cert.revocation_kind = kind
        cert.revocation_reason = reason[:200]
        cert.save(update_fields=["status", "revoked_at", "revocation_kind", "revocation_reason"])
    for ca in CertificateAuthority.objects.select_for_update().filter(pk__in={c.ca_id for c in certs}):
        _regenerate_crl(ca)


def _after_revocation(node_id: str, serials: list[str], reason: str, reset_kind: RevocationKind | None = None) -> None:
    transaction.on_commit(_announce_crl_changed)
    if reset_kind is not None:  # the device hears the signed reset before its session is closed
        transaction.on_commit(lambda: _group_send(f"node.{node_id}", {"type": "session.reset", "kind": reset_kind}))
    transaction.on_commit(lambda: _group_send(f"node.{node_id}", {"type": "session.revoke", "reason": reason, "serials": serials}))


def revoke_certificate(actor: Actor, cert: Certificate, reason: str) -> Certificate:
    """Revoke one certificate; the device is `revoked` once it has no active one left."""
    return _revoke_certificate(actor, cert, RevocationKind.OPERATOR, reason)


def _revoke_certificate(actor: Actor, cert: Certificate, kind: RevocationKind, reason: str) -> Certificate:
    if not reason.strip():
        raise IdentityError("reason_required", "a revocation needs a reason")
    with transaction.atomic():
        cert = Certificate.objects.select_for_update().select_related("device").get(pk=cert.pk)
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
            new = _issue_certificate(device, parsed, replaces=current)
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
        _regenerate_crl(CertificateAuthority.objects.select_for_update().get(pk=old.ca_id))
        record(
            actor,
            "certificate.supersede",
            Decision.ALLOW,
            target_type="device",
            target_id=new_cert.device.node_id,
            details={"serial": old.serial, "by": new_cert.serial},
        )
        transaction.on_commit(_announce_crl_changed)


def certificates_expiring(within_days: int | None = None) -> list[Certificate]:
    horizon = timezone.now() + timedelta(days=within_days if within_days is not None else settings.CERT_RENEW_BEFORE_DAYS)
    return list(Certificate.objects.filter(status=CertificateStatus.ACTIVE, not_after__lt=horizon).select_related("device").order_by("not_after"))


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


def rotate_ca(actor: Actor) -> CertificateAuthority:
    """A new active CA for new certificates. The old one stays trusted (and keeps signing
    the gateway's server certificate) until retired, so no device loses its session."""
    with transaction.atomic():
        old = CertificateAuthority.objects.select_for_update().filter(active=True).first()
        if old is not None:
            old.active = False
            old.save(update_fields=["active"])
        new = _create_ca(f"meshhub root CA {timezone.now():%Y-%m-%d}")
        record(
            actor,
            "pki.ca.rotate",
            Decision.ALLOW,
            scope="admin",
            target_type="ca",
            target_id=new.fingerprint,
            details={"previous": old.fingerprint if old else None},
        )
        transaction.on_commit(_announce_crl_changed)
    return new


def retire_ca(actor: Actor, ca: CertificateAuthority) -> None:
    """Stop trusting a non-active CA: devices still on its certificates are cut off."""
    ca = CertificateAuthority.objects.get(pk=ca.pk)
    if ca.active:
        raise IdentityError("ca_active", "the active CA cannot be retired; rotate first")
    with transaction.atomic():
        CertificateAuthority.objects.filter(pk=ca.pk).update(trusted=False, retired_at=timezone.now())
        record(actor, "pki.ca.retire", Decision.ALLOW, scope="admin", target_type="ca", target_id=ca.fingerprint)
        transaction.on_commit(_announce_crl_changed)
    _ensure_server_cert()
