"""The hub's public-key infrastructure, without Django: CA, CSR signing, CRL.

Everything here takes and returns `cryptography` objects or PEM bytes, so it is unit
tested alone and the services decide what is stored where (keys at rest, encrypted:
`hub.signing`). Device keys never pass through here: a device sends a CSR and gets a
certificate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=825)
CLOCK_SKEW = dt.timedelta(minutes=5)
NODE_URN_PREFIX = "urn:meshhub:node:"


class CSRRejected(ValueError):
    """A CSR the hub will not sign; `code` is the protocol error code, the message the reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def random_serial() -> int:
    """159 random bits: positive, below 2**159, as RFC 5280 wants (≤ 20 octets)."""
    return secrets.randbits(159) | 1


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes | str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def fingerprint(cert: x509.Certificate) -> str:
    """`sha256:<hex>` of the DER encoding: what devices pin and operators compare."""
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def der_fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _name(common_name: str, org: str = "meshhub") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(common_name: str, now: dt.datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed EC P-256 root, valid 10 years, that may sign only end-entity certs and CRLs."""
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issuer_extensions(builder: x509.CertificateBuilder, ca_cert: x509.Certificate) -> x509.CertificateBuilder:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)


def _sign_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    public_key: Any,
    now: dt.datetime,
    validity: dt.timedelta,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
) -> x509.Certificate:
    """An end-entity certificate: not a CA, digitalSignature only, one EKU, the given SANs,
    never valid past the CA itself."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    )
    return _issuer_extensions(builder, ca_cert).sign(ca_key, hashes.SHA256())


def issue_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, dns_names: Sequence[str], ips: Sequence[str], now: dt.datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The gateway's TLS certificate (EKU serverAuth), with every name devices may dial."""
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    subject = _name(dns_names[0] if dns_names else "meshhub")
    cert = _sign_leaf(ca_key, ca_cert, subject, key.public_key(), now, SERVER_VALIDITY, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    return key, cert


def server_names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}


@dataclass(frozen=True)
class ParsedCSR:
    csr: x509.CertificateSigningRequest
    common_name: str


def parse_csr(pem: object) -> ParsedCSR:
    """Check a device's CSR: PEM, valid self-signature, P-256 key, one CN. Extensions it
    asks for are ignored: the hub decides what a device certificate says."""
    if not isinstance(pem, str) or not pem.strip():
        raise CSRRejected("bad_csr", "csr must be a PEM string")
    if len(pem) > 8192:
        raise CSRRejected("bad_csr", "csr is larger than 8192 characters")
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError as exc:
        raise CSRRejected("bad_csr", f"csr is not a valid PEM certificate request: {exc}") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature):
        valid = False
    if not valid:
        raise CSRRejected("bad_csr_signature", "csr signature does not verify: the request was altered or not signed by its key")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__.removeprefix("_")
        raise CSRRejected("bad_key", f"csr key must be EC P-256 (secp256r1), got {kind}")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise CSRRejected("bad_csr", "csr subject must have exactly one common name (the node id)")
    return ParsedCSR(csr, names[0].value)


def sign_device_csr(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, parsed: ParsedCSR, node_id: str, validity: dt.timedelta, now: dt.datetime | None = None
) -> x509.Certificate:
    """A client certificate for `node_id`: CN, SAN URI urn:meshhub:node:<id>, digitalSignature, clientAuth."""
    if parsed.common_name != node_id:
        raise CSRRejected("cn_mismatch", f"csr common name '{parsed.common_name}' does not match the enrollment's node id '{node_id}'")
    now = now or utcnow()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])
    san = [x509.UniformResourceIdentifier(NODE_URN_PREFIX + node_id)]
    return _sign_leaf(ca_key, ca_cert, subject, parsed.csr.public_key(), now, validity, ExtendedKeyUsageOID.CLIENT_AUTH, san)


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags = x509.ReasonFlags.unspecified


CRL_VALIDITY = dt.timedelta(days=7)


def build_crl(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, revoked: Iterable[RevokedEntry], number: int, now: dt.datetime | None = None
) -> x509.CertificateRevocationList:
    now = now or utcnow()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + CRL_VALIDITY)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(entry.reason), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(item)
    return builder.sign(ca_key, hashes.SHA256())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
