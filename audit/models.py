"""The tamper-evident audit log: every allow/deny decision the hub makes."""

from __future__ import annotations

from typing import Any

from django.db import models


class ActorType(models.TextChoices):
    DEVICE = "device", "Device"
    USER = "user", "User"
    TOKEN = "token", "API token"
    SYSTEM = "system", "System"
    RULE = "rule", "Automation rule"


class Decision(models.TextChoices):
    ALLOW = "allow", "Allow"
    DENY = "deny", "Deny"


class AuditEvent(models.Model):
    """One link of the hash chain. Written only by `audit.services.record*()`, never updated."""

    seq = models.BigIntegerField(help_text="Position in the chain, 1-based, without gaps.")
    ts = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=100)
    scope = models.CharField(max_length=32, blank=True)
    target_type = models.CharField(max_length=50, blank=True)
    target_id = models.CharField(max_length=150, blank=True)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        constraints = [
            models.UniqueConstraint(fields=["seq"], name="auditevent_seq_unique"),
            models.CheckConstraint(condition=models.Q(decision__in=["allow", "deny"]), name="auditevent_decision_valid"),
        ]
        indexes = [
            models.Index(fields=["actor_type", "actor_id"], name="auditevent_actor_idx"),
            models.Index(fields=["action"], name="auditevent_action_idx"),
            models.Index(fields=["decision", "ts"], name="auditevent_decision_ts_idx"),
            models.Index(fields=["target_type", "target_id"], name="auditevent_target_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.decision} {self.action} by {self.actor_type}:{self.actor_id}"

    def chain_fields(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "seq": self.seq,
            "ts": self.ts,
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "action": self.action,
            "scope": self.scope,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "decision": self.decision,
            "reason": self.reason,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class AuditChainHead(models.Model):
    """The single row every append locks: it serializes writers and remembers the tail.

    Locking one row (SELECT ... FOR UPDATE on PostgreSQL, the IMMEDIATE write lock on
    SQLite) keeps concurrent writers from forking the chain; its seq/hash also expose a
    deleted tail, which the links alone could not.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="auditchainhead_singleton")]

    def __str__(self) -> str:
        return f"audit chain head at seq {self.seq}"


class AuditSnapshot(models.Model):
    """One UTC day of the chain, attested with the hub's Ed25519 signing key.

    `payload` is the exact text that was signed: the canonical JSON (`audit.chain.canonical_json`)
    of `{date, first_id, last_id, last_hash, count}`. Despite their names, `first_id` and
    `last_id` hold `AuditEvent.seq` values (positions in the chain), not primary keys: seq
    is what the chain and an export are ordered by. A day without events still gets a
    snapshot (count 0, first/last null, `last_hash` the chain's tail before it), so every
    day is attested. `public_key` is the key that signed, kept so that old snapshots still
    verify after the hub key is rotated. Written only by `audit.snapshots`, never updated.
    """

    date = models.DateField(help_text="The UTC day of AuditEvent.ts this snapshot covers.")
    first_id = models.BigIntegerField(null=True, blank=True, help_text="seq of the day's first event (null for a day without events).")
    last_id = models.BigIntegerField(null=True, blank=True, help_text="seq of the day's last event (null for a day without events).")
    last_hash = models.CharField(max_length=64)
    count = models.BigIntegerField()
    payload = models.TextField(help_text="The canonical JSON that was signed, byte for byte (UTF-8).")
    signature = models.CharField(max_length=100, help_text="Base64 Ed25519 signature over payload.")
    public_key = models.CharField(max_length=64, help_text="Base64 raw Ed25519 public key that signed.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-date"]
        constraints = [models.UniqueConstraint(fields=["date"], name="auditsnapshot_date_unique")]

    def __str__(self) -> str:
        return f"audit snapshot {self.date.isoformat()} ({self.count} events)"

    def signed_fields(self) -> dict[str, Any]:
        """What the payload must say, from this row's columns (compared with the payload on verify)."""
        return {"date": self.date.isoformat(), "first_id": self.first_id, "last_id": self.last_id, "last_hash": self.last_hash, "count": self.count}
