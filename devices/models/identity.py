"""Device identity: the hub's CA and keys, device certificates, enrollments, reset requests.

Private keys are stored only encrypted (PKCS#8 under the CA passphrase); device keys are
never stored at all: devices keep theirs and send CSRs.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone

from devices.models.registry import Device


class CertificateAuthority(models.Model):
    """A root CA. One is `active` (signs new certificates); `trusted` ones stay in the
    gateway's trust store until retired, so a rotation does not cut devices off."""

    name = models.CharField(max_length=100)
    cert_pem = models.TextField()
    key_pem = models.TextField(help_text="PKCS#8, encrypted with the CA passphrase.")
    fingerprint = models.CharField(max_length=71, unique=True)
    not_after = models.DateTimeField()
    active = models.BooleanField(default=True)
    trusted = models.BooleanField(default=True)
    crl_pem = models.TextField(blank=True)
    crl_number = models.PositiveBigIntegerField(default=0)
    crl_next_update = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "certificate authority"
        verbose_name_plural = "certificate authorities"
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=models.Q(active=True), name="ca_single_active"),
            models.CheckConstraint(condition=~models.Q(active=True, trusted=False), name="ca_active_is_trusted"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint[:23]}…)"


class HubKeyKind(models.TextChoices):
    SERVER_TLS = "server_tls", "Gateway TLS server certificate"


class HubKey(models.Model):
    """A TLS key the hub itself holds: `public` is its PEM certificate, `ca` the CA that
    signed it. The hub's Ed25519 signing keys are `hub.models.SigningKey` (the audit app
    signs with them and must not reach into this app)."""

    kind = models.CharField(max_length=20, choices=HubKeyKind.choices)
    public = models.TextField()
    key_pem = models.TextField(blank=True, help_text="PKCS#8, encrypted with the CA passphrase; empty if held elsewhere.")
    ca = models.ForeignKey(CertificateAuthority, null=True, blank=True, on_delete=models.PROTECT, related_name="hub_keys")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "-created_at"]
        constraints = [models.UniqueConstraint(fields=["kind"], condition=models.Q(active=True), name="hubkey_single_active_per_kind")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.created_at:%Y-%m-%d})"


class CertificateStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUPERSEDED = "superseded", "Superseded"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"


class RevocationKind(models.TextChoices):
    """What ended a certificate, set only by the service that did it. The gateway sends a
    signed wipe only for the two reset kinds; the free-text reason is for people and never
    decides anything (an operator typing "factory_reset" as a reason only revokes)."""

    OPERATOR = "operator", "Revoked by an operator"
    SUPERSEDED = "superseded", "Superseded by a renewal"
    UNUSED = "unused", "Never used in a session"
    PROVISION_RESET = "provision.reset", "Provisioning reset"
    FACTORY_RESET = "factory_reset", "Factory reset"


RESET_KINDS = (RevocationKind.PROVISION_RESET, RevocationKind.FACTORY_RESET)


class Certificate(models.Model):
    """A device certificate the hub issued. Serial as lowercase hex."""

    ca = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="certificates")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="certificates")
    serial = models.CharField(max_length=40, unique=True)
    fingerprint = models.CharField(max_length=71, unique=True)
    pem = models.TextField()
    not_before = models.DateTimeField()
    not_after = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=CertificateStatus.choices, default=CertificateStatus.ACTIVE)
    issued_at = models.DateTimeField(default=timezone.now)
    first_used_at = models.DateTimeField(null=True, blank=True, help_text="First mTLS session with this certificate.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=200, blank=True, help_text="Free text for people; decides nothing.")
    revocation_kind = models.CharField(max_length=20, choices=RevocationKind.choices, blank=True, help_text="Set by the service that ended the certificate.")
    replaces = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaced_by")

    class Meta:
        ordering = ["-issued_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=CertificateStatus.values), name="certificate_status_valid"),
            models.CheckConstraint(condition=models.Q(not_after__gt=models.F("not_before")), name="certificate_validity_order"),
            models.CheckConstraint(
                condition=~models.Q(status="revoked") | models.Q(revoked_at__isnull=False),
                name="certificate_revoked_has_time",
            ),
            models.CheckConstraint(
                condition=models.Q(revocation_kind="") | models.Q(revocation_kind__in=RevocationKind.values),
                name="certificate_revocation_kind_valid",
            ),
        ]
        indexes = [models.Index(fields=["device", "status"], name="certificate_device_status_idx")]

    def __str__(self) -> str:
        return f"{self.device_id} serial {self.serial[:12]}… ({self.status})"

    def is_valid_at(self, when: datetime) -> bool:
        return self.status == CertificateStatus.ACTIVE and self.not_before <= when < self.not_after


class EnrollmentStatus(models.TextChoices):
    OPEN = "open", "Open"
    USED = "used", "Used"
    LOCKED = "locked", "Locked (too many failed attempts)"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class Enrollment(models.Model):
    """A one-time code (and optional PIN) that lets one device join as `node_id`.
    Code and PIN are stored only as PBKDF2 hashes."""

    MAX_FAILED_ATTEMPTS = 3

    node_id = models.CharField(max_length=64, db_index=True)
    device_type = models.CharField(max_length=50, default="generic")
    code_hash = models.CharField(max_length=200)
    pin_hash = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=EnrollmentStatus.choices, default=EnrollmentStatus.OPEN)
    failed_attempts = models.PositiveSmallIntegerField(default=0)
    expires_at = models.DateTimeField()
    created_by = models.CharField(max_length=160)
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    certificate = models.OneToOneField(Certificate, null=True, blank=True, on_delete=models.SET_NULL, related_name="enrollment")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=EnrollmentStatus.values), name="enrollment_status_valid"),
            models.UniqueConstraint(fields=["node_id"], condition=models.Q(status="open"), name="enrollment_one_open_per_node"),
        ]

    def __str__(self) -> str:
        return f"enrollment {self.node_id} ({self.status})"

    @property
    def has_pin(self) -> bool:
        return bool(self.pin_hash)

    def is_expired_at(self, when: datetime) -> bool:
        return self.expires_at <= when


class FactoryResetRequest(models.Model):
    """Step one of a factory reset: a token, valid 60 s, that step two must present."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="factory_reset_requests")
    token_hash = models.CharField(max_length=64)
    requested_by = models.CharField(max_length=160)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    confirmed_by = models.CharField(max_length=160, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"factory reset of {self.device_id} requested by {self.requested_by}"
