"""API tokens: how scripts authenticate. The secret is shown once and stored hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "mh"


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits, so one SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token `mh_<key>_<secret>`: `key` finds the row, the secret's hash proves it."""

    key = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    scopes = models.JSONField(default=list, help_text="Subset of read-status, command, reset, ota, admin.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}_{self.key} ({self.user}, {', '.join(self.scopes)})"

    @classmethod
    def issue(cls, user: models.Model, scopes: list[str], *, name: str = "", expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """Create a token; returns the row and the plaintext, which is never stored."""
        key = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        token = cls.objects.create(key=key, secret_hash=hash_secret(secret), user=user, name=name, scopes=scopes, expires_at=expires_at)
        return token, f"{TOKEN_PREFIX}_{key}_{secret}"

    @staticmethod
    def split(plaintext: str) -> tuple[str, str] | None:
        parts = plaintext.split("_", 2)
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
            return None
        return parts[1], parts[2]

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class Heartbeat(models.Model):
    """Last time a background component proved it was alive: `worker` (a task beat
    schedules, so it proves both) and one `gateway:<id>` row per running mesh gateway,
    whose `details` carry its address, pid and open connections for the system page;
    `hub` is when runhub last started its worker + beat (hub.system: "starting")."""

    name = models.CharField(max_length=50, primary_key=True)
    at = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.at.isoformat()}"


class SigningKeyKind(models.TextChoices):
    HUB_SIGNING = "hub_signing", "Hub signing key (reset/OTA commands, audit snapshots)"
    RELEASE_SIGNING = "release_signing", "Firmware release signing key"


class SigningKey(models.Model):
    """An Ed25519 key the hub signs with, kept here (not in `devices`) because the audit
    log signs its snapshots with it and audit imports no domain app. `public` is the raw
    public key in base64; a rotated-out key stays (inactive) so what it signed verifies."""

    kind = models.CharField(max_length=20, choices=SigningKeyKind.choices)
    public = models.TextField(help_text="Raw Ed25519 public key, base64.")
    key_pem = models.TextField(blank=True, help_text="PKCS#8, encrypted with the CA passphrase; empty if held elsewhere.")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=models.Q(active=True), name="signingkey_single_active_per_kind"),
            models.CheckConstraint(condition=models.Q(kind__in=SigningKeyKind.values), name="signingkey_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.created_at:%Y-%m-%d})"


class TrustedReleaseKey(models.Model):
    """A release-signing public key the hub accepts besides its own (`manage.py ota
    trust-key`): an off-hub key that signs in CI, say. Devices enrolled from then on are
    given it with the hub's own release key."""

    key_id = models.CharField(max_length=64, unique=True)
    public = models.TextField(help_text="Raw Ed25519 public key, base64.")
    name = models.CharField(max_length=100, blank=True)
    added_by = models.CharField(max_length=200)
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["added_at"]

    def __str__(self) -> str:
        return f"{self.name or 'release key'} {self.key_id}"


class IdempotencyKey(models.Model):
    """A client's `Idempotency-Key` for a command request and the first answer it got
    (hub.idempotency). Written in the same transaction as the command(s), so a retry racing
    the first request waits on the unique index and then reads the stored answer."""

    principal = models.CharField(max_length=64, help_text="token:<id> or user:<id>: whose key it is.")
    key = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=300, help_text="Method and path of the first request.")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and canonical JSON body.")
    # Null only while the first request runs, inside its own transaction: never seen by another.
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "idempotency key"
        constraints = [models.UniqueConstraint(fields=["principal", "key"], name="idempotencykey_principal_key_unique")]
        indexes = [models.Index(fields=["created_at"], name="idempotencykey_created_idx")]

    def __str__(self) -> str:
        return f"{self.principal} {self.key!r} → {self.response_status}"
