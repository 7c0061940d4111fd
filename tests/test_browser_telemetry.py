"""The device page's telemetry chart: in headless Chromium against Daphne, with history
written through the state path and live values from a real agent over mTLS; and, through
the test client, that the page loads its chart from vendored files only."""

from __future__ import annotations

import csv
import io
import math
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.utils import timezone

from devices import retention
from devices.state import StateReport, apply_reports
from tests.browser import LiveHub, browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401
from tests.factories import DeviceFactory, thermostat
from tests.test_browser_pages import enrolled, user_with_role
from tests.test_gateway import RunningAgent

CHART = "section[data-telemetry] [data-chart]"
RANGES_S = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400, "90d": 90 * 86400, "1y": 365 * 86400}
BUCKETS_S = {"1h": None, "24h": 120, "7d": 900, "30d": 3600, "90d": 21600, "1y": 86400}  # what chart.js asks the API for
TIME_ZONE = "Asia/Tokyo"  # UTC+9 all year: a chart drawn in UTC would be nine hours off


def temperature_at(ts: datetime) -> float:
    t = ts.timestamp()
    return round(20 + 3 * math.sin(2 * math.pi * t / 86400) + 0.3 * math.sin(t / 1234), 2)


def report_history(node_id: str) -> list[datetime]:
    """A day of temperature every 10 minutes, then every 3 hours back to a week, and one
    sample 20 days old and one 100 days old, through the state path the gateway uses. No sample lies within
    5 minutes of a range boundary, so the expected point counts do not depend on when the
    browser asks."""
    now = timezone.now()
    ages = [timedelta(minutes=5 + 10 * k) for k in range(144)]  # 5 min … 23 h 55 min
    ages += [timedelta(hours=27 + 3 * k) for k in range(47)]  # 27 h … 165 h (6 d 21 h)
    ages += [timedelta(days=20), timedelta(days=100)]  # past the raw window; past the hourly one
    times = sorted(now - age for age in ages)
    reports = [StateReport(node_id, {"temperature": temperature_at(ts)}, ts) for ts in times]
    # In a thread: the test's own thread has playwright's loop marked running, and the
    # post-commit live push (async_to_sync) would refuse to run there.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(in_thread, apply_reports, reports).result()
    return times


