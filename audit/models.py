"""The tamper-evident audit log: every allow/deny decision the hub makes."""

from __future__ import annotations

from typing import Any

from django.db import models


class ActorType(models.TextChoices):
    DEVICE = "device", "Device"
    USER = "user", "User"
    TOKEN = "token", "API token"
    SYSTEM = "system", "System"


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
