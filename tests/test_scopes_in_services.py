"""Scopes are checked inside the services, against the Actor each door builds: the API,
the pages, the admin and any later caller (rules, the assistant) share one decision and
one audit shape. Django's model permissions only decide what the admin shows."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group as Role
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import Actor, ScopeDenied
from conftest import make_token_client
from devices import identity, services
from devices.models import Certificate, Command, Device
from tests.test_admin import enrolled

pytestmark = pytest.mark.django_db

SHAPE = ("action", "decision", "scope", "target_type", "target_id", "reason")


@pytest.fixture
def carol(django_user_model: Any) -> Any:
    """A viewer who is also staff with every Django permission on devices and
    certificates: before, the admin let her revoke and reset on those alone."""
    user = django_user_model.objects.create_user("carol", password="carol-Pass-123", is_staff=True)
    user.groups.add(Role.objects.get(name="viewer"))
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="devices", content_type__model__in=["device", "certificate"]))
    return user


def carol_web(carol: Any) -> Client:
    client = Client()
    client.force_login(carol)
    return client


def shape(event: AuditEvent) -> tuple[Any, ...]:
    return tuple(getattr(event, field) for field in SHAPE)


def denies(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, decision="deny").order_by("seq"))


def test_the_same_refusal_has_the_same_audit_shape_through_the_api_a_page_and_the_admin(carol: Any) -> None:
    cert = enrolled("sensor-1")
    api = make_token_client(carol, ["read-status"])[0]
    web = carol_web(carol)

    assert api.post("/api/v1/devices/sensor-1/revoke/", {"reason": "lost"}, format="json").status_code == 403
    assert web.post("/devices/sensor-1/revoke/", {"reason": "lost"}).status_code == 403
    device = Device.objects.get(node_id="sensor-1")
    answer = web.post(
        reverse("admin:devices_device_changelist"),
        {"action": "revoke_devices", "_selected_action": [device.pk], "apply": "Revoke", "reason": "lost"},
        follow=True,
    )
    assert "missing scope &#x27;reset&#x27;" in answer.content.decode()

    by_api, by_page, by_admin = denies("device.revoke")
    expected = ("device.revoke", "deny", "reset", "device", "sensor-1", "missing scope 'reset'")
    assert shape(by_api) == shape(by_page) == shape(by_admin) == expected
    assert (by_api.actor_type, by_api.actor_id.split("/")[-1]) == ("token", "carol")
    assert (by_page.actor_type, by_page.actor_id) == (by_admin.actor_type, by_admin.actor_id) == ("user", "carol")
    assert not AuditEvent.objects.filter(action__in=["api.device.revoke", "page.revoke"]).exists(), "the edges only translate"
    cert.refresh_from_db()
    assert cert.status == "active", "nothing was revoked by any door"


def test_resets_and_certificate_revocation_are_refused_alike_by_the_api_and_the_admin(carol: Any) -> None:
    cert = enrolled("sensor-1")
    api = make_token_client(carol, ["read-status"])[0]
    web = carol_web(carol)
    device = Device.objects.get(node_id="sensor-1")
    devices_url = reverse("admin:devices_device_changelist")

    assert api.post("/api/v1/devices/sensor-1/provision-reset/").status_code == 403
    web.post(devices_url, {"action": "provision_reset", "_selected_action": [device.pk], "apply": "Reset"})
    assert api.post("/api/v1/devices/sensor-1/factory-reset/").status_code == 403
    web.post(devices_url, {"action": "factory_reset", "_selected_action": [device.pk]})
    assert api.post(f"/api/v1/certificates/{cert.serial}/revoke/", {"reason": "lost"}, format="json").status_code == 403
    web.post(
        reverse("admin:devices_certificate_changelist"), {"action": "revoke_certificates", "_selected_action": [cert.pk], "apply": "Revoke", "reason": "x"}
    )

    for action in ("device.provision_reset", "device.factory_reset.request", "certificate.revoke"):
        by_api, by_admin = denies(action)
        assert shape(by_api) == shape(by_admin), action
        assert by_admin.reason == "missing scope 'reset'" and by_admin.actor_id == "carol"
    assert Device.objects.get(node_id="sensor-1").status == "provisioned"
    assert Certificate.objects.get(pk=cert.pk).status == "active"


def test_an_operator_with_view_permission_only_may_revoke_through_the_admin(django_user_model: Any) -> None:
    """The other direction: the role's scope, not a Django change permission, allows it."""
    cert = enrolled("sensor-1")
    dave = django_user_model.objects.create_user("dave", password="dave-Pass-123", is_staff=True)
    dave.groups.add(Role.objects.get(name="operator"))
    dave.user_permissions.add(Permission.objects.get(codename="view_device"))
    device = Device.objects.get(node_id="sensor-1")
    carol_web(dave).post(
        reverse("admin:devices_device_changelist"), {"action": "revoke_devices", "_selected_action": [device.pk], "apply": "Revoke", "reason": "stolen"}
    )
    cert.refresh_from_db()
    assert cert.status == "revoked"
    allow = AuditEvent.objects.get(action="device.revoke", decision="allow")
    assert (allow.actor_type, allow.actor_id, allow.reason) == ("user", "dave", "stolen")


