"""Registry models (devices, capabilities, groups, commands, telemetry) and identity models
(CA, hub keys, certificates, enrollments), split by concept."""

from devices.models.identity import (
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    Enrollment,
    EnrollmentStatus,
    FactoryResetRequest,
    HubKey,
    HubKeyKind,
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
    TelemetrySample,
    ValueType,
    node_id_validator,
)

__all__ = [
    "NODE_ID_PATTERN",
    "OPEN_COMMAND_STATUSES",
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
    "TelemetrySample",
    "ValueType",
    "node_id_validator",
]
