"""Identity operations through the API and commands: enrollments, revocation, resets,
renewal, cleanup, and the messages that tell gateways to act."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from cryptography import x509
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from devices import identity, pki, services
from devices.models import Certificate, CertificateStatus, Command, CommandStatus, Device, DeviceStatus, Enrollment, FactoryResetRequest, TelemetrySample
from tests.factories import thermostat
from tests.mesh_helpers import make_csr

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")


def provisioned(node_id: str = "sensor-1") -> tuple[Device, Certificate]:
    """A thermostat that enrolled through the real service (CSR → certificate)."""
    ticket = identity.create_enrollment(SYSTEM, node_id)
    _, csr = make_csr(node_id)
    result = identity.complete_enrollment(ticket.code, None, csr, "127.0.0.1", node_id)
    device = thermostat(node_id)  # adds the thermostat capabilities to the enrolled row
    return device, result.certificate


def test_admins_create_enrollments_through_the_api(admin_api: APIClient, alice_api: APIClient) -> None:
    response = admin_api.post("/api/v1/enrollments/", {"node_id": "relay-7", "device_type": "relay", "pin": True}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["node_id"] == "relay-7" and len(body["pin"]) == 6
    assert body["ca_fingerprint"] == identity.active_ca().fingerprint
    assert body["uri"].startswith("meshhub://enroll?host=")
    assert body["qr_svg"].startswith("<svg")
    listed = admin_api.get("/api/v1/enrollments/").json()["results"]
    assert listed[0]["node_id"] == "relay-7" and "code" not in listed[0] and listed[0]["has_pin"] is True
    assert alice_api.post("/api/v1/enrollments/", {"node_id": "relay-8"}, format="json").status_code == 403


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"node_id": "Not A Node"}, "node_id"), ({"node_id": "relay-1", "ttl_s": 5}, "ttl_s"), ({"node_id": "relay-1", "colour": "red"}, "colour")],
)
def test_bad_enrollment_requests_are_refused(admin_api: APIClient, payload: dict[str, Any], field: str) -> None:
    response = admin_api.post("/api/v1/enrollments/", payload, format="json")
    assert response.status_code == 400
    assert field in str(response.json())
    assert not Enrollment.objects.exists()


def test_codes_are_human_typable_with_sixty_bits() -> None:
    code = identity.new_code()
    raw = code.replace("-", "")
    assert len(raw) == 12 and set(raw) <= set(identity.CODE_ALPHABET) and len(identity.CODE_ALPHABET) == 32  # 12 symbols x 5 bits
    assert identity.normalize_code(code.lower().replace("-", " ")) == raw
    assert identity.normalize_code("o1l0-IIII-0000") == "0110111110000"[:4] + "1111" + "0000"


def test_enrollment_code_and_pin_are_stored_as_pbkdf2_hashes() -> None:
    ticket = identity.create_enrollment(SYSTEM, "sensor-1", with_pin=True)
    row = Enrollment.objects.get(node_id="sensor-1")
    assert row.code_hash.startswith("pbkdf2_sha256$") and row.pin_hash.startswith("pbkdf2_sha256$")
    assert ticket.code not in row.code_hash and ticket.pin not in row.pin_hash


def receive(channel: str) -> dict[str, Any]:
    layer = get_channel_layer()

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(layer.receive(channel), 10)  # a missing message fails, not hangs

    return async_to_sync(bounded)()


def test_revocation_tells_the_device_session_and_every_gateway(django_capture_on_commit_callbacks: Any) -> None:
    _, cert = provisioned("sensor-1")
    layer = get_channel_layer()
    node_channel = async_to_sync(layer.new_channel)()
    gateway_channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("node.sensor-1", node_channel)
    async_to_sync(layer.group_add)(identity.GATEWAYS_GROUP, gateway_channel)
    with django_capture_on_commit_callbacks(execute=True):
        identity.revoke_device(Actor("user", "alice"), "sensor-1", "lost")
    assert receive(node_channel) == {"type": "session.revoke", "reason": "lost", "serials": [cert.serial]}
    assert receive(gateway_channel) == {"type": "pki.crl_changed"}


def test_revokedevice_command_and_certificate_revocation(admin_api: APIClient) -> None:
    provisioned("sensor-1")
    out = StringIO()
    call_command("revokedevice", "sensor-1", "--reason", "decommissioned", stdout=out)
    assert "revoked sensor-1" in out.getvalue()
    assert Certificate.objects.get(device__node_id="sensor-1").status == CertificateStatus.REVOKED
    with pytest.raises(CommandError, match="no device with node_id 'ghost'"):
        call_command("revokedevice", "ghost", "--reason", "x")
    with pytest.raises(CommandError):
        call_command("revokedevice", "sensor-1")  # --reason is required

    _, second = provisioned("sensor-2")
    response = admin_api.post(f"/api/v1/certificates/{second.serial}/revoke/", {"reason": "key leaked"}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    again = admin_api.post(f"/api/v1/certificates/{second.serial}/revoke/", {"reason": "again"}, format="json")
    assert again.status_code == 400 and "already revoked" in again.json()["reason"]
    assert admin_api.post(f"/api/v1/certificates/{second.serial}/revoke/", {}, format="json").status_code == 400


def test_provision_reset_keeps_history_and_allows_re_enrollment(admin_api: APIClient, bob_api: APIClient) -> None:
    device, cert = provisioned("sensor-1")
    services.set_desired(Actor("user", "alice"), "sensor-1", {"setpoint": 22})
    TelemetrySample.objects.create(device=device, capability="temperature", ts=timezone.now(), value=20.5)
    assert bob_api.post("/api/v1/devices/sensor-1/provision-reset/").status_code == 403

    response = admin_api.post("/api/v1/devices/sensor-1/provision-reset/")
    assert response.status_code == 200, response.content
    device.refresh_from_db()
    assert (device.status, device.desired, device.online) == (DeviceStatus.UNPROVISIONED, {}, False)
    assert Certificate.objects.get(pk=cert.pk).status == CertificateStatus.REVOKED
    assert set(Command.objects.filter(device=device).values_list("status", flat=True)) == {CommandStatus.REJECTED}
    assert TelemetrySample.objects.filter(device=device).count() == 1

    _, csr = make_csr("sensor-1")
    again = identity.create_enrollment(SYSTEM, "sensor-1")
    identity.complete_enrollment(again.code, None, csr, "127.0.0.1", "sensor-1")
    device.refresh_from_db()
    assert device.status == DeviceStatus.PROVISIONED and device.pk == Device.objects.get(node_id="sensor-1").pk
    assert TelemetrySample.objects.filter(device=device).count() == 1


def test_factory_reset_needs_a_fresh_confirmation_token(admin_api: APIClient) -> None:
    provisioned("sensor-1")
    first = admin_api.post("/api/v1/devices/sensor-1/factory-reset/")
    assert first.status_code == 200
    token = first.json()["token"]

    wrong = admin_api.post("/api/v1/devices/sensor-1/factory-reset/confirm/", {"token": "guess"}, format="json")
    assert wrong.status_code == 400
    assert wrong.json() == {"field": "token", "reason": "invalid confirmation token for this device"}

    FactoryResetRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    late = admin_api.post("/api/v1/devices/sensor-1/factory-reset/confirm/", {"token": token}, format="json")
    assert late.status_code == 400 and "expired" in late.json()["reason"]
    assert Device.objects.get(node_id="sensor-1").status == DeviceStatus.PROVISIONED

    fresh = admin_api.post("/api/v1/devices/sensor-1/factory-reset/").json()["token"]
    done = admin_api.post("/api/v1/devices/sensor-1/factory-reset/confirm/", {"token": fresh}, format="json")
    assert done.status_code == 200, done.content
    assert done.json()["status"] == "unprovisioned"
    reused = admin_api.post("/api/v1/devices/sensor-1/factory-reset/confirm/", {"token": fresh}, format="json")
    assert reused.status_code == 400
    decisions = list(AuditEvent.objects.filter(action="device.factory_reset.confirm").order_by("seq").values_list("decision", flat=True))
    assert decisions == ["deny", "deny", "allow", "deny"]


def test_renewal_supersedes_the_old_certificate_once_confirmed() -> None:
    _, old = provisioned("sensor-1")
    _, csr = make_csr("sensor-1")
    new = identity.renew_certificate(Actor("device", "sensor-1"), "sensor-1", csr)
    assert new.replaces == old and new.status == CertificateStatus.ACTIVE
    assert Certificate.objects.get(pk=old.pk).status == CertificateStatus.ACTIVE, "old stays valid until the device confirms"
    identity.confirm_renewal(Actor("device", "sensor-1"), new)
    old.refresh_from_db()
    assert old.status == CertificateStatus.SUPERSEDED
    crl = x509.load_pem_x509_crl(identity.current_crl_pem().encode())
    assert crl.get_revoked_certificate_by_serial_number(int(old.serial, 16)) is not None
    assert crl.get_revoked_certificate_by_serial_number(int(new.serial, 16)) is None
    _, other = make_csr("sensor-2")
    with pytest.raises(identity.IdentityError, match="does not match node id"):
        identity.renew_certificate(Actor("device", "sensor-1"), "sensor-1", other)


def test_expiring_certificates_are_listed() -> None:
    _, cert = provisioned("sensor-1")
    assert identity.certificates_expiring() == []
    Certificate.objects.filter(pk=cert.pk).update(not_after=timezone.now() + timedelta(days=10))
    assert [c.pk for c in identity.certificates_expiring()] == [cert.pk]


def test_cleanup_expires_codes_and_revokes_certificates_never_used() -> None:
    identity.create_enrollment(SYSTEM, "sensor-9")
    Enrollment.objects.filter(node_id="sensor-9").update(expires_at=timezone.now() - timedelta(seconds=1))
    _, unused = provisioned("sensor-1")
    _, used = provisioned("sensor-2")
    Certificate.objects.filter(pk__in=[unused.pk, used.pk]).update(issued_at=timezone.now() - timedelta(days=30))
    Certificate.objects.filter(pk=used.pk).update(first_used_at=timezone.now())
    assert identity.cleanup_provisioning() == {"enrollments_expired": 1, "unused_certs_revoked": 1, "certs_expired": 0}
    assert Certificate.objects.get(pk=unused.pk).status == CertificateStatus.REVOKED
    assert Certificate.objects.get(pk=used.pk).status == CertificateStatus.ACTIVE


def test_ca_rotation_keeps_old_devices_trusted_until_retired() -> None:
    _, old_cert = provisioned("sensor-1")
    old_ca = identity.active_ca()
    new_ca = identity.rotate_ca(SYSTEM)
    identity.ensure_hub_identity()
    _, new_cert = provisioned("sensor-2")
    assert new_cert.ca == new_ca and old_cert.ca == old_ca
    bundle = identity.write_pki_files().trust_bundle.read_text()
    assert old_ca.cert_pem in bundle and new_ca.cert_pem in bundle
    with pytest.raises(identity.IdentityError, match="rotate first"):
        identity.retire_ca(SYSTEM, new_ca)
    identity.retire_ca(SYSTEM, old_ca)
    files = identity.write_pki_files()
    assert old_ca.cert_pem not in files.trust_bundle.read_text()
    server = x509.load_pem_x509_certificates(files.server_chain.read_bytes())
    assert server[1].fingerprint(pki.hashes.SHA256()).hex() == new_ca.fingerprint.removeprefix("sha256:")


def test_pki_command_reports_the_hub_identity() -> None:
    out = StringIO()
    call_command("pki", "init", stdout=out)
    text = out.getvalue()
    assert identity.active_ca().fingerprint in text
    assert "key hub_signing: private half on this hub" in text


def test_a_changed_passphrase_gives_a_clear_error_not_a_key(settings: Any) -> None:
    identity.ensure_hub_identity()
    settings.CA_PASSPHRASE = "not-the-one"
    with pytest.raises(identity.IdentityError, match="cannot decrypt the key of CA sha256:"):
        identity.ca_material(identity.active_ca())
    with pytest.raises(CommandError, match="MESHHUB_CA_PASSPHRASE"):
        call_command("runhub", "--no-worker", "--port", "0")


def test_a_listener_bound_to_another_port_than_devices_are_told_is_named_at_start(settings: Any, caplog: Any) -> None:
    settings.ENROLL_PORT, settings.MESH_PORT = 8884, 8883
    assert identity.warn_if_devices_dial_elsewhere(8884, 8883) == []
    warnings = identity.warn_if_devices_dial_elsewhere(8884, 9883)
    assert warnings == ["the mesh listener binds port 9883 but devices are told 8883 (MESHHUB_MESH_PORT): set it to 9883 unless a forwarder maps 8883 to 9883"]
    assert warnings[0] in caplog.text
