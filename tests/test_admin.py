"""The admin: every model is there, searchable, and the audit log cannot be edited through it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import Actor, record
from devices import services
from tests.factories import GroupFactory, thermostat

pytestmark = pytest.mark.django_db


@pytest.fixture
def root_client(django_user_model: Any) -> Client:
    user = django_user_model.objects.create_superuser("root", password="root-Pass-123")
    client = Client()
    client.force_login(user)
    return client


def test_every_model_has_a_working_admin_changelist(root_client: Client) -> None:
    device = thermostat("sensor-1")
    GroupFactory(name="upstairs").members.add(device)
    services.send_command(Actor("user", "alice"), "sensor-1", "set", "setpoint", 20)
    ours = {"hub", "audit", "devices", "ota", "automation", "industrial"}
    models = [m for m in admin.site._registry if m._meta.app_label in ours]
    assert {m.__name__ for m in models} >= {"Device", "Capability", "Group", "Command", "TelemetrySample", "ApiToken", "AuditEvent", "AuditChainHead"}
    for model in models:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        response = root_client.get(url, {"q": "sensor"} if admin.site._registry[model].search_fields else {})
        assert response.status_code == 200, (url, response.status_code)


def test_the_audit_log_is_read_only_in_the_admin(root_client: Client) -> None:
    event = record(Actor("user", "alice"), "x", "allow")
    change = reverse("admin:audit_auditevent_change", args=[event.pk])
    assert root_client.get(change).status_code == 200  # viewable
    assert root_client.post(change, {"decision": "deny"}).status_code == 403
    assert root_client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert root_client.post(reverse("admin:audit_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403


def test_node_id_and_status_are_read_only_on_an_existing_device(root_client: Client) -> None:
    device = thermostat("sensor-1")
    page = root_client.get(reverse("admin:devices_device_change", args=[device.pk])).content.decode()
    assert 'name="node_id"' not in page
    assert 'name="status"' not in page
    assert 'name="name"' in page


def test_admin_creates_an_api_token_and_shows_it_once(root_client: Client, django_user_model: Any) -> None:
    from hub.models import ApiToken

    response = root_client.post(
        reverse("admin:hub_apitoken_add"),
        {"user": django_user_model.objects.get(username="root").pk, "name": "backup script", "scopes": ["read-status"]},
        follow=True,
    )
    assert response.status_code == 200
    token = ApiToken.objects.get(name="backup script")
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"mh_{token.key}_" in m for m in shown)
    assert token.scopes == ["read-status"]


def enrolled(node_id: str) -> Any:
    from devices import identity
    from tests.mesh_helpers import make_csr

    ticket = identity.create_enrollment(Actor.system("test"), node_id)
    _, csr = make_csr(node_id)
    return identity.complete_enrollment(ticket.code, None, csr, "127.0.0.1", node_id).certificate


def test_admin_revokes_a_device_after_asking_for_a_reason(root_client: Client) -> None:
    from devices.models import Device

    cert = enrolled("sensor-1")
    url = reverse("admin:devices_device_changelist")
    device = Device.objects.get(node_id="sensor-1")
    ask = root_client.post(url, {"action": "revoke_devices", "_selected_action": [device.pk]})
    assert ask.status_code == 200
    assert b"Revoke devices" in ask.content and b'name="reason"' in ask.content
    cert.refresh_from_db()
    assert cert.status == "active", "nothing happens before confirmation"
    missing_reason = root_client.post(url, {"action": "revoke_devices", "_selected_action": [device.pk], "apply": "Revoke"})
    assert missing_reason.status_code == 200
    cert.refresh_from_db()
    assert cert.status == "active"
    done = root_client.post(url, {"action": "revoke_devices", "_selected_action": [device.pk], "apply": "Revoke", "reason": "lost"}, follow=True)
    assert done.status_code == 200
    cert.refresh_from_db()
    assert (cert.status, cert.revocation_reason) == ("revoked", "lost")
    event = AuditEvent.objects.get(action="device.revoke")
    assert (event.actor_type, event.actor_id, event.reason) == ("user", "root", "lost")


def test_admin_provisioning_reset_asks_first_then_resets_and_audits(root_client: Client) -> None:
    from devices.models import Device

    cert = enrolled("sensor-1")
    device = Device.objects.get(node_id="sensor-1")
    url = reverse("admin:devices_device_changelist")
    ask = root_client.post(url, {"action": "provision_reset", "_selected_action": [device.pk]})
    assert ask.status_code == 200 and b"Provisioning reset" in ask.content and b"sensor-1" in ask.content
    device.refresh_from_db()
    cert.refresh_from_db()
    assert (device.status, cert.status) == ("provisioned", "active"), "nothing happens before confirmation"
    done = root_client.post(url, {"action": "provision_reset", "_selected_action": [device.pk], "apply": "Reset"}, follow=True)
    assert done.status_code == 200 and "Reset: 1" in done.content.decode()
    device.refresh_from_db()
    cert.refresh_from_db()
    assert (device.status, cert.status) == ("unprovisioned", "revoked")
    event = AuditEvent.objects.get(action="device.provision_reset")
    assert (event.actor_type, event.actor_id, event.decision, event.target_id) == ("user", "root", "allow", "sensor-1")


def test_admin_factory_reset_is_two_steps_with_a_token(root_client: Client) -> None:
    import re

    from devices.models import Device

    enrolled("sensor-1")
    device = Device.objects.get(node_id="sensor-1")
    url = reverse("admin:devices_device_changelist")
    page = root_client.post(url, {"action": "factory_reset", "_selected_action": [device.pk]}).content.decode()
    token = re.search(rf'name="token_{device.pk}" value="([^"]+)"', page).group(1)
    forged = root_client.post(url, {"action": "factory_reset", "_selected_action": [device.pk], "apply": "1", f"token_{device.pk}": "forged"}, follow=True)
    assert "invalid confirmation token" in forged.content.decode()
    device.refresh_from_db()
    assert device.status == "provisioned"
    root_client.post(url, {"action": "factory_reset", "_selected_action": [device.pk], "apply": "1", f"token_{device.pk}": token}, follow=True)
    device.refresh_from_db()
    assert device.status == "unprovisioned"


def test_admin_creates_an_enrollment_and_shows_the_code_once(root_client: Client) -> None:
    from devices.models import Enrollment

    response = root_client.post(
        reverse("admin:devices_enrollment_add"), {"node_id": "relay-3", "device_type": "relay", "with_pin": "on", "ttl_s": 900}, follow=True
    )
    assert response.status_code == 200
    shown = " ".join(str(m) for m in response.context["messages"])
    assert "code <code>" in shown and "PIN" in shown and "<svg" in shown
    assert Enrollment.objects.get(node_id="relay-3").status == "open"
    enrolled("sensor-9")
    refused = root_client.post(reverse("admin:devices_enrollment_add"), {"node_id": "sensor-9", "device_type": "generic", "ttl_s": 900})
    assert refused.status_code == 200
    assert "holds an active certificate" in refused.content.decode()
