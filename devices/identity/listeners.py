"""What the hub's TLS listeners need: the gateway's server certificate, the PKI files they
load, and the start-up work (`ensure_hub_identity`), plus what LAN discovery answers."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, record
from devices import pki
from devices.identity.authority import active_ca, ca_material, regenerate_crl, trusted_cas
from devices.models import CertificateAuthority, HubKey, HubKeyKind
from hub import signing
from hub.models import SigningKeyKind

logger = logging.getLogger("meshhub.identity")


def _write_private(path: Path, data: bytes) -> None:
    """Atomic replace of a 0600 file: readers see the old or the new content, never half."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _active_server_cert() -> HubKey | None:
    return HubKey.objects.filter(kind=HubKeyKind.SERVER_TLS, active=True).first()


def _server_cert_current(hub_key: HubKey, signer: CertificateAuthority) -> bool:
    cert = pki.load_cert(hub_key.public)
    if hub_key.ca_id != signer.pk:
        return False
    if cert.not_valid_after_utc - timezone.now() < timedelta(days=30):
        return False
    return pki.server_names(cert) >= set(settings.TLS_SERVER_NAMES)


def ensure_server_cert() -> HubKey:
    """The gateway's TLS certificate, signed by the oldest trusted CA (which every
    device trusts, also mid-rotation) and naming every address devices may dial."""
    active_ca()
    signer = trusted_cas()[0]
    current = _active_server_cert()
    if current is not None and _server_cert_current(current, signer):
        return current
    ca_key, ca_cert = ca_material(signer)
    names = settings.TLS_SERVER_NAMES
    ips = [n for n in names if _is_ip(n)]
    key, cert = pki.issue_server_cert(ca_key, ca_cert, [n for n in names if not _is_ip(n)], ips)
    with transaction.atomic():
        HubKey.objects.filter(kind=HubKeyKind.SERVER_TLS, active=True).update(active=False)
        hub_key = HubKey.objects.create(
            kind=HubKeyKind.SERVER_TLS, public=pki.cert_pem(cert).decode(), key_pem=signing.encrypt_key(key, signing.passphrase()).decode(), ca=signer
        )
        record(Actor.system(), "pki.server_cert.issue", Decision.ALLOW, scope="admin", target_type="hubkey", target_id="server_tls", details={"names": names})
    return hub_key


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class PkiFiles:
    """What the TLS listeners load: server chain + encrypted key, and CAs + CRLs to verify clients."""

    server_chain: Path
    server_key: Path
    trust_bundle: Path  # trusted CA certificates followed by their CRLs
    passphrase: bytes


def ensure_hub_identity() -> PkiFiles:
    """Create whatever is missing (CA, server cert, hub and release keys), refresh a CRL
    near its next update, and write the listeners' files. Idempotent; run at start-up."""
    ca_material(active_ca())  # a wrong passphrase fails here, by name, not deep inside ssl
    server = ensure_server_cert()
    signing.ensure_signing_key(SigningKeyKind.HUB_SIGNING)
    signing.ensure_signing_key(SigningKeyKind.RELEASE_SIGNING)
    for ca in trusted_cas():
        if ca.crl_next_update is None or ca.crl_next_update - timezone.now() < timedelta(days=2):
            with transaction.atomic():
                regenerate_crl(ca)
    return write_pki_files(server)


def write_pki_files(server: HubKey | None = None) -> PkiFiles:
    """Write the listeners' files from the database, so every gateway node builds the
    same trust store from the same rows."""
    server = server or _active_server_cert() or ensure_server_cert()
    directory = Path(settings.PKI_DIR)
    cas = trusted_cas()
    signer = server.ca
    chain = server.public + (signer.cert_pem if signer else "")
    files = PkiFiles(directory / "server-chain.pem", directory / "server-key.pem", directory / "trust-bundle.pem", signing.passphrase())
    _write_private(files.server_chain, chain.encode())
    _write_private(files.server_key, server.key_pem.encode())
    _write_private(files.trust_bundle, ("".join(ca.cert_pem for ca in cas) + "".join(ca.crl_pem for ca in cas)).encode())
    return files


def discovery_answer(enroll_port: int | None = None, mesh_port: int | None = None) -> dict[str, Any]:
    """What the LAN discovery responder tells a device: where to dial (not whom to trust)."""
    return {
        "hub_version": "meshhub/0.1",
        "enroll_host": settings.PUBLIC_HOST,
        "enroll_port": enroll_port or settings.ENROLL_PORT,
        "mesh_host": settings.PUBLIC_HOST,
        "mesh_port": mesh_port or settings.MESH_PORT,
        "ca_fingerprint": active_ca().fingerprint,
    }


def warn_if_devices_dial_elsewhere(enroll_port: int, mesh_port: int) -> list[str]:
    """Enrollment codes and the enrolled answer name MESHHUB_ENROLL_PORT/MESHHUB_MESH_PORT
    (every process agrees on them: the pages, createenrollment, the gateways), not the
    port a listener was told to bind. A listener started with another port is fine behind
    a forwarder and a trap otherwise (devices enrolled here would dial the setting): say so
    once at start. Returns the warnings logged."""
    warnings = []
    listeners = (("enrollment", enroll_port, settings.ENROLL_PORT, "MESHHUB_ENROLL_PORT"), ("mesh", mesh_port, settings.MESH_PORT, "MESHHUB_MESH_PORT"))
    for name, bound, told, variable in listeners:
        if bound != told:
            warnings.append(
                f"the {name} listener binds port {bound} but devices are told {told} ({variable}): set it to {bound} unless a forwarder maps {told} to {bound}"
            )
    for warning in warnings:
        logger.warning(warning)
    return warnings
