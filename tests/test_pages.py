"""The operator pages through Django's test client: sessions, roles, forms, audit.
(Browser tests drive the same pages in Chromium.)"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from audit.models import AuditEvent
from devices.models import Command, Device
from tests.factories import thermostat

pytestmark = pytest.mark.django_db

PAGES = ["/", "/devices/", "/devices/sensor-1/", "/audit/"]


def test_the_roles_exist_with_their_permissions() -> None:
    viewer, operator, admin = (Group.objects.get(name=n) for n in ("viewer", "operator", "admin"))
    assert viewer.permissions.filter(codename="view_device").exists() and not viewer.permissions.filter(codename="add_command").exists()
    assert operator.permissions.filter(codename="add_command").exists()
    assert admin.permissions.filter(codename="delete_device").exists()


def test_without_a_session_every_page_redirects_to_login() -> None:
    thermostat("sensor-1")
    for path in PAGES:
        answer = Client().get(path)
        assert answer.status_code == 302 and answer["Location"].startswith("/login/?next="), path
    assert Client().get("/login/").status_code == 200


def test_logging_in_through_the_form(alice: Any) -> None:
    alice.groups.add(Group.objects.get(name="operator"))
    client = Client()
    answer = client.post("/login/", {"username": "alice", "password": "alice-Pass-123"})
    assert answer.status_code == 302 and answer["Location"] == "/"
    assert b"Overview" in client.get("/").content
    bad = Client().post("/login/", {"username": "alice", "password": "wrong"})
    assert b"did not match" in bad.content


def test_pages_render_with_an_empty_database(root_web: Client) -> None:
    assert b"No devices yet" in root_web.get("/").content
    assert b"No devices yet" in root_web.get("/devices/").content
    assert root_web.get("/audit/").status_code == 200
    assert root_web.get("/devices/nobody/").status_code == 404


def test_the_device_list_searches_and_filters(bob_web: Client) -> None:
    thermostat("sensor-1")
    thermostat("sensor-2")
    Device.objects.filter(node_id="sensor-2").update(online=True)
    page = bob_web.get("/devices/", {"q": "sensor", "online": "yes"}).content.decode()
    assert "sensor-2" in page and "sensor-1" not in page
    assert "No device matches" in bob_web.get("/devices/", {"q": "nothing"}).content.decode()


def test_an_operator_sends_a_command_from_the_device_page(alice_web: Client) -> None:
    thermostat("sensor-1")
    page = alice_web.get("/devices/sensor-1/").content.decode()
    assert "Send a command" in page and "Revoke" not in page  # no certificate, nothing to revoke
    answer = alice_web.post("/devices/sensor-1/command/", {"action": "set", "capability": "setpoint", "value": "21.5"}, follow=True)
    assert answer.status_code == 200
    command = Command.objects.get()
    assert (command.capability, command.value, command.requested_by) == ("setpoint", 21.5, "user:alice")
    assert "Command set setpoint queued" in answer.content.decode()
    # A refused command is shown next to the form, with the reason, and nothing is sent.
    answer = alice_web.post("/devices/sensor-1/command/", {"action": "set", "capability": "setpoint", "value": "99"})
    assert answer.status_code == 400
    assert "value: " in answer.content.decode() and "35" in answer.content.decode()
    assert Command.objects.count() == 1


def test_a_viewer_sees_no_action_buttons_and_a_forged_post_is_refused_and_audited(bob_web: Client) -> None:
    thermostat("sensor-1")
    page = bob_web.get("/devices/sensor-1/").content.decode()
    assert "Send a command" not in page and "Revoke" not in page and '<button class="primary"' not in page
    answer = bob_web.post("/devices/sensor-1/command/", {"action": "set", "capability": "setpoint", "value": "20"})
    assert answer.status_code == 403
    assert not Command.objects.exists()
    denied = AuditEvent.objects.get(action="page.command", decision="deny")
    assert denied.actor_id == "bob" and denied.reason == "missing scope 'command'"
    assert bob_web.post("/devices/sensor-1/revoke/", {"reason": "x"}).status_code == 403
    assert bob_web.get("/audit/").status_code == 403


def test_an_admin_revokes_from_the_device_page(root_web: Client) -> None:
    from devices.models import Certificate
    from tests.test_identity_operations import provisioned

    device, _ = provisioned("sensor-1")
    assert "Revoke" in root_web.get("/devices/sensor-1/").content.decode()
    answer = root_web.post("/devices/sensor-1/revoke/", {"reason": "stolen"}, follow=True)
    assert "Revoked 1 certificate" in answer.content.decode()
    assert not Certificate.objects.filter(device=device, status="active").exists()


def test_a_tampered_audit_row_shows_as_a_broken_chain(root_web: Client) -> None:
    from audit.services import Actor, record

    for i in range(3):
        record(Actor("user", "alice"), "test.event", "allow", details={"i": i})
    assert 'data-chain="intact"' in root_web.get("/audit/").content.decode()
    victim = AuditEvent.objects.get(action="test.event", details__i=1)
    AuditEvent.objects.filter(pk=victim.pk).update(reason="edited behind the log's back")
    page = root_web.get("/audit/").content.decode()
    assert 'data-chain="broken"' in page and f"event {victim.pk}" in page
    filtered = root_web.get("/audit/", {"action": "test.", "decision": "allow"}).content.decode()
    assert filtered.count("<td>test.event</td>") == 3


def test_a_user_without_a_role_sees_no_page_and_each_refusal_is_audited(django_user_model: Any) -> None:
    """Signed in but in no role group: every page is a 403 that says how to get a role
    (the API and /ws/live/ refuse such a user too), and the audit log holds each refusal."""
    thermostat("sensor-1")
    nobody = django_user_model.objects.create_user("nobody", password="nobody-Pass-123")
    client = Client()
    client.force_login(nobody)
    pages = ["/", "/devices/", "/devices/sensor-1/", "/certificates/", "/groups/", "/industrial/", "/system/", "/enrollment/", "/audit/"]
    for path in pages:
        answer = client.get(path)
        assert answer.status_code == 403, path
        assert b"holds no role yet" in answer.content and b"sensor-1" not in answer.content, path
    refusals = AuditEvent.objects.filter(action="page.view", decision="deny", actor_id="nobody")
    assert sorted(refusals.values_list("target_id", flat=True)) == sorted(pages)
    assert set(refusals.values_list("reason", flat=True)) == {"missing scope 'read-status'"}


def test_a_nul_character_in_a_query_or_a_form_is_a_400_naming_it(root_web: Client) -> None:
    """PostgreSQL cannot store NUL: a search or a revocation reason carrying one was a 500
    there. Pages, admin and API refuse it before any view runs, naming the parameter."""
    thermostat("sensor-1")
    for path in ("/devices/?q=a%00b", "/certificates/?q=%00", "/industrial/?q=%00", "/audit/?actor=%00", "/admin/devices/device/?q=%00"):
        answer = root_web.get(path)
        assert answer.status_code == 400 and b"contains a NUL character" in answer.content, path
    answer = root_web.post("/devices/sensor-1/revoke/", {"reason": "lost\x00"})
    assert answer.status_code == 400 and answer.content.decode() == "form parameter 'reason' contains a NUL character"
    answer = root_web.get("/api/v1/devices/?search=%00")
    assert answer.status_code == 400 and answer.json() == {"field": "search", "reason": "query parameter 'search' contains a NUL character"}
    answer = root_web.post("/certificates/%00/revoke/", {"reason": "lost"})
    assert answer.status_code == 400 and answer.content.decode() == "the URL path contains a NUL character"
    assert root_web.get("/devices/?q=sensor").status_code == 200
