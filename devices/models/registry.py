"""The device registry: devices, what they can do, their groups, the command outbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

NODE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
node_id_validator = RegexValidator(
    NODE_ID_PATTERN,
    "node_id is 1-64 lowercase letters, digits and hyphens, starting and ending with a letter or digit",
)


class DeviceStatus(models.TextChoices):
    UNPROVISIONED = "unprovisioned", "Unprovisioned"
    PROVISIONED = "provisioned", "Provisioned"
    REVOKED = "revoked", "Revoked"


class Device(models.Model):
    node_id = models.CharField(max_length=64, unique=True, validators=[node_id_validator])
    name = models.CharField(max_length=100, blank=True)
    aliases = models.JSONField(default=list, blank=True, help_text="Other names people use for it (the assistant matches them).")
    # When the name or aliases last changed: the assistant's name index reloads on it
    # (reports change updated_at all the time, this only when people rename things).
    named_at = models.DateTimeField(null=True, blank=True)
    device_type = models.CharField(max_length=50, default="generic", db_index=True)
    firmware_version = models.CharField(max_length=50, blank=True)
    status = models.CharField(max_length=16, choices=DeviceStatus.choices, default=DeviceStatus.UNPROVISIONED)
    online = models.BooleanField(default=False)
    last_seen = models.DateTimeField(null=True, blank=True)
    reported = models.JSONField(default=dict, blank=True, help_text="Last values the device reported, by capability.")
    desired = models.JSONField(default=dict, blank=True, help_text="Values an operator wants, by capability.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node_id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=DeviceStatus.values), name="device_status_valid"),
        ]
        indexes = [
            models.Index(fields=["status", "online"], name="device_status_online_idx"),
        ]

    def __str__(self) -> str:
        return self.node_id

    @property
    def is_provisioned(self) -> bool:
        return self.status == DeviceStatus.PROVISIONED


class CapabilityKind(models.TextChoices):
    SENSOR = "sensor", "Sensor"
    ACTUATOR = "actuator", "Actuator"
    PROPERTY = "property", "Property"


class ValueType(models.TextChoices):
    BOOL = "bool", "Boolean"
    INT = "int", "Integer"
    FLOAT = "float", "Float"
    STRING = "string", "String"
    ENUM = "enum", "Enum"


class Capability(models.Model):
    """One thing a device can report or be told: `temperature` (sensor), `on` (actuator)…"""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="capabilities")
    name = models.CharField(
        max_length=64,
        validators=[RegexValidator(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", "capability names are letters, digits, _ . - and start with a letter or _")],
    )
    kind = models.CharField(max_length=16, choices=CapabilityKind.choices)
    value_type = models.CharField(max_length=16, choices=ValueType.choices)
    unit = models.CharField(max_length=20, blank=True)
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    enum_values = models.JSONField(default=list, blank=True)
    writable = models.BooleanField(default=False)
    aliases = models.JSONField(default=list, blank=True, help_text="Other words for it ('heat' for setpoint): the assistant matches them.")

    class Meta:
        ordering = ["device", "name"]
        verbose_name_plural = "capabilities"
        constraints = [
            models.UniqueConstraint(fields=["device", "name"], name="capability_device_name_unique"),
            models.CheckConstraint(
                condition=models.Q(min_value__isnull=True) | models.Q(max_value__isnull=True) | models.Q(min_value__lte=models.F("max_value")),
                name="capability_min_le_max",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind=CapabilityKind.SENSOR) | models.Q(writable=False),
                name="capability_sensor_not_writable",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_id}:{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "value_type": self.value_type,
            "unit": self.unit,
            "min": self.min_value,
            "max": self.max_value,
            "enum_values": list(self.enum_values or []),
            "writable": self.writable,
        }


class Group(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(Device, related_name="groups", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)  # the assistant's name index reloads on it

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class CommandAction(models.TextChoices):
    SET = "set", "Set"
    GET = "get", "Get"
    TOGGLE = "toggle", "Toggle"
    EXECUTE = "execute", "Execute"


class CommandStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"
    REJECTED = "rejected", "Rejected"


OPEN_COMMAND_STATUSES = (CommandStatus.PENDING, CommandStatus.DELIVERED)


class Command(models.Model):
    """The outbox: a command is a row first and a message second, so none is ever lost."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="commands")
    action = models.CharField(max_length=16, choices=CommandAction.choices)
    capability = models.CharField(max_length=64)
    value = models.JSONField(null=True, blank=True)
    scope = models.CharField(max_length=16, default="command")
    status = models.CharField(max_length=16, choices=CommandStatus.choices, default=CommandStatus.PENDING)
    requested_by = models.CharField(max_length=160, help_text="actor_type:actor_id of whoever asked")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(action__in=CommandAction.values), name="command_action_valid"),
            models.CheckConstraint(condition=models.Q(status__in=CommandStatus.values), name="command_status_valid"),
            models.CheckConstraint(condition=models.Q(expires_at__gt=models.F("created_at")), name="command_expires_after_created"),
        ]
        indexes = [
            models.Index(fields=["device", "status", "created_at"], name="command_device_status_idx"),
            models.Index(fields=["status", "expires_at"], name="command_status_expiry_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.device_id}:{self.capability} ({self.status})"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_COMMAND_STATUSES

    def is_expired_at(self, when: datetime) -> bool:
        return self.is_open and self.expires_at <= when
