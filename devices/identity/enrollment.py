"""Enrollment: one-time codes (+ optional PIN) an operator creates, and the enrollment
port's redemption of one against a device's CSR.

Codes and PINs are stored hashed; a wrong attempt is committed (it counts towards the
lock) before the refusal is raised, and every outcome is audited without the secrets.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import transaction
from django.utils import timezone

from audit.models import ActorType, Decision
from audit.services import Actor, authorize, record
from devices import events, pki
from devices.identity.authority import active_ca, issue_certificate, trusted_cas
from devices.identity.errors import IdentityError
from devices.models import Certificate, CertificateStatus, Device, DeviceStatus, Enrollment, EnrollmentStatus, node_id_validator
from hub.models import SigningKeyKind
from hub.scopes import Scope
from hub.signing import public_key_b64, release_public_keys

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CODE_LENGTH = 12  # 60 bits
CODE_HASHER = "pbkdf2_sha256"


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
    authorize(actor, Scope.RESET, "enrollment.create", target_type="device", target_id=str(node_id)[:150])
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


def cancel_enrollment(actor: Actor, enrollment: Enrollment) -> bool:
    """Cancel an open code so it can no longer be redeemed; False when it was not open."""
    authorize(actor, Scope.RESET, "enrollment.cancel", target_type="device", target_id=enrollment.node_id)
    with transaction.atomic():
        cancelled = Enrollment.objects.filter(pk=enrollment.pk, status=EnrollmentStatus.OPEN).update(status=EnrollmentStatus.CANCELLED) > 0
        if cancelled:
            record(actor, "enrollment.cancel", Decision.ALLOW, scope=Scope.RESET, target_type="device", target_id=enrollment.node_id)
    return cancelled


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
            "release_keys": release_public_keys(),
            "mesh_host": settings.PUBLIC_HOST,
            "mesh_port": settings.MESH_PORT,
        }


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
            certificate = issue_certificate(device, parsed)
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
