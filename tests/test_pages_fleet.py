"""The provisioning, groups, industrial and system pages through Django's test client:
roles, forms with inline errors, refusals audited. (tests/test_browser_* drive them live.)"""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import Actor
from devices import delivery, services, state
from devices.models import Command, Enrollment, Group
from hub.models import Heartbeat
from industrial import config
from tests.factories import dimmer, relay, thermostat
from tests.test_identity_operations import provisioned

pytestmark = pytest.mark.django_db

NEW_PAGES = ["/enrollment/", "/certificates/", "/groups/", "/industrial/", "/system/"]


def test_without_a_session_the_new_pages_redirect_to_login() -> None:
    for path in NEW_PAGES:
        answer = Client().get(path)
        assert answer.status_code == 302 and answer["Location"].startswith("/login/?next="), path


def test_every_new_page_renders_an_empty_state_on_an_empty_database(root_web: Client) -> None:
    texts = {
        "/enrollment/": "No enrollment code yet",
        "/certificates/": "No certificates yet",
        "/groups/": "No groups yet",
        "/industrial/": "No PLCs yet",
        "/system/": "No gateway has reported",
    }
    for path, text in texts.items():
        answer = root_web.get(path)
        assert answer.status_code == 200, path
        assert text in answer.content.decode(), path


def test_an_operator_creates_an_enrollment_code_shown_once_with_its_qr(alice_web: Client) -> None:
    answer = alice_web.post("/enrollment/", {"node_id": "greenhouse-3", "device_type": "sensor", "ttl_s": "3600", "pin": "on"})
    assert answer.status_code == 200
    page = answer.content.decode()
    assert answer["Cache-Control"] == "no-store"
    enrollment = Enrollment.objects.get(node_id="greenhouse-3")
    assert enrollment.status == "open" and enrollment.device_type == "sensor" and enrollment.pin_hash
    assert "<svg" in page and 'data-enrollment="waiting"' in page and 'data-node="greenhouse-3"' in page
    assert "python -m firmware.agent enroll" in page and "--node-id greenhouse-3" in page and "--pin " in page
    event = AuditEvent.objects.get(action="enrollment.create")
    assert (event.actor_id, event.decision, event.scope) == ("alice", "allow", "reset")
    # The list shows it (never the code) and it can be cancelled.
    listing = alice_web.get("/enrollment/").content.decode()
    assert "greenhouse-3" in listing and "Cancel" in listing
    answer = alice_web.post(f"/enrollment/{enrollment.pk}/cancel/", follow=True)
    assert "can no longer be used" in answer.content.decode()
    assert Enrollment.objects.get(pk=enrollment.pk).status == "cancelled"


def test_a_bad_enrollment_request_is_explained_next_to_the_form_and_creates_nothing(alice_web: Client) -> None:
    answer = alice_web.post("/enrollment/", {"node_id": "Not Valid!", "ttl_s": "900"})
    assert answer.status_code == 400 and "data-error" in answer.content.decode()
    answer = alice_web.post("/enrollment/", {"node_id": "sensor-9", "ttl_s": "12"})
    assert answer.status_code == 400 and "Choose how long" in answer.content.decode()
    provisioned("sensor-1")
    answer = alice_web.post("/enrollment/", {"node_id": "sensor-1", "ttl_s": "900"})
    assert answer.status_code == 400 and "holds an active certificate" in answer.content.decode()
    assert not Enrollment.objects.exclude(node_id="sensor-1").exists()


def test_a_viewer_cannot_see_or_create_enrollment_codes_and_is_audited(bob_web: Client) -> None:
    assert "Enrollment</a>" not in bob_web.get("/").content.decode()
    assert bob_web.get("/enrollment/").status_code == 403
    assert bob_web.post("/enrollment/", {"node_id": "evil-1", "ttl_s": "900"}).status_code == 403
    assert not Enrollment.objects.exists()
    denied = AuditEvent.objects.filter(actor_id="bob", decision="deny", action="page.enrollment.view")
    assert denied.count() == 2  # the page itself is provisioning information


