"""Enrollment over real TLS: the real agent, the real listener, certificates from the real CA."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import Actor
from devices import identity
from devices.models import Certificate, CertificateAuthority, Device, DeviceStatus, Enrollment, HubKey
from firmware.agent import port as agent_port
from firmware.agent.core import enroll as agent_enroll
from hub.mesh.enroll import EnrollmentListener
from hub.models import SigningKey
from tests.mesh_helpers import enroll_frame, make_csr, raw_tls, read_answer, running_enrollment_listener, send_raw, tampered_csr

pytestmark = pytest.mark.django_db(transaction=True)
OPERATOR = Actor("user", "alice")


@pytest.fixture
def listener(settings: Any) -> Iterator[EnrollmentListener]:
    settings.ENROLL_READ_TIMEOUT_S = 1.0
    with running_enrollment_listener() as running:
        yield running


def ticket(node_id: str = "sensor-1", **kwargs: Any) -> dict[str, Any]:
    return identity.create_enrollment(OPERATOR, node_id, **kwargs).as_dict()


def agent_enrolls(
    listener: EnrollmentListener, info: dict[str, Any], state_dir: Path, *, code: str | None = None, pin: str | None = None, node_id: str | None = None
) -> dict[str, Any]:
    return agent_enroll.enroll(
        agent_port,
        "127.0.0.1",
        listener.port,
        node_id or info["node_id"],
        code or info["code"],
        pin if pin is not None else info["pin"],
        info["ca_fingerprint"],
        str(state_dir),
    )


def refusal(listener: EnrollmentListener, info: dict[str, Any], tmp_path: Path, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(agent_enroll.EnrollError) as caught:
        agent_enrolls(listener, info, tmp_path / "state", **kwargs)
    return caught.value.code, caught.value.reason


def enroll_denials() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="device.enroll", decision="deny").order_by("seq"))


def test_an_agent_enrolls_and_gets_a_certificate_that_verifies(listener: EnrollmentListener, tmp_path: Path, client: Any) -> None:
    info = ticket("sensor-1", device_type="thermostat")
    body = agent_enrolls(listener, info, tmp_path / "state")

    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("key.pem", "cert.pem", "ca.pem", "hub.json"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    cert = x509.load_pem_x509_certificate((state / "cert.pem").read_bytes())
    ca_pem = client.get("/pki/ca.pem").content
    store = verification.Store(x509.load_pem_x509_certificates(ca_pem))
    verified = verification.PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
    assert x509.UniformResourceIdentifier("urn:meshhub:node:sensor-1") in verified.subjects
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)

    device = Device.objects.get(node_id="sensor-1")
    assert (device.status, device.device_type) == (DeviceStatus.PROVISIONED, "thermostat")
    row = Certificate.objects.get(device=device)
    assert row.serial == format(cert.serial_number, "x") and row.status == "active"
    assert json.loads((state / "hub.json").read_text())["mesh_port"] == body["mesh_port"]
    assert Enrollment.objects.get(node_id="sensor-1").status == "used"
    assert AuditEvent.objects.filter(action="device.enroll", decision="allow", target_id="sensor-1").exists()


def test_no_private_key_material_is_stored_but_the_hubs_own_encrypted_keys(listener: EnrollmentListener, tmp_path: Path) -> None:
    info = ticket("sensor-1", with_pin=True)
    agent_enrolls(listener, info, tmp_path / "state")
    device_key = (tmp_path / "state" / "key.pem").read_text()
    assert "PRIVATE KEY" in device_key
    from django.db import connection

    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                text = " ".join(str(v) for v in row)
                assert device_key.strip().splitlines()[1] not in text, f"device key material in {table}"
                assert info["code"] not in text and info["code"].replace("-", "") not in text, f"enrollment code in {table}"
                for line in text.split("-----BEGIN ")[1:]:
                    assert line.startswith(("CERTIFICATE", "X509 CRL", "ENCRYPTED PRIVATE KEY")), f"{table}: {line[:30]}"
    assert all("ENCRYPTED PRIVATE KEY" in key.key_pem for key in [*HubKey.objects.all(), *SigningKey.objects.all()])


def test_the_ca_key_cannot_be_loaded_without_the_passphrase() -> None:
    from cryptography.hazmat.primitives import serialization

    ca = identity.active_ca()
    with pytest.raises(TypeError, match="encrypted"):
        serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(ca.key_pem.encode(), password=b"not the passphrase")
    assert isinstance(serialization.load_pem_private_key(ca.key_pem.encode(), password=identity.passphrase()), ec.EllipticCurvePrivateKey)


def test_three_wrong_codes_lock_the_enrollment(listener: EnrollmentListener, tmp_path: Path) -> None:
    info = ticket("sensor-1")
    wrong = "ZZZZ-ZZZZ-ZZZZ"
    assert refusal(listener, info, tmp_path, code=wrong) == ("bad_code", "wrong enrollment code (2 attempts left)")
    assert refusal(listener, info, tmp_path, code=wrong) == ("bad_code", "wrong enrollment code (1 attempt left)")
    assert refusal(listener, info, tmp_path, code=wrong) == ("locked", "wrong enrollment code; enrollment for 'sensor-1' is now locked after 3 failed attempts")
    assert refusal(listener, info, tmp_path) == ("locked", "enrollment for 'sensor-1' is locked after 3 failed attempts; create a new code")
    assert not Device.objects.exists()
    denials = enroll_denials()
    assert len(denials) == 4
    dump = json.dumps([[d.reason, d.details, d.actor_id] for d in denials])
    assert info["code"] not in dump and wrong not in dump, "codes never reach the audit log"


def test_an_expired_code_is_refused(listener: EnrollmentListener, tmp_path: Path) -> None:
    info = ticket("sensor-1")
    Enrollment.objects.filter(node_id="sensor-1").update(expires_at=timezone.now() - timedelta(seconds=1))
    code, reason = refusal(listener, info, tmp_path)
    assert code == "expired"
    assert reason.startswith("enrollment code for 'sensor-1' expired at ")


def test_a_used_code_cannot_be_used_again(listener: EnrollmentListener, tmp_path: Path) -> None:
    info = ticket("sensor-1")
    agent_enrolls(listener, info, tmp_path / "first")
    assert refusal(listener, info, tmp_path) == ("code_used", "the enrollment code for 'sensor-1' was already used; create a new one")


def test_a_wrong_pin_is_refused(listener: EnrollmentListener, tmp_path: Path) -> None:
    info = ticket("sensor-1", with_pin=True)
    wrong_pin = "000000" if info["pin"] != "000000" else "111111"
    assert refusal(listener, info, tmp_path, pin=wrong_pin) == ("bad_pin", "wrong PIN (2 attempts left)")
    agent_enrolls(listener, info, tmp_path / "state")  # the right PIN still works


def test_a_csr_for_another_node_is_refused(listener: EnrollmentListener) -> None:
    ticket("sensor-1")
    _, csr = make_csr("sensor-2")
    answer = send_raw(listener.port, enroll_frame({"node_id": "sensor-1", "code": "AAAA-AAAA-AAAA", "csr": csr}))
    assert answer["type"] == "error"
    assert answer["body"] == {
        "code": "cn_mismatch",
        "reason": "csr common name 'sensor-2' does not match the node id 'sensor-1' being enrolled",
        "ref": "test-1",
    }
    assert Enrollment.objects.get(node_id="sensor-1").failed_attempts == 0


@pytest.mark.parametrize(
    ("csr_kind", "code", "reason_start"),
    [
        ("tampered", "bad_csr_signature", "csr signature does not verify"),
        ("p384", "bad_key", "csr key must be EC P-256 (secp256r1), got secp384r1"),
        ("garbage", "bad_csr", "csr is not a valid PEM certificate request"),
    ],
)
def test_bad_csrs_are_refused(listener: EnrollmentListener, csr_kind: str, code: str, reason_start: str) -> None:
    info = ticket("sensor-1")
    csr = {
        "tampered": lambda: tampered_csr("sensor-1"),
        "p384": lambda: make_csr("sensor-1", ec.generate_private_key(ec.SECP384R1()))[1],
        "garbage": lambda: "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
    }[csr_kind]()
    answer = send_raw(listener.port, enroll_frame({"node_id": "sensor-1", "code": info["code"], "csr": csr}))
    assert answer["body"]["code"] == code
    assert answer["body"]["reason"].startswith(reason_start)
    assert not Device.objects.exists()
    assert enroll_denials()[-1].details["code"] == code


def test_malformed_json_is_refused(listener: EnrollmentListener) -> None:
    payload = b'{"v": 1, "type": "enroll", "body": {'
    answer = send_raw(listener.port, struct.pack(">I", len(payload)) + payload)
    assert answer["body"]["code"] == "bad_json"
    assert enroll_denials()[-1].reason.startswith("frame is not UTF-8 JSON")


def test_an_oversized_length_prefix_is_refused_without_reading_it(listener: EnrollmentListener) -> None:
    answer = send_raw(listener.port, struct.pack(">I", 50_000_000))
    assert answer["body"] == {"code": "frame_too_large", "reason": "frame of 50000000 bytes exceeds the 16384-byte limit", "ref": None}


def test_a_client_that_never_finishes_its_frame_is_closed(listener: EnrollmentListener) -> None:
    with raw_tls(listener.port) as sock:
        sock.sendall(struct.pack(">I", 100) + b'{"v": 1')
        answer = read_answer(sock)  # arrives once the read timeout (1 s here) passes
        assert answer["body"]["code"] == "timeout"
        assert sock.recv(1) == b""
    assert enroll_denials()[-1].details["code"] == "timeout"


def test_a_wrong_fingerprint_makes_the_agent_refuse_the_hub(listener: EnrollmentListener, tmp_path: Path) -> None:
    info = ticket("sensor-1")
    bad = dict(info, ca_fingerprint="sha256:" + "ab" * 32)
    with pytest.raises(agent_port.PinError, match="hub CA fingerprint mismatch"):
        agent_enrolls(listener, bad, tmp_path / "state")
    assert not (tmp_path / "state").exists()
    # Nothing was sent: the code is still good.
    assert Enrollment.objects.get(node_id="sensor-1").failed_attempts == 0
    agent_enrolls(listener, info, tmp_path / "state")


def test_attempts_are_rate_limited_per_source_address(settings: Any) -> None:
    settings.ENROLL_ATTEMPTS_PER_MINUTE = 2
    with running_enrollment_listener() as listener:
        frame = enroll_frame({"code": "x", "csr": "x"})
        assert send_raw(listener.port, frame)["body"]["code"] == "bad_csr"
        assert send_raw(listener.port, frame)["body"]["code"] == "bad_csr"
        limited = send_raw(listener.port, frame)
    assert limited["body"] == {"code": "rate_limited", "reason": "more than 2 enrollment attempts a minute from 127.0.0.1", "ref": None}


def test_the_agent_cli_enrolls_and_reports_refusals(listener: EnrollmentListener, tmp_path: Path) -> None:
    out = tmp_path / "ticket.json"
    with open(out, "w") as handle:
        call_command("createenrollment", "--node-id", "relay-1", "--device-type", "relay", "--pin", "--json", stdout=handle)
    info = json.loads(out.read_text())
    assert set(info) >= {"node_id", "code", "pin", "ca_fingerprint", "enroll_host", "enroll_port", "mesh_host", "mesh_port", "expires_at"}
    argv = [sys.executable, "-m", "firmware.agent", "enroll", "--host", "127.0.0.1", "--port", str(listener.port), "--node-id", "relay-1", "--code", info["code"], "--pin", info["pin"], "--fingerprint", info["ca_fingerprint"], "--state-dir", str(tmp_path / "relay")]  # fmt: skip
    ok = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert ok.returncode == 0, ok.stderr
    assert "enrolled as relay-1" in ok.stdout
    again = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert again.returncode == 2
    assert "enrollment refused: code_used" in again.stderr


def test_revocation_lists_the_serial_in_the_crl_and_the_old_code_stays_dead(listener: EnrollmentListener, tmp_path: Path, admin_api: Any, client: Any) -> None:
    info = ticket("sensor-1")
    agent_enrolls(listener, info, tmp_path / "state")
    serial = Certificate.objects.get(device__node_id="sensor-1").serial

    response = admin_api.post("/api/v1/devices/sensor-1/revoke/", {"reason": "stolen from the shed"}, format="json")
    assert response.status_code == 200, response.content
    crl = x509.load_pem_x509_crl(client.get("/pki/crl.pem").content)
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    ca_cert = x509.load_pem_x509_certificate(CertificateAuthority.objects.get(active=True).cert_pem.encode())
    assert crl.is_signature_valid(ca_cert.public_key())
    assert Device.objects.get(node_id="sensor-1").status == DeviceStatus.REVOKED

    assert refusal(listener, info, tmp_path)[0] == "code_used"
    # An operator may let the device back in with a new code: same node_id, same history.
    fresh = ticket("sensor-1")
    agent_enrolls(listener, fresh, tmp_path / "again")
    assert Certificate.objects.filter(device__node_id="sensor-1").count() == 2
    assert Device.objects.get(node_id="sensor-1").status == DeviceStatus.PROVISIONED


def test_a_device_with_an_active_certificate_cannot_get_a_new_code(listener: EnrollmentListener, tmp_path: Path) -> None:
    agent_enrolls(listener, ticket("sensor-1"), tmp_path / "state")
    with pytest.raises(identity.IdentityError, match="holds an active certificate"):
        ticket("sensor-1")
    assert AuditEvent.objects.filter(action="enrollment.create", decision="deny", target_id="sensor-1").exists()
