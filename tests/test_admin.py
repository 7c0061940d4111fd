"""The admin: every model is there, searchable, and the audit log cannot be edited through it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

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