def test_certificates_list_and_an_operator_revokes_one_with_a_reason(alice_web: Client, bob_web: Client) -> None:
    _, cert = provisioned("sensor-1")
    page = bob_web.get("/certificates/").content.decode()
    assert cert.serial[:10] in page and "Download CRL" in page and 'class="danger"' not in page
    assert bob_web.post(f"/certificates/{cert.serial}/revoke/", {"reason": "x"}).status_code == 403
    assert AuditEvent.objects.filter(action="page.certificate.revoke", decision="deny", actor_id="bob").exists()
    page = alice_web.get("/certificates/", {"q": "sensor"}).content.decode()
    assert 'class="danger"' in page
    answer = alice_web.post(f"/certificates/{cert.serial}/revoke/", {"reason": ""}, follow=True)
    assert "Give a reason" in answer.content.decode()
    answer = alice_web.post(f"/certificates/{cert.serial}/revoke/", {"reason": "left the building"}, follow=True)
    assert "Revoked certificate" in answer.content.decode()
    cert.refresh_from_db()
    assert cert.status == "revoked" and cert.revocation_reason == "left the building"
    assert "left the building" in alice_web.get("/certificates/", {"status": "revoked"}).content.decode()
    assert alice_web.get("/pki/crl.pem").status_code == 200


def test_a_group_command_reaches_every_member_that_accepts_it(alice_web: Client, bob_web: Client) -> None:
    greenhouse = Group.objects.create(name="greenhouse", description="all of it")
    greenhouse.members.add(thermostat("sensor-1"), thermostat("sensor-2"), relay("relay-1"))
    assert "greenhouse" in bob_web.get("/groups/").content.decode()
    page = bob_web.get(f"/groups/{greenhouse.pk}/").content.decode()
    assert "sensor-2" in page and "Send to all" not in page
    assert bob_web.post(f"/groups/{greenhouse.pk}/command/", {"action": "set", "capability": "setpoint", "value": "20"}).status_code == 403
    answer = alice_web.post(f"/groups/{greenhouse.pk}/command/", {"action": "set", "capability": "setpoint", "value": "21"})
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "Sent to 2 of 3 members" in page and "refused:" in page
    assert sorted(Command.objects.values_list("device__node_id", flat=True)) == ["sensor-1", "sensor-2"]
    assert page.count("data-command=") == 2
    # Nobody accepting is a 400 with every reason.
    answer = alice_web.post(f"/groups/{greenhouse.pk}/command/", {"action": "set", "capability": "setpoint", "value": "99"})
    assert answer.status_code == 400 and answer.content.decode().count("refused:") == 3


def test_the_industrial_pages_show_points_and_refuse_bad_writes_inline(alice_web: Client, bob_web: Client) -> None:
    document = {
        "bridges": [
            {
                "node_id": "plc-line-1",
                "name": "Line 1",
                "host": "127.0.0.1",
                "port": 1,
                "timeout_s": 0.2,
                "retries": 0,
                "points": [
                    {"capability": "level", "register": "holding", "address": 20, "data_type": "u16", "writable": True, "min": 0, "max": 100, "unit": "%"},
                    {"capability": "pressure", "register": "holding", "address": 30, "data_type": "u16"},
                ],
            }
        ]
    }
    config.import_document(Actor("user", "root"), document)
    listing = bob_web.get("/industrial/").content.decode()
    assert "plc-line-1" in listing and "127.0.0.1:1" in listing
    page = bob_web.get("/industrial/plc-line-1/").content.decode()
    assert 'data-capability="level"' in page and "Write</button>" not in page
    assert bob_web.post("/industrial/plc-line-1/write/", {"capability": "level", "value": "5"}).status_code == 403
    page = alice_web.get("/industrial/plc-line-1/").content.decode()
    assert page.count("Write</button>") == 1 and "read-only" in page
    answer = alice_web.post("/industrial/plc-line-1/write/", {"capability": "level", "value": "500"})
    assert answer.status_code == 400 and "data-error" in answer.content.decode()
    answer = alice_web.post("/industrial/plc-line-1/write/", {"capability": "pressure", "value": "5"})
    assert answer.status_code == 400
    assert not Command.objects.exists()
    answer = alice_web.post("/industrial/plc-line-1/write/", {"capability": "level", "value": "42"}, follow=True)
    assert answer.status_code == 200 and "Write level = 42 queued" in answer.content.decode()
    assert Command.objects.get().value == 42


