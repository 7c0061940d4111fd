"""The firmware pages in headless Chromium against Daphne, with real agents updating:
an admin uploads a release on the page (and sees a refusal's reason inline), starts a
rollout, watches its progress bars move as devices report, and pauses it; a viewer sees
no controls, and a POST in their name is refused (403) and audited."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import call_command
from django.db import close_old_connections
from django.test import Client

from audit.models import AuditEvent
from firmware import simulate
from ota import driver
from ota.models import Rollout
from tests.browser import LiveHub, browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401
from tests.test_browser_pages import user_with_role
from tests.test_ota_end_to_end import Fleet, enroll_device

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


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
    return enroll_device((SimpleNamespace(port=live_hub.enroll_port), SimpleNamespace(port=live_hub.mesh_port)), node_id, tmp_path / node_id)


class Beat:
    """What celery beat does for rollouts (the live hub runs no worker): drive every 0.3 s."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for rollout_id in driver.running_rollouts():
                    driver.drive(rollout_id)
            finally:
                close_old_connections()
            self.stop.wait(0.3)


@pytest.fixture
def beat() -> Iterator[Beat]:
    running = Beat()
    running.thread.start()
    yield running
    running.stop.set()
    running.thread.join(10)


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    running = Fleet()
    yield running
    running.close()


def test_an_admin_uploads_rolls_out_watches_and_pauses_and_a_viewer_cannot(
    live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path, fleet: Fleet, beat: Beat, settings: Any
) -> None:
    settings.ENROLL_ATTEMPTS_PER_MINUTE = 100
    user_with_role(django_user_model, "ada", "admin")
    viewer = user_with_role(django_user_model, "vic", "viewer")
    for i in range(3):
        fleet.start(enrolled(live_hub, f"thermo-{i:02d}", tmp_path))
    image = tmp_path / "fw.img"
    assert simulate.main(["make-image", "--version", "1.2.0", "--behaviour", "healthy", "--size", "30000", "--out", str(image)]) == 0
    signed = tmp_path / "manifest.json"
    call_command("ota", "sign", "--image", str(image), "--version", "1.2.0", "--device-type", "thermostat", "--out", str(signed))

    login(page, live_hub.url, "ada", "ada-Pass-123")
    page.goto(live_hub.url + "/firmware/")
    # A wrong image first: the reason shows on the page, nothing is stored.
    wrong = tmp_path / "wrong.img"
    wrong.write_bytes(image.read_bytes()[:-1] + b"!")
    page.set_input_files("input[name=manifest]", str(signed))
    page.set_input_files("input[name=image]", str(wrong))
    with page.expect_response(lambda r: "/firmware/upload/" in r.url) as answer:
        page.click("[data-upload] button[type=submit]")
    log = live_hub.log()
    assert answer.value.status == 400, log[log.find("Traceback") :][:4000]
    assert page.locator("[data-refusal]").get_attribute("data-refusal") == "hash_mismatch"
    screenshot(page, "firmware-refused")
    page.set_input_files("input[name=manifest]", str(signed))
    page.set_input_files("input[name=image]", str(image))
    page.click("[data-upload] button[type=submit]")
    page.wait_for_selector("[data-release='1.2.0']")

    page.goto(live_hub.url + "/rollouts/")
    page.fill("input[name=waves]", '[1, "100%"]')
    page.check("input[name=approval]")
    page.click("[data-new-rollout] button[type=submit]")
    page.wait_for_url("**/rollouts/*/")
    rollout_path = page.url.removeprefix(live_hub.url)
    # The first wave's bar fills as its device reports (live, without reloading).
    page.wait_for_function("document.querySelector('[data-wave=\"0\"] .bar').dataset.done === '1'", timeout=60_000)
    page.wait_for_function("document.querySelector('p[data-field=reason]').textContent.includes('waiting for approval')", timeout=30_000)
    screenshot(page, "rollout-awaiting-approval")
    page.click("button[data-action=pause]")
    page.wait_for_function("document.querySelector('[data-rollout-live]').dataset.state === 'paused'")
    assert Rollout.objects.get().state == "paused" and "paused by ada" in Rollout.objects.get().reason
    assert AuditEvent.objects.filter(action="ota.rollout.pause", decision="allow", actor_id="ada").exists()
    screenshot(page, "rollout-paused")
    page.click("button[data-action=resume]")
    page.click("button[data-action=approve]")
    page.wait_for_function("document.querySelector('[data-wave=\"1\"] .bar').dataset.done === '2'", timeout=60_000)
    page.wait_for_function("document.querySelector('[data-rollout-live]').dataset.state === 'completed'", timeout=30_000)
    rollout = Rollout.objects.get()
    screenshot(page, "rollout-live")
    # The device page's firmware card: what it runs now, what it would roll back to.
    page.goto(live_hub.url + "/devices/thermo-00/")
    page.wait_for_function("document.querySelector('[data-firmware]').textContent.includes('1.2.0 in slot b')", timeout=30_000)
    card = page.locator("[data-firmware]").inner_text()
    assert "1.0.0" in card and "on trial" not in card and page.locator("[data-firmware] button.danger").count() == 1
    screenshot(page, "device-firmware")

    # A viewer: the page without controls; a POST in their name is refused and audited.
    page.context.clear_cookies()
    login(page, live_hub.url, "vic", "vic-Pass-123")
    page.goto(live_hub.url + rollout_path)
    assert page.locator("[data-controls]").count() == 0 and page.locator("[data-new-rollout]").count() == 0
    client = Client()
    client.force_login(viewer)
    assert client.post(f"/rollouts/{rollout.pk}/abort/").status_code == 403
    assert client.post("/firmware/upload/", {}).status_code == 403
    assert AuditEvent.objects.filter(action="ota.rollout.abort", decision="deny", actor_id="vic").exists()
    assert Rollout.objects.get().state != "aborted"
