"""The CA, CSR signing and CRLs, without a database."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devices import pki


@pytest.fixture(scope="module")
def ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return pki.create_ca("test CA")


def greedy_csr(common_name: str) -> str:
    """A CSR asking for far more than a device may have."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mallory")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hub.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_the_ca_is_a_ten_year_p256_root_for_leaf_certificates_only(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    _, cert = ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=3650)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0


def test_signing_ignores_requested_extensions(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, ca_cert = ca
    cert = pki.sign_device_csr(key, ca_cert, pki.parse_csr(greedy_csr("sensor-1")), "sensor-1", dt.timedelta(days=365))
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sensor-1")])
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier("urn:meshhub:node:sensor-1")]
    )
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    store = verification.Store([ca_cert])
    verification.PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
    with pytest.raises(verification.VerificationError):
        verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("hub.example")).verify(cert, [])


def test_signing_refuses_a_csr_for_another_node(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, ca_cert = ca
    with pytest.raises(pki.CSRRejected) as refused:
        pki.sign_device_csr(key, ca_cert, pki.parse_csr(greedy_csr("sensor-2")), "sensor-1", dt.timedelta(days=365))
    assert refused.value.code == "cn_mismatch"


def test_serials_are_random_positive_and_at_most_twenty_octets() -> None:
    serials = {pki.random_serial() for _ in range(200)}
    assert len(serials) == 200
    assert all(0 < s < 2**159 for s in serials)


def test_the_server_certificate_names_every_address(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, ca_cert = ca
    _, cert = pki.issue_server_cert(key, ca_cert, ["localhost", "hub.lan"], ["127.0.0.1", "::1"])
    assert pki.server_names(cert) == {"localhost", "hub.lan", "127.0.0.1", "::1"}
    policy = verification.PolicyBuilder().store(verification.Store([ca_cert]))
    policy.build_server_verifier(x509.DNSName("hub.lan")).verify(cert, [])
    policy.build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(cert, [])
    with pytest.raises(verification.VerificationError):
        policy.build_server_verifier(x509.DNSName("elsewhere.lan")).verify(cert, [])


def test_the_crl_lists_revoked_serials_with_their_reason(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> None:
    key, ca_cert = ca
    now = pki.utcnow()
    crl = pki.build_crl(key, ca_cert, [pki.RevokedEntry(1234, now, x509.ReasonFlags.key_compromise)], number=7)
    assert crl.is_signature_valid(ca_cert.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(1234)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.next_update_utc - now >= dt.timedelta(days=6)


@pytest.mark.parametrize(
    ("pem", "code"),
    [(None, "bad_csr"), ("", "bad_csr"), ("x" * 9000, "bad_csr")],
)
def test_parse_csr_refuses_what_is_not_a_csr(pem: object, code: str) -> None:
    with pytest.raises(pki.CSRRejected) as refused:
        pki.parse_csr(pem)
    assert refused.value.code == code
