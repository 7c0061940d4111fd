"""The operator pages in headless Chromium against Daphne + the device listeners (as runhub
runs them), with a real agent over real mTLS. Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group

from audit.models import AuditEvent
from audit.services import Actor
from devices.models import Command
from tests.browser import REPO_ROOT, LiveHub, browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401
from tests.modbus_server import modbus_server_fixture  # noqa: F401
from tests.test_gateway import RunningAgent, enroll_device

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def user_with_role(django_user_model: Any, name: str, role: str) -> Any:
    user = django_user_model.objects.create_user(name, password=f"{name}-Pass-123")
    user.groups.add(Group.objects.get_or_create(name=role)[0])  # a transactional test's flush drops the migration's rows
    return user


def enrolled(live_hub: LiveHub, node_id: str, tmp_path: Path) -> Path:
    deadline = time.monotonic() + 15
    while True:  # the listeners start right after Daphne answers
        try:
            socket.create_connection(("127.0.0.1", live_hub.mesh_port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    ports = (SimpleNamespace(port=live_hub.enroll_port), SimpleNamespace(port=live_hub.mesh_port))
    return enroll_device(ports, node_id, tmp_path / node_id)


def test_alice_watches_a_device_come_online_commands_it_and_sees_the_result(live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path) -> None:
    user_with_role(django_user_model, "alice", "operator")
    state_dir = enrolled(live_hub, "sensor-1", tmp_path)
    login(page, live_hub.url, "alice", "alice-Pass-123")
    assert page.url == live_hub.url + "/"
    screenshot(page, "overview")
    page.goto(live_hub.url + "/devices/")
    screenshot(page, "devices")
    page.goto(live_hub.url + "/devices/sensor-1/")
    page.wait_for_selector("body[data-live-state=open]")
    assert page.locator("h1 [data-presence]").inner_text() == "offline"

    with RunningAgent(state_dir) as agent:
        # No reload: the presence dot and the values change in place.
        page.wait_for_selector("h1 [data-presence].on", timeout=20_000)
        assert page.locator("h1 [data-presence]").inner_text() == "online"
        # Its capabilities came with its hello; then the values move while we watch.
        page.reload()
        page.wait_for_selector("body[data-live-state=open]")
        cell = "[data-capability=temperature] [data-value]"
        first = page.locator(cell).inner_text()
        page.wait_for_function(f"document.querySelector('{cell}').textContent !== {first!r}", timeout=20_000)

        page.select_option("select[name=action]", "set")
        page.select_option("select[name=capability]", "setpoint")
        page.fill("input[name=value]", "22.5")
        page.click("form.command button")
        page.wait_for_selector("ul.messages li")
        command = Command.objects.get()
        page.wait_for_selector(f'[data-command="{command.pk}"] [data-status]:text("succeeded")', timeout=20_000)
        # The device's answer arrives with the status, without a reload.
        page.wait_for_selector(f'[data-command="{command.pk}"] [data-result]:text-is("22.5")', timeout=5_000)
        assert agent.hardware.values["setpoint"] == 22.5
        screenshot(page, "device-detail")

        # A refused value is explained next to the form, and nothing is sent.
        page.fill("input[name=value]", "99")
        page.click("form.command button")
        assert "value:" in page.locator(".command .error").inner_text()
        assert Command.objects.count() == 1
    page.goto(live_hub.url + "/devices/sensor-1/")
    page.wait_for_selector("h1 [data-presence].off", timeout=20_000)


def test_alice_sees_a_device_that_enrolls_while_the_device_list_is_open(live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path) -> None:
    from tests.factories import relay

    user_with_role(django_user_model, "alice", "operator")
    login(page, live_hub.url, "alice", "alice-Pass-123")
    empty = page.context.new_page()  # a tab opened while there were no devices at all
    empty.goto(live_hub.url + "/devices/")
    assert empty.locator("[data-devices-empty]").is_visible()
    relay("relay-1")  # then the list is not empty: the new row goes where node id order puts it
    page.goto(live_hub.url + "/devices/")
    filtered = page.context.new_page()  # a tab searching for relays
    filtered.goto(live_hub.url + "/devices/?q=relay")
    for tab in (empty, page, filtered):
        tab.wait_for_selector("body[data-live-state=open]")

    state_dir = enrolled(live_hub, "greenhouse-1", tmp_path)  # the real enrollment port, a real agent
    # No reload: the row appears with the cells the server renders for one, above relay-1.
    row = page.wait_for_selector("tr[data-node=greenhouse-1]", timeout=20_000)
    cells = [cell.inner_text() for cell in row.query_selector_all("td")]
    assert cells == ["greenhouse-1", "greenhouse-1", "generic", "provisioned", "offline", "never", ""]
    assert row.query_selector("a").get_attribute("href") == "/devices/greenhouse-1/"
    assert page.eval_on_selector_all("tbody tr", "rows => rows.map(r => r.dataset.node)") == ["greenhouse-1", "relay-1"]
    empty.wait_for_selector("tr[data-node=greenhouse-1]", timeout=20_000)  # the first device replaces "No devices yet"
    assert empty.locator("[data-devices-empty]").count() == 0 and empty.locator("table.list").is_visible()
    # The filtered tab does not second-guess its filter: it offers a reload.
    notice = filtered.wait_for_selector("[data-new-devices]:visible", timeout=20_000)
    assert notice.inner_text() == "1 device enrolled since this list was loaded (they may not match the filters): reload"
    assert filtered.locator("tr[data-node=greenhouse-1]").count() == 0
    screenshot(filtered, "devices-new-device-notice")

    with RunningAgent(state_dir):  # its first connection shows on the row it was given
        page.wait_for_selector("tr[data-node=greenhouse-1] [data-presence].on", timeout=20_000)
    screenshot(page, "devices-new-device-live")
    with filtered.expect_navigation():
        filtered.click("[data-new-devices] a")
    # Reloaded with its filter: greenhouse-1 does not match it, relay-1 still does.
    assert filtered.locator("tr[data-node=relay-1]").count() == 1 and filtered.locator("[data-new-devices]").is_hidden()
    assert filtered.url == live_hub.url + "/devices/?q=relay" and filtered.locator("tr[data-node=greenhouse-1]").count() == 0


def test_alice_enrolls_a_real_agent_from_the_page_then_revokes_it(live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path) -> None:
    user_with_role(django_user_model, "alice", "operator")
    login(page, live_hub.url, "alice", "alice-Pass-123")
    page.click("a.button:has-text('Create an enrollment code')")  # the empty overview says what to do next
    screenshot(page, "enrollment")
    page.fill("input[name=node_id]", "greenhouse-1")
    page.fill("input[name=device_type]", "thermostat")
    page.click("form.enroll-form button")
    page.wait_for_selector("[data-code]")
    assert page.locator(".qr-code svg").is_visible()
    page.wait_for_selector("body[data-live-state=open]")
    assert page.locator("[data-enrollment]").get_attribute("data-enrollment") == "waiting"
    screenshot(page, "enrollment-ticket")

    # The device's installer runs exactly the command the page shows.
    command = shlex.split(page.locator("[data-agent-command]").inner_text())
    assert command[:3] == ["python", "-m", "firmware.agent"]
    done = subprocess.run(
        [sys.executable, *command[1:]], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    page.wait_for_selector("[data-enrollment=enrolled]", timeout=20_000)  # live, no reload
    with RunningAgent(tmp_path / "state-greenhouse-1"):
        page.wait_for_selector("[data-node=greenhouse-1] [data-presence].on", timeout=20_000)
        page.click("a:has-text('Open greenhouse-1')")
        page.wait_for_selector("h1 [data-presence].on", timeout=20_000)
        page.once("dialog", lambda dialog: dialog.accept())  # "Revoke every certificate of greenhouse-1?"
        page.fill("input[name=reason]", "stolen")
        page.click("button.danger")
        page.wait_for_selector("ul.messages li:has-text('Revoked 1 certificate')")
        page.wait_for_selector("h1 [data-presence].off", timeout=20_000)
    revoked = AuditEvent.objects.get(action="device.revoke")
    assert (revoked.actor_id, revoked.decision, revoked.reason) == ("alice", "allow", "stolen")
    page.goto(live_hub.url + "/certificates/")
    assert "stolen" in page.locator("table.list").inner_text()
    screenshot(page, "certificates")


def test_every_page_for_a_screenshot_with_a_fleet(live_hub: LiveHub, page: Any, django_user_model: Any, modbus_server: Any) -> None:
    """Groups, industrial and system (the other pages are shot by the flows above), filled in."""
    from devices import retention
    from devices.models import Group
    from industrial import config, polling
    from industrial.models import ModbusBridge
    from tests.factories import relay, thermostat

    django_user_model.objects.create_superuser("root", password="root-Pass-123")
    lights = Group.objects.create(name="greenhouse", description="Sensors and relays of the greenhouse")
    lights.members.add(thermostat("sensor-1"), thermostat("sensor-2"), relay("relay-1"))
    points = [
        {
            "capability": "tank_level",
            "register": "holding",
            "address": 0,
            "data_type": "u16",
            "scale": 0.1,
            "unit": "%",
            "writable": True,
            "min": 0,
            "max": 100,
        },
        {"capability": "pump", "register": "coil", "address": 0, "data_type": "bool", "writable": True},
        {"capability": "pressure", "register": "input", "address": 0, "data_type": "f32", "unit": "bar"},
    ]
    document = {
        "bridges": [
            {"node_id": "plc-line-1", "name": "Line 1", "host": "127.0.0.1", "port": modbus_server.port, "timeout_s": 0.5, "retries": 0, "points": points}
        ]
    }
    config.import_document(Actor("user", "root"), document)
    polling.poll_bridge(ModbusBridge.objects.get().pk)
    login(page, live_hub.url, "root", "root-Pass-123")
    for path, name in [
        ("/groups/", "groups"),
        (f"/groups/{lights.pk}/", "group"),
        ("/industrial/", "industrial"),
        ("/industrial/plc-line-1/", "industrial-bridge"),
    ]:
        assert page.goto(live_hub.url + path).ok, path
        screenshot(page, name)
    page.goto(live_hub.url + f"/groups/{lights.pk}/")
    page.select_option("select[name=action]", "set")
    page.select_option("select[name=capability]", "setpoint")
    page.fill("input[name=value]", "21")
    page.click("form.command-form button")
    page.wait_for_selector("[data-outcomes]")
    assert "Sent to 2 of 3 members" in page.locator("[data-outcomes] h2").inner_text()
    screenshot(page, "group-command")
    retention.run_and_record()  # what beat does every 5 minutes: the disk use of each table
    page.goto(live_hub.url + "/system/")
    page.wait_for_selector("[data-gateway]")  # the live hub's own gateway stamped its row
    assert page.locator("[data-storage] tr[data-table=devices_telemetrysample]").count() == 1
    screenshot(page, "system")
    page.goto(live_hub.url + "/audit/snapshots/")
    screenshot(page, "audit-snapshots")
    page.goto(live_hub.url + "/audit/")  # its targets include the CA's long fingerprint
    assert page.locator("[data-chain=intact]").count() == 1 or "Verify the chain now" in page.content()
    screenshot(page, "audit")


def test_bob_sees_no_action_buttons_and_a_forged_post_is_refused(live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path) -> None:
    from tests.factories import thermostat

    user_with_role(django_user_model, "bob", "viewer")
    thermostat("sensor-1")
    response = page.goto(live_hub.url + "/devices/sensor-1/")
    assert page.url.startswith(live_hub.url + "/login/?next=")  # no session: the login page
    assert response is not None and response.ok
    screenshot(page, "login")
    login(page, live_hub.url, "bob", "bob-Pass-123")
    page.goto(live_hub.url + "/devices/sensor-1/")
    assert page.locator("form.command").count() == 0 and page.locator("button.danger").count() == 0
    page.goto(live_hub.url + "/")  # the overview lists denied attempts live
    page.wait_for_selector("body[data-live-state=open]")
    # A forged POST from his session (with a valid CSRF token) is refused by the server and audited.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(
        live_hub.url + "/devices/sensor-1/command/",
        form={"action": "set", "capability": "setpoint", "value": "20"},
        headers={"X-CSRFToken": token, "Referer": live_hub.url + "/devices/sensor-1/"},
    )
    assert forged.status == 403
    page.wait_for_selector("[data-alerts=denied] tr:has-text('page.command')", timeout=20_000)  # no reload
    assert AuditEvent.objects.filter(action="page.command", decision="deny", actor_id="bob").exists()
    assert not Command.objects.exists()


def test_right_after_the_hub_starts_bob_sees_the_worker_and_beat_starting_not_down(live_hub: LiveHub, page: Any, django_user_model: Any) -> None:
    from hub import system

    user_with_role(django_user_model, "bob", "viewer")
    system.record_hub_start()  # what runhub does as it spawns the worker + beat; neither has stamped yet
    login(page, live_hub.url, "bob", "bob-Pass-123")
    page.goto(live_hub.url + "/system/")
    for name in ("worker", "beat"):
        stat = page.locator(f"[data-state={name}]")
        assert stat.locator("b").inner_text() == "starting" and "warn" in (stat.get_attribute("class") or "")
    assert page.locator("[data-worker]").inner_text().startswith("starting: runhub started it")
    screenshot(page, "system-starting")
