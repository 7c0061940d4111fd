"""A revocation's kind is set by the operation, never read from the reason people type.

The hole this closes: the gateway's sweep used to compare the free-text revocation reason
with "provision.reset" / "factory_reset", so an operator who revoked a device and typed
`factory_reset` as the reason sent it a signed wipe, skipping the two-step confirmation.
Every door (API, pages, admin, management command) is driven against a real agent over
real mTLS; the device must be thrown out and keep its identity files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from devices import delivery, identity
from devices.models import Certificate, Device, RevocationKind
from tests.mesh_helpers import wait_for
from tests.test_gateway import RunningAgent, enroll_device, listeners  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def root_api(root: Any) -> APIClient:
    """The same superuser as root_web, through a token with every scope."""
    from conftest import make_token_client

    return make_token_client(root, ["read-status", "command", "reset", "ota", "admin"])[0]


TYPED_REASON = "factory_reset"  # what mallory-the-careless-operator types as the reason


def _api_device(admin_api: APIClient, root_web: Client, cert: Certificate) -> None:
    assert admin_api.post("/api/v1/devices/sensor-1/revoke/", {"reason": TYPED_REASON}, format="json").status_code == 200


def _api_certificate(admin_api: APIClient, root_web: Client, cert: Certificate) -> None:
    assert admin_api.post(f"/api/v1/certificates/{cert.serial}/revoke/", {"reason": TYPED_REASON}, format="json").status_code == 200


def _page_device(admin_api: APIClient, root_web: Client, cert: Certificate) -> None:
    assert root_web.post("/devices/sensor-1/revoke/", {"reason": TYPED_REASON}).status_code == 302


def _page_certificate(admin_api: APIClient, root_web: Client, cert: Certificate) -> None:
    assert root_web.post(f"/certificates/{cert.serial}/revoke/", {"reason": TYPED_REASON}).status_code == 302


def _admin_device(admin_api: APIClient, root_web: Client, cert: Certificate) -> None:
    device = Device.objects.get(node_id="sensor-1")
    url = reverse("admin:devices_device_changelist")
    answer = root_web.post(url, {"action": "revoke_devices", "_selected_action": [device.pk], "apply": "Revoke", "reason": TYPED_REASON})
    assert answer.status_code == 302


def _admin_certificate(admin_api: APIClient, root_web: Client, cert: Certificate) -> None:
    url = reverse("admin:devices_certificate_changelist")
    answer = root_web.post(url, {"action": "revoke_certificates", "_selected_action": [cert.pk], "apply": "Revoke", "reason": TYPED_REASON})
    assert answer.status_code == 302


def _command(admin_api: APIClient, root_web: Client, cert: Certificate) -> None:
    call_command("revokedevice", "sensor-1", "--reason", TYPED_REASON)


DOORS: dict[str, Callable[[APIClient, Client, Certificate], None]] = {
    "api-device": _api_device,
    "api-certificate": _api_certificate,
    "page-device": _page_device,
    "page-certificate": _page_certificate,
    "admin-device": _admin_device,
    "admin-certificate": _admin_certificate,
    "revokedevice-command": _command,
}


@pytest.mark.parametrize("door", list(DOORS))
def test_it_revokes_without_a_wipe_whatever_reason_is_typed(
    door: str,
    listeners: tuple[Any, Any],  # noqa: F811
    tmp_path: Path,
    root_api: APIClient,
    root_web: Client,
) -> None:
    state_dir = enroll_device(listeners, "sensor-1", tmp_path / "sensor-1")
    cert = Certificate.objects.get(device__node_id="sensor-1")
    with RunningAgent(state_dir) as agent:
        wait_for(lambda: agent.acked_reports >= 1)
        DOORS[door](root_api, root_web, cert)
        cert.refresh_from_db()
        assert (cert.status, cert.revocation_kind, cert.revocation_reason) == ("revoked", RevocationKind.OPERATOR, TYPED_REASON)
        # What the gateway's 1 s sweep decides from: no reset for this certificate.
        assert delivery.inactive_serials([cert.serial]) == {cert.serial: ""}
        # The device is thrown out and tries again: its retry is refused at the handshake.
        wait_for(lambda: AuditEvent.objects.filter(action="mesh.handshake", decision="deny", reason__contains="revoked").exists(), timeout_s=30)
        assert agent.was_reset is None, "an operator's revocation is never a wipe"
    assert (state_dir / "cert.pem").exists() and (state_dir / "key.pem").exists(), "the device keeps its identity"


def test_a_confirmed_factory_reset_still_wipes_the_device(listeners: tuple[Any, Any], tmp_path: Path, admin_api: APIClient) -> None:  # noqa: F811
    state_dir = enroll_device(listeners, "sensor-1", tmp_path / "sensor-1")
    runner = RunningAgent(state_dir)
    with runner as agent:
        wait_for(lambda: agent.acked_reports >= 1)
        token = admin_api.post("/api/v1/devices/sensor-1/factory-reset/").json()["token"]
        assert admin_api.post("/api/v1/devices/sensor-1/factory-reset/confirm/", {"token": token}, format="json").status_code == 200
        wait_for(lambda: agent.was_reset == "factory_reset")
        runner.thread.join(15)
    cert = Certificate.objects.get(device__node_id="sensor-1")
    assert (cert.revocation_kind, cert.revocation_reason) == (RevocationKind.FACTORY_RESET, "factory_reset")
    assert not (state_dir / "cert.pem").exists() and not (state_dir / "key.pem").exists()


def test_each_operation_names_its_own_kind() -> None:
    """Renewal, cleanup and resets set their kinds; the sweep hears a reset only from a reset."""
    from tests.factories import thermostat
    from tests.test_admin import enrolled

    enrolled("sensor-1")
    identity.provision_reset(Actor("user", "alice"), "sensor-1")
    reset = Certificate.objects.get(device__node_id="sensor-1")
    assert reset.revocation_kind == RevocationKind.PROVISION_RESET
    assert delivery.inactive_serials([reset.serial]) == {reset.serial: "provision.reset"}

    enrolled("sensor-2")
    unused = Certificate.objects.get(device__node_id="sensor-2")
    Certificate.objects.filter(pk=unused.pk).update(issued_at=unused.issued_at.replace(year=unused.issued_at.year - 1))
    identity.cleanup_provisioning()
    unused.refresh_from_db()
    assert (unused.status, unused.revocation_kind) == ("revoked", RevocationKind.UNUSED)
    assert delivery.inactive_serials([unused.serial]) == {unused.serial: ""}
    thermostat("sensor-3")  # a device without certificates: nothing to decide
    assert delivery.inactive_serials(["no-such-serial"]) == {"no-such-serial": ""}
