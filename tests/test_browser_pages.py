"""The operator pages in headless Chromium against Daphne + the device listeners (as runhub
runs them), with a real agent over real mTLS. Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import Group

from audit.models import AuditEvent
from devices.models import Command
from tests.browser import LiveHub, browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401
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
        assert agent.hardware.values["setpoint"] == 22.5
        screenshot(page, "device-detail")

        # A refused value is explained next to the form, and nothing is sent.
        page.fill("input[name=value]", "99")
        page.click("form.command button")
        assert "value:" in page.locator(".command .error").inner_text()
        assert Command.objects.count() == 1
    page.goto(live_hub.url + "/devices/sensor-1/")
    page.wait_for_selector("h1 [data-presence].off", timeout=20_000)


def test_an_admin_revokes_a_device_and_sees_it_go_offline(live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path) -> None:
    django_user_model.objects.create_superuser("root", password="root-Pass-123")
    state_dir = enrolled(live_hub, "sensor-1", tmp_path)
    with RunningAgent(state_dir):
        login(page, live_hub.url, "root", "root-Pass-123")
        page.goto(live_hub.url + "/devices/sensor-1/")
        page.wait_for_selector("h1 [data-presence].on", timeout=20_000)
        page.once("dialog", lambda dialog: dialog.accept())  # "Revoke every certificate of sensor-1?"
        page.fill("input[name=reason]", "stolen")
        page.click("button.danger")
        page.wait_for_selector("ul.messages li:has-text('Revoked 1 certificate')")
        page.wait_for_selector("h1 [data-presence].off", timeout=20_000)
        page.goto(live_hub.url + "/audit/")
        assert page.locator("[data-chain=intact]").is_visible()
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
    # A forged POST from his session (with a valid CSRF token) is refused by the server and audited.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(
        live_hub.url + "/devices/sensor-1/command/",
        form={"action": "set", "capability": "setpoint", "value": "20"},
        headers={"X-CSRFToken": token, "Referer": live_hub.url + "/devices/sensor-1/"},
    )
    assert forged.status == 403
    assert AuditEvent.objects.filter(action="page.command", decision="deny", actor_id="bob").exists()
    assert not Command.objects.exists()
