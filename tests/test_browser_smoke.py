"""The browser-test infrastructure itself: Daphne serving hub.asgi against the test DB, Chromium driving it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import ASGI_APPLICATION, LiveHub, browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_admin_login_through_the_form(live_hub: LiveHub, page: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_superuser("root", password="root-Pass-123")

    login(page, live_hub.url, "root", "root-Pass-123", path="/admin/login/")

    assert page.url == live_hub.url + "/admin/"
    assert page.title().startswith("Site administration")
    assert "root" in page.locator("#user-tools").inner_text().lower()
    # The admin's CSS comes through whitenoise (finders, no collectstatic) from the same server.
    css = page.request.get(live_hub.url + "/static/admin/css/base.css")
    assert css.status == 200
    assert css.headers["content-type"].startswith("text/css")
    assert screenshot(page, "smoke-admin-index").stat().st_size > 0


def test_wrong_password_stays_on_the_form(live_hub: LiveHub, page: Any, django_user_model: Any) -> None:
    django_user_model.objects.create_superuser("root", password="root-Pass-123")

    login(page, live_hub.url, "root", "not-the-password", path="/admin/login/")

    assert page.url == live_hub.url + "/admin/login/"
    assert page.locator(".errornote").is_visible()


def test_the_server_is_daphne_serving_the_asgi_application(live_hub: LiveHub, page: Any) -> None:
    """No WebSocket route exists yet (/ws/live/ is to come), so prove the ASGI server another way.

    Daphne stamps `Server: daphne` on every HTTP response it writes (daphne/http_protocol.py), and
    the child process serves exactly `hub.asgi.application` (tests/browser.py `_serve`). Once
    /ws/live/ exists, open it from the page: `new WebSocket(live_hub.ws_url + "/ws/live/")`.
    """
    response = page.goto(live_hub.url + "/admin/login/")
    assert response is not None
    assert response.status == 200
    assert response.headers["server"] == "daphne"
    assert ASGI_APPLICATION == "hub.asgi.application"
    assert live_hub.process.poll() is None
