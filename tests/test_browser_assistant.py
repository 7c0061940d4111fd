"""The overview's Ask box in headless Chromium against Daphne, with a real relay agent: an
operator types a sentence, sees what was understood and by whom, and the command's result
arrives live; an ambiguous name answers with the choices; a viewer's request to act is
refused with the reason."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from devices.models import Command, Device
from firmware.agent import port as agent_port
from firmware.agent.core.agent import Agent
from firmware.agent.profiles import PROFILES
from tests.browser import LiveHub, browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401
from tests.mesh_helpers import wait_for
from tests.test_automation_end_to_end import HeldHardware
from tests.test_browser_ota import enrolled
from tests.test_browser_pages import user_with_role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def ask(page: Any, text: str) -> None:
    page.fill("[data-ask] input[name=text]", text)
    page.click("[data-ask] button")
    page.wait_for_function("!document.querySelector('[data-ask] button').disabled && !document.querySelector('[data-ask-answer]').hidden")


def test_an_operator_asks_and_sees_the_result_live_and_a_viewer_cannot_act(
    live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path, settings: Any
) -> None:
    settings.ENROLL_ATTEMPTS_PER_MINUTE = 100
    user_with_role(django_user_model, "oli", "operator")
    user_with_role(django_user_model, "vic", "viewer")
    stop = threading.Event()
    agents = {}
    for node in ("relay-1", "relay-2"):
        agent = Agent(agent_port, str(enrolled(live_hub, node, tmp_path)), PROFILES["relay"], HeldHardware(PROFILES["relay"]), report_s=0.5, retry_delay_s=0.2)
        threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True).start()
        agents[node] = agent
    try:
        wait_for(lambda: Device.objects.filter(online=True).count() == 2, timeout_s=30)
        Device.objects.filter(node_id="relay-1").update(name="Kitchen light", named_at=Device.objects.get(node_id="relay-1").last_seen)
        Device.objects.filter(node_id="relay-2").update(name="Hall light", named_at=Device.objects.get(node_id="relay-2").last_seen)

        login(page, live_hub.url, "oli", "oli-Pass-123")
        page.goto(live_hub.url + "/")
        page.wait_for_function("document.body.dataset.liveState === 'open'")
        ask(page, "turn on the kitchn light")
        assert page.locator("[data-ask-by]").inner_text() == "local"
        assert "turn on Kitchen light (relay-1): on" in page.locator("[data-ask-understood]").inner_text()
        command = Command.objects.get()
        row = page.locator(f"[data-command='{command.pk}']")
        assert row.count() == 1
        wait_for(lambda: agents["relay-1"].hardware.values["on"] is True, timeout_s=20)
        # No reload: the agent's result reaches the row over /ws/live/.
        page.wait_for_function(f"document.querySelector(\"[data-command='{command.pk}'] [data-status]\").textContent === 'succeeded'", timeout=15000)
        screenshot(page, "assistant-ask")

        ask(page, "switch on the light")
        assert page.locator("[data-ask-choices] li").all_inner_texts() == ["Hall light (relay-2)", "Kitchen light (relay-1)"]
        assert Command.objects.count() == 1, "an ambiguous name sends nothing"

        page.context.clear_cookies()
        login(page, live_hub.url, "vic", "vic-Pass-123")
        page.goto(live_hub.url + "/")
        ask(page, "turn off the kitchen light")
        refusal = page.locator("[data-ask-refusal]")
        assert refusal.is_visible() and refusal.get_attribute("data-ask-refusal") == "403" and "missing scope 'command'" in refusal.inner_text()
        assert not page.locator("[data-ask-by]").is_visible(), "nobody handled it: no 'local' badge"
        assert Command.objects.count() == 1 and agents["relay-1"].hardware.values["on"] is True
        assert AuditEvent.objects.filter(action="assistant.act", decision="deny", actor_id="vic").exists()
        screenshot(page, "assistant-refused")
    finally:
        stop.set()
