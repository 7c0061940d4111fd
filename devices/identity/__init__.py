"""Device identity operations: the hub's CA and keys, enrollment, revocation, renewal, resets.

Each operation is one transaction and audits its decision. Side effects (files for the
TLS listeners, channel-layer messages to gateways) go out after commit. One module per
concern; this package re-exports the public names, so callers write `identity.revoke_device`:

- `authority`: the CAs (material, creation, the active and trusted ones), device
  certificate issuing, CRLs
- `listeners`: the gateway's server certificate, the listeners' PKI files, start-up, discovery
- `enrollment`: one-time codes and their redemption against a CSR
- `revocation`: revoking certificates and devices, provisioning and factory resets, the
  sweep of unused certificates
- `renewal`: new certificates over a live session, the expiring ones
- `rotation`: CA rotation and retirement
- `gateways`: what the operations tell the gateways over the channel layer

The hub signing and release keys, and how every hub private key is kept at rest, live in
`hub.signing` (the audit app signs with them and imports no domain app); their names are
re-exported here too.
"""

from __future__ import annotations

from devices.identity.authority import active_ca, ca_material, current_crl_pem, refresh_crls, trusted_cas
from devices.identity.enrollment import (
    CODE_ALPHABET,
    CODE_HASHER,
    CODE_LENGTH,
    EnrollmentResult,
    EnrollmentTicket,
    cancel_enrollment,
    complete_enrollment,
    create_enrollment,
    new_code,
    normalize_code,
)
from devices.identity.errors import IdentityError
from devices.identity.gateways import GATEWAYS_GROUP
from devices.identity.listeners import PkiFiles, discovery_answer, ensure_hub_identity, warn_if_devices_dial_elsewhere, write_pki_files
from devices.identity.renewal import certificates_expiring, confirm_renewal, renew_certificate
from devices.identity.revocation import cleanup_provisioning, confirm_factory_reset, provision_reset, request_factory_reset, revoke_certificate, revoke_device
from devices.identity.rotation import retire_ca, rotate_ca
from hub.signing import holds_signing_key, passphrase, public_key_b64, signing_key

__all__ = [
    "CODE_ALPHABET",
    "CODE_HASHER",
    "CODE_LENGTH",
    "GATEWAYS_GROUP",
    "EnrollmentResult",
    "EnrollmentTicket",
    "IdentityError",
    "PkiFiles",
    "active_ca",
    "ca_material",
    "cancel_enrollment",
    "certificates_expiring",
    "cleanup_provisioning",
    "complete_enrollment",
    "confirm_factory_reset",
    "confirm_renewal",
    "create_enrollment",
    "current_crl_pem",
    "discovery_answer",
    "ensure_hub_identity",
    "holds_signing_key",
    "new_code",
    "normalize_code",
    "passphrase",
    "provision_reset",
    "public_key_b64",
    "refresh_crls",
    "renew_certificate",
    "request_factory_reset",
    "retire_ca",
    "revoke_certificate",
    "revoke_device",
    "rotate_ca",
    "signing_key",
    "trusted_cas",
    "warn_if_devices_dial_elsewhere",
    "write_pki_files",
]