def test_any_caller_that_states_its_scopes_gets_the_same_decision() -> None:
    """A rule or an assistant tool builds its Actor with its scopes and calls the service."""
    from tests.factories import thermostat

    thermostat("sensor-1")
    rule = Actor("rule", "7", frozenset({"read-status"}))
    with pytest.raises(ScopeDenied, match="missing scope 'command'"):
        services.send_command(rule, "sensor-1", "set", "setpoint", 21)
    with pytest.raises(ScopeDenied, match="missing scope 'reset'"):
        identity.provision_reset(rule, "sensor-1")
    assert not Command.objects.exists()
    (command_deny,) = denies("command.create")
    assert (command_deny.actor_type, command_deny.actor_id, command_deny.scope, command_deny.target_id) == ("rule", "7", "command", "sensor-1")
    allowed = services.send_command(Actor("rule", "7", frozenset({"command"})), "sensor-1", "set", "setpoint", 21)
    assert allowed.requested_by == "rule:7"


def test_device_token_and_rule_actors_without_stated_scopes_may_do_nothing() -> None:
    """Fail closed: only the hub itself (and a user whose door decided) acts without scopes."""
    from tests.factories import thermostat

    thermostat("sensor-1")
    for actor in (Actor("device", "sensor-1"), Actor("token", "k1/x"), Actor("rule", "3"), Actor("device", "sensor-1", frozenset({"report", "answer"}))):
        with pytest.raises(ScopeDenied):
            services.send_command(actor, "sensor-1", "set", "setpoint", 21)
    assert not Command.objects.exists()
    assert services.send_command(Actor.system("test"), "sensor-1", "set", "setpoint", 21).requested_by == "system:test"


def test_a_staff_viewer_cannot_mint_an_api_token_in_the_admin(carol: Any) -> None:
    from hub.models import ApiToken

    carol.user_permissions.add(*Permission.objects.filter(content_type__app_label="hub", content_type__model="apitoken"))
    answer = carol_web(carol).post(reverse("admin:hub_apitoken_add"), {"user": carol.pk, "name": "mine", "scopes": ["admin"]})
    assert answer.status_code == 403
    assert not ApiToken.objects.exists()
    deny = AuditEvent.objects.get(action="apitoken.create", decision="deny")
    assert (deny.actor_id, deny.scope, deny.reason) == ("carol", "admin", "missing scope 'admin'")


def test_a_staff_viewer_cannot_change_a_plc_bridge_in_the_admin(carol: Any) -> None:
    """Connection settings of a PLC bridge need scope admin from the roles, as the import does."""
    from industrial.models import ModbusBridge
    from industrial.tests.test_bridge import import_points

    bridge = import_points(5020, [{"capability": "speed", "register": "holding", "address": 10, "data_type": "u16"}])
    carol.user_permissions.add(*Permission.objects.filter(content_type__app_label="industrial"))
    url = reverse("admin:industrial_modbusbridge_change", args=[bridge.pk])
    answer = carol_web(carol).post(url, {"name": "Line 1", "host": "10.9.9.9", "port": 502, "unit_id": 1, "poll_interval_s": 1, "timeout_s": 1})
    assert answer.status_code == 403
    assert ModbusBridge.objects.get(pk=bridge.pk).host == "127.0.0.1"
    deny = AuditEvent.objects.get(action="modbus.bridge.change", decision="deny")
    assert (deny.actor_id, deny.scope, deny.target_id) == ("carol", "admin", str(bridge.pk))