def test_values_read_as_the_protocol_spells_them_zero_and_false_included(alice_web: Client) -> None:
    """A PLC's 0 and false, a relay's true: the page shows what the live script would put
    in the same cell (`0`, `false`, `true`), never Python's `False` or an empty `{}`."""
    document = {
        "bridges": [
            {
                "node_id": "plc-line-1",
                "host": "127.0.0.1",
                "port": 1,
                "points": [
                    {"capability": "level", "register": "holding", "address": 0, "data_type": "u16"},
                    {"capability": "pump", "register": "coil", "address": 0, "data_type": "bool", "writable": True},
                ],
            }
        ]
    }
    config.import_document(Actor("user", "root"), document)
    now = timezone.now()
    state.apply_reports([state.StateReport("plc-line-1", {"level": 0, "pump": False}, now)], now=now)
    page = alice_web.get("/industrial/plc-line-1/").content.decode()
    assert "<span data-value>0</span>" in page and "<span data-value>false</span>" in page
    assert "{}" not in page and "False" not in page
    relay(node_id="relay-1")
    state.apply_reports([state.StateReport("relay-1", {"on": True, "power": 12.5}, now)], now=now)
    command = services.send_command(Actor("user", "alice"), "relay-1", "set", "on", False)
    delivery.record_result("relay-1", str(command.pk), "ok", False, None)
    page = alice_web.get("/devices/relay-1/").content.decode()
    assert "<td data-value>true</td>" in page and "<td data-value>12.5</td>" in page
    assert "<td data-result>false</td>" in page and "True" not in page
    state.apply_reports([state.StateReport("relay-1", {"power": 0.0}, now)], now=now)
    assert "<td data-value>0</td>" in alice_web.get("/devices/relay-1/").content.decode()  # as JSON.stringify(0.0) puts it live
    dimmer(node_id="dimmer-1")
    assert "int 0–100</td>" in alice_web.get("/devices/dimmer-1/").content.decode()


def test_the_system_page_shows_gateways_worker_queues_and_versions(bob_web: Client) -> None:
    from django.utils import timezone

    now = timezone.now()
    Heartbeat.objects.create(name="gateway:abc", at=now, details={"host": "0.0.0.0", "port": 8883, "pid": 7, "connections": 12, "started_at": now.isoformat()})
    Heartbeat.objects.create(name="gateway:old", at=now - timezone.timedelta(minutes=5), details={"connections": 3})
    page = bob_web.get("/system/").content.decode()
    assert "12 connections on 0.0.0.0:8883" in page and "silent since" in page
    assert "<b data-connections>12</b>" in page  # a silent gateway's connections are not counted
    assert "no heartbeat yet" in page and "no periodic task has run yet" in page  # no worker, no beat in this test
    Heartbeat.objects.create(name="worker", at=now)  # the heartbeat task only runs when beat schedules it
    page = bob_web.get("/system/").content.decode()
    assert "ran the heartbeat task" in page and "scheduled the heartbeat task" in page
    assert 'data-queue="celery"' in page and "Django" in page and "pymodbus" in page


def test_right_after_runhub_starts_the_worker_and_beat_show_as_starting_then_down_once_overdue(bob_web: Client) -> None:
    from hub import system

    now = timezone.now()
    Heartbeat.objects.create(name="worker", at=now - timezone.timedelta(days=1))  # yesterday's run
    Heartbeat.objects.create(name=system.HUB_ROW, at=now - timezone.timedelta(seconds=5))  # what runhub stamps as it starts them
    page = bob_web.get("/system/").content.decode()
    assert '<div class="stat warn" data-state="worker"><b>starting</b>' in page
    assert '<div class="stat warn" data-state="beat"><b>starting</b>' in page
    assert "starting: runhub started it" in page and "<b>down</b>" not in page

    # Their first heartbeat is overdue: a missing (or stale) one is down again, as without runhub.
    Heartbeat.objects.filter(name=system.HUB_ROW).update(at=now - system.first_heartbeat_due() - timezone.timedelta(seconds=1))
    page = bob_web.get("/system/").content.decode()
    assert '<div class="stat bad" data-state="worker"><b>down</b>' in page
    assert '<div class="stat bad" data-state="beat"><b>down</b>' in page
    assert "worker or beat is down" in page

    Heartbeat.objects.filter(name="worker").update(at=timezone.now())  # the first heartbeat ran
    page = bob_web.get("/system/").content.decode()
    assert '<div class="stat ok" data-state="worker"><b>up</b>' in page and '<div class="stat ok" data-state="beat"><b>up</b>' in page
