"""The automation pages in headless Chromium against Daphne, with real agents: an operator
writes a rule on the page, sees a refused value explained inline, dry-runs it on seeded
history, saves it, and sees it fire when the thermostat (a real agent) gets hot; a viewer sees
no controls, and a POST in their name is refused (403) and audited."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from automation.models import Rule, RuleRun
from devices import state
from devices.models import Device
from firmware.agent import port as agent_port
from firmware.agent.core.agent import Agent
from firmware.agent.profiles import PROFILES
from tests.browser import LiveHub, browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401
from tests.mesh_helpers import wait_for
from tests.test_automation_end_to_end import HeldHardware
from tests.test_browser_ota import enrolled
from tests.test_browser_pages import user_with_role

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RULE = {
    "name": "cool the greenhouse",
    "cooldown_s": 60,
    "when": {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30, "for_s": 2},
    "then": [{"device": "thermo-1", "capability": "setpoint", "action": "set", "value": 80}],
}


def test_an_operator_writes_dry_runs_and_saves_a_rule_that_fires_and_a_viewer_cannot(
    live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path, settings: Any
) -> None:
    settings.ENROLL_ATTEMPTS_PER_MINUTE = 100
    user_with_role(django_user_model, "oli", "operator")
    viewer = user_with_role(django_user_model, "vic", "viewer")
    stop = threading.Event()
    agents = {}
    for node, profile in (("thermo-1", "thermostat"), ("relay-1", "relay")):
        agent = Agent(agent_port, str(enrolled(live_hub, node, tmp_path)), PROFILES[profile], HeldHardware(PROFILES[profile]), report_s=0.5, retry_delay_s=0.2)
        threading.Thread(target=agent.run, args=(stop.is_set,), daemon=True).start()
        agents[node] = agent
    try:
        wait_for(lambda: Device.objects.filter(online=True).count() == 2, timeout_s=30)
        # An hour of history: 29-32 °C, above 30 twice for longer than the rule's 2 s.
        start = timezone.now() - timedelta(hours=1)
        for i, temp in enumerate([29.0, 31.0, 31.5, 31.0, 29.5, 29.0, 30.5, 31.2, 31.4, 28.0]):
            ts = start + timedelta(minutes=i)
            state.apply_reports([state.StateReport("thermo-1", {"temperature": temp}, ts)], now=ts)

        login(page, live_hub.url, "oli", "oli-Pass-123")
        page.goto(live_hub.url + "/automation/new/")
        page.fill("textarea[name=document]", json.dumps(RULE, indent=2))
        page.click("button[data-save]")
        refusal = page.locator("[data-refusal]")
        assert refusal.get_attribute("data-refusal") == "then[0].value" and "80" in refusal.inner_text()
        screenshot(page, "automation-refused")
        fixed = {**RULE, "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}]}
        page.fill("textarea[name=document]", json.dumps(fixed, indent=2))
        page.select_option("select[name=hours]", "6")
        page.click("button[data-dry-run]")
        assert page.locator("[data-firings]").get_attribute("data-firings") == "2"
        assert not Rule.objects.exists(), "a dry-run saves nothing"
        screenshot(page, "automation-dry-run")
        page.click("button[data-save]")
        page.wait_for_url("**/automation/*/")
        rule = Rule.objects.get()
        assert rule.created_by.endswith("oli")

        page.wait_for_function("document.body.dataset.liveState === 'open'")
        assert page.locator("[data-run]").count() == 0 and page.locator("[data-no-runs]").is_visible()
        agents["thermo-1"].hardware.values["temperature"] = 33.0  # the real device gets hot
        wait_for(lambda: agents["relay-1"].hardware.values["on"] is True, timeout_s=30)
        assert [r.outcome for r in RuleRun.objects.filter(rule=rule)] == ["fired"]
        # No reload: the run reaches the open page over /ws/live/.
        page.wait_for_function(
            "document.querySelectorAll('[data-run] [data-outcome]').length === 1 && document.querySelector('[data-run] [data-outcome]').textContent === 'fired'",
            timeout=15000,
        )
        assert "thermo-1.temperature = 33.0" in page.locator("[data-run]").inner_text() and not page.locator("[data-no-runs]").is_visible()
        screenshot(page, "automation-rule")
        page.goto(live_hub.url + "/automation/")
        assert page.locator(f"[data-rule='{rule.pk}']").inner_text().count("fired") == 1

        # A viewer: the pages without controls; a POST in their name is refused and audited.
        page.context.clear_cookies()
        login(page, live_hub.url, "vic", "vic-Pass-123")
        page.goto(live_hub.url + f"/automation/{rule.pk}/")
        assert page.locator("button[data-save]").count() == 0 and page.locator("button.danger").count() == 0
        page.goto(live_hub.url + "/automation/")
        assert page.locator("[data-new-rule]").count() == 0 and page.locator("[data-rules] button").count() == 0
        client = Client()
        client.force_login(viewer)
        assert client.post(f"/automation/{rule.pk}/disable/").status_code == 403
        assert client.post(f"/automation/{rule.pk}/save/", {"document": json.dumps(fixed), "intent": "save"}).status_code == 403
        assert Rule.objects.get().enabled
        assert AuditEvent.objects.filter(action="automation.rule.update", decision="deny", actor_id="vic").count() == 2
    finally:
        stop.set()
