"""Modbus TCP bridges and their points.

A bridge is one PLC (host, port, unit id) and is also a `Device` of type `plc`: its
points are that device's capabilities, so the API, automation and the dashboard treat a
PLC like any device. The configuration is validated as a whole by `industrial.config`
before anything is written; these constraints are the last line behind it.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from devices.models import Device


class ByteOrder(models.TextChoices):
    BIG = "big", "Big endian"
    LITTLE = "little", "Little endian"


class RegisterType(models.TextChoices):
    COIL = "coil", "Coil"
    DISCRETE_INPUT = "discrete_input", "Discrete input"
    HOLDING = "holding", "Holding register"
    INPUT = "input", "Input register"


BIT_REGISTERS = (RegisterType.COIL, RegisterType.DISCRETE_INPUT)
WRITABLE_REGISTERS = (RegisterType.COIL, RegisterType.HOLDING)


class DataType(models.TextChoices):
    BOOL = "bool", "bool"
    U16 = "u16", "u16"
    I16 = "i16", "i16"
    U32 = "u32", "u32"
    I32 = "i32", "i32"
    F32 = "f32", "f32"
    F64 = "f64", "f64"


class Quality(models.TextChoices):
    UNKNOWN = "unknown", "Not read yet"
    GOOD = "good", "Good"
    STALE = "stale", "Stale (the PLC did not answer)"
    BAD = "bad", "Bad (the PLC answered with an error or an unusable value)"


class ModbusBridge(models.Model):
    device = models.OneToOneField(Device, on_delete=models.CASCADE, related_name="modbus_bridge")
    name = models.CharField(max_length=100, blank=True)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=502, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    unit_id = models.PositiveSmallIntegerField(default=1, validators=[MaxValueValidator(255)])
    poll_interval_s = models.FloatField(default=1.0, validators=[MinValueValidator(1.0), MaxValueValidator(86400.0)])
    timeout_s = models.FloatField(default=1.0, validators=[MinValueValidator(0.05), MaxValueValidator(60.0)])
    retries = models.PositiveSmallIntegerField(default=1, validators=[MaxValueValidator(10)])
    enabled = models.BooleanField(default=True)
    byte_order = models.CharField(max_length=8, choices=ByteOrder.choices, default=ByteOrder.BIG)
    word_order = models.CharField(max_length=8, choices=ByteOrder.choices, default=ByteOrder.BIG)
    # Polling state: a lease so that two workers never poll one PLC at once, and the
    # backoff after connection failures.
    lease_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_poll_at = models.DateTimeField(null=True, blank=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # The last good read of every point, {capability: value}, even within the deadband:
    # one row written per poll instead of one per point (the reported values, outside
    # the deadband, are the device's `reported`).
    live = models.JSONField(default=dict, blank=True)
    # New on every import: pollers keep the planned requests per process until it changes
    # (random, so a bridge recreated under a reused primary key never matches an old plan).
    config_token = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["device__node_id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(port__gte=1, port__lte=65535), name="modbus_bridge_port_range"),
            models.CheckConstraint(condition=models.Q(unit_id__lte=255), name="modbus_bridge_unit_id_range"),
            models.CheckConstraint(condition=models.Q(poll_interval_s__gte=1.0), name="modbus_bridge_poll_interval_min"),
            models.CheckConstraint(condition=models.Q(timeout_s__gt=0), name="modbus_bridge_timeout_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.device.node_id} ({self.host}:{self.port} unit {self.unit_id})"

    @property
    def node_id(self) -> str:
        return self.device.node_id


class ModbusPoint(models.Model):
    bridge = models.ForeignKey(ModbusBridge, on_delete=models.CASCADE, related_name="points")
    capability = models.CharField(max_length=64)
    register = models.CharField(max_length=16, choices=RegisterType.choices)
    address = models.PositiveIntegerField(validators=[MaxValueValidator(65535)])
    data_type = models.CharField(max_length=8, choices=DataType.choices)
    byte_order = models.CharField(max_length=8, choices=ByteOrder.choices, blank=True, help_text="Blank: the bridge's.")
    word_order = models.CharField(max_length=8, choices=ByteOrder.choices, blank=True, help_text="Blank: the bridge's.")
    scale = models.FloatField(default=1.0)
    offset = models.FloatField(default=0.0)
    unit = models.CharField(max_length=20, blank=True)
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    writable = models.BooleanField(default=False)
    deadband = models.FloatField(default=0.0, validators=[MinValueValidator(0.0)])
    # How trustworthy the last read was; written only when it changes.
    quality = models.CharField(max_length=8, choices=Quality.choices, default=Quality.UNKNOWN)
    quality_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["bridge", "register", "address"]
        constraints = [
            models.UniqueConstraint(fields=["bridge", "capability"], name="modbus_point_bridge_capability_unique"),
            models.CheckConstraint(condition=models.Q(address__lte=65535), name="modbus_point_address_range"),
            models.CheckConstraint(condition=~models.Q(scale=0), name="modbus_point_scale_nonzero"),
            models.CheckConstraint(condition=models.Q(deadband__gte=0), name="modbus_point_deadband_nonnegative"),
            models.CheckConstraint(
                condition=models.Q(min_value__isnull=True) | models.Q(max_value__isnull=True) | models.Q(min_value__lte=models.F("max_value")),
                name="modbus_point_min_le_max",
            ),
            models.CheckConstraint(
                condition=~models.Q(register__in=BIT_REGISTERS) | models.Q(data_type=DataType.BOOL),
                name="modbus_point_bits_are_bool",
            ),
            models.CheckConstraint(
                condition=models.Q(writable=False) | models.Q(register__in=WRITABLE_REGISTERS),
                name="modbus_point_writable_register",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.bridge.device.node_id}.{self.capability} ({self.register} {self.address} {self.data_type})"

    @property
    def effective_byte_order(self) -> str:
        return self.byte_order or self.bridge.byte_order

    @property
    def effective_word_order(self) -> str:
        return self.word_order or self.bridge.word_order


class PlcWriteClaim(models.Model):
    """A worker's claim on one PLC command, written before anything touches the wire.

    A worker can be killed between claiming a command and recording its result. The claim
    says what a re-run must do: `wanted` is None while nothing was decided (never
    written: start over), else the value that was (maybe) written, fixed once so that a
    re-run of a `toggle` writes the same target instead of flipping twice. `lease_until`
    keeps a second run away while the first may still be working; once it has passed,
    the sweep hands the command to a worker again."""

    command = models.OneToOneField("devices.Command", on_delete=models.CASCADE, related_name="plc_claim")
    wanted = models.JSONField(null=True, blank=True)
    lease_until = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=1)

    def __str__(self) -> str:
        return f"claim on {self.command_id} until {self.lease_until.isoformat()}"
