"""Registry models (devices, capabilities, groups, commands), telemetry (samples and rollups)
and identity models (CA, hub keys, certificates, enrollments), split by concept."""

from devices.models.identity import (
    RESET_KINDS,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    Enrollment,
    EnrollmentStatus,
    FactoryResetRequest,
    HubKey,
    HubKeyKind,
    RevocationKind,
)
from devices.models.registry import (
    NODE_ID_PATTERN,
    OPEN_COMMAND_STATUSES,
    Capability,
    CapabilityKind,
    Command,
    CommandAction,
    CommandStatus,
    Device,
    DeviceStatus,
    Group,
    ValueType,
    node_id_validator,
)
from devices.models.telemetry import RESOLUTION_SECONDS, Resolution, TelemetryRollup, TelemetrySample

__all__ = [
    "NODE_ID_PATTERN",
    "OPEN_COMMAND_STATUSES",
    "RESET_KINDS",
    "RESOLUTION_SECONDS",
    "Capability",
    "CapabilityKind",
    "Certificate",
    "CertificateAuthority",
    "CertificateStatus",
    "Command",
    "CommandAction",
    "CommandStatus",
    "Device",
    "DeviceStatus",
    "Enrollment",
    "EnrollmentStatus",
    "FactoryResetRequest",
    "Group",
    "HubKey",
    "HubKeyKind",
    "Resolution",
    "RevocationKind",
    "TelemetryRollup",
    "TelemetrySample",
    "ValueType",
    "node_id_validator",
]