def in_thread(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    finally:
        connection.close()


def expected_points(times: list[datetime], range_name: str) -> int:
    """Samples in the range, or the distinct buckets they fall in (floor(epoch / width), as the database buckets)."""
    since = timezone.now() - timedelta(seconds=RANGES_S[range_name])
    shown = [ts for ts in times if ts >= since]
    bucket = BUCKETS_S[range_name]
    return len({int(ts.timestamp()) // bucket for ts in shown}) if bucket else len(shown)


def chart_ready(page: Any, range_name: str, capability: str = "temperature") -> Any:
    page.wait_for_selector(f'{CHART}[data-range="{range_name}"][data-capability="{capability}"]:is([data-state=ready], [data-state=empty])', state="attached")
    return page.locator(CHART)


def choose_range(page: Any, range_name: str) -> Any:
    """Click a range button; returns the telemetry request it caused."""
    with page.expect_request(lambda request: "/telemetry/" in request.url) as request:
        page.click(f"section[data-telemetry] button[data-range='{range_name}']")
    chart_ready(page, range_name)
    return request.value


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_alice_charts_telemetry_changes_range_downloads_csv_and_sees_live_values(live_hub: LiveHub, page: Any, django_user_model: Any, tmp_path: Path) -> None:
    user_with_role(django_user_model, "alice", "operator")
    thermostat("sensor-1")
    times = report_history("sensor-1")
    state_dir = enrolled(live_hub, "sensor-1", tmp_path)  # the agent starts later, for the live values
    page.context.new_cdp_session(page).send("Emulation.setTimezoneOverride", {"timezoneId": TIME_ZONE})
    login(page, live_hub.url, "alice", "alice-Pass-123")
    page.goto(live_hub.url + "/devices/sensor-1/")

    # 24 h by default, as database buckets: one point per 10-minute sample.
    chart = chart_ready(page, "24h")
    assert chart.get_attribute("data-points") == str(expected_points(times, "24h")) == "144"
    assert (chart.get_attribute("data-mode"), chart.get_attribute("data-bucket")) == ("bucket", "120")
    assert page.locator(f"{CHART} canvas").count() >= 1
    assert page.locator("section[data-telemetry] button[aria-pressed=true]").inner_text() == "24 h"
    assert page.locator("select[data-series] option").all_inner_texts() == ["temperature (°C)", "setpoint (°C)"]  # numeric only, sensors first
    assert f"Times in {TIME_ZONE}" in page.locator("[data-chart-note]").inner_text()
    screenshot(page, "device-telemetry-24h")

    # Each range asks the API again; long ones in buckets, so no series nears 1,000 points.
    for range_name, bucket in (("7d", "bucket=900"), ("30d", "bucket=3600")):
        request = choose_range(page, range_name)
        assert bucket in request.url
        assert page.locator(CHART).get_attribute("data-points") == str(expected_points(times, range_name))

    # Retention rolls the 20-day-old sample into an hourly rollup and the 100-day-old one into
    # a daily one (default policy: raw 7 days, hourly 90): the long ranges read them, say so,
    # and show the same points.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(in_thread, retention.apply).result().raw_rolled_up == 2
    for range_name, sources, words in (
        ("30d", "hour", "from hourly rollups"),
        ("90d", "hour", "from hourly rollups"),
        ("1y", "hour,day", "from daily rollups"),
    ):
        choose_range(page, range_name)
        assert (chart.get_attribute("data-sources"), chart.get_attribute("data-bucket")) == (sources, str(BUCKETS_S[range_name]))
        assert chart.get_attribute("data-points") == str(expected_points(times, range_name))
        assert words in page.locator("[data-chart-note]").inner_text()
    screenshot(page, "device-telemetry-1y")
    request = choose_range(page, "1h")
    assert "bucket" not in request.url  # raw samples
    assert chart.get_attribute("data-points") == str(expected_points(times, "1h")) == "6"
    assert page.locator("section[data-telemetry] button[aria-pressed=true]").inner_text() == "1 h"

    # The legend reads in the browser's time zone (as uPlot's time axis does by default):
    # hovering at the right edge shows the newest sample.
    box = page.locator(f"{CHART} .u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    page.wait_for_function(f"document.querySelector('{CHART} .u-legend .u-value').textContent !== '—'")
    legend_time, legend_value = page.locator(f"{CHART} .u-legend .u-value").all_inner_texts()[:2]
    local = page.evaluate(
        "([ms, tz]) => new Intl.DateTimeFormat(undefined, {dateStyle: 'medium', timeStyle: 'medium', timeZone: tz}).format(new Date(ms))",
        [times[-1].timestamp() * 1000, TIME_ZONE],
    )
    assert (legend_time, legend_value) == (local, f"{temperature_at(times[-1]):g} °C")

    # The CSV is what the chart shows: the raw rows of the last hour.
    with page.expect_download() as download:
        page.click("section[data-telemetry] a[data-csv]")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    recent = times[-6:]
    assert rows == [["ts", "capability", "value"]] + [[ts.isoformat(), "temperature", str(temperature_at(ts))] for ts in recent]
    choose_range(page, "7d")
    with page.expect_download() as download:
        page.click("section[data-telemetry] a[data-csv]")
    buckets = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(buckets) == expected_points(times, "7d") and sum(int(b["count"]) for b in buckets) == len(times) - 2  # all but the 20- and 100-day-old ones

    # A capability without samples: the empty state, and no chart.
    page.select_option("select[data-series]", "setpoint")
    chart_ready(page, "7d", "setpoint")
    assert page.locator("[data-chart-empty]").inner_text().startswith("No telemetry in this range yet")
    assert page.locator(CHART).is_hidden()
    page.select_option("select[data-series]", "temperature")
    choose_range(page, "1h")

    # Live: the agent's reports arrive over the page's WebSocket and extend the chart in place.
    page.wait_for_selector("body[data-live-state=open]")
    page.evaluate("window.notReloaded = true")
    fetches: list[str] = []
    page.on("request", lambda request: fetches.append(request.url) if "/telemetry/" in request.url else None)
    with RunningAgent(state_dir):
        page.wait_for_function(
            """() => {
                const chart = document.querySelector('section[data-telemetry] [data-chart]');
                const cell = document.querySelector('[data-capability=temperature] [data-value]');
                return Number(chart.dataset.points) >= 9 && chart.dataset.last === cell.textContent;
            }""",
            timeout=20_000,
        )
        assert page.evaluate("window.notReloaded") is True and fetches == []  # appended from the socket, not fetched again
        screenshot(page, "device-telemetry")
        page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, portrait
        page.wait_for_function("document.querySelector('section[data-telemetry] canvas').getBoundingClientRect().right <= window.innerWidth")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "device-telemetry-tablet")


@pytest.mark.django_db
def test_it_loads_the_chart_from_vendored_files_only(bob: Any) -> None:
    bob.groups.add(Group.objects.get(name="viewer"))
    thermostat("sensor-1")
    DeviceFactory(node_id="sensor-2")  # nothing declared yet
    client = Client()
    client.force_login(bob)
    page = client.get("/devices/sensor-1/").content.decode()
    tags = re.findall(r"<(?:script|link)\b[^>]*>", page)
    assets = {
        "/static/vendor/uplot/uPlot.iife.min.js": b"var uPlot=",
        "/static/vendor/uplot/uPlot.min.css": b".uplot",
        "/static/meshhub/chart.js": b"meshhub:live",
    }
    assert set(assets) <= {m.group(1) for tag in tags if (m := re.search(r'\b(?:src|href)="([^"]*)"', tag))}
    assert [tag for tag in tags if "http://" in tag or "https://" in tag or '="//' in tag] == []
    for path, marker in assets.items():  # whitenoise serves them from the finders, no collectstatic
        served = client.get(path)
        assert served.status_code == 200 and marker in b"".join(served.streaming_content), path
    assert 'href="/api/v1/devices/sensor-1/telemetry/?capability=temperature&amp;format=csv"' in page  # the export works without script too
    assert "chart.js" not in client.get("/devices/").content.decode()  # only the device page loads it
    assert "Nothing to chart: the device has no numeric capabilities yet" in client.get("/devices/sensor-2/").content.decode()
