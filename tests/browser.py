"""Browser tests: the hub served by Daphne (HTTP + WebSocket) against the test database, driven by Chromium.

Import the fixtures into a test module (or a conftest)::

    from tests.browser import browser_fixture, chromium_fixture, live_hub_fixture, login, page_fixture, screenshot  # noqa: F401

* ``live_hub`` (function scope) -- a :class:`LiveHub`: ``.url`` (``http://127.0.0.1:<port>``),
  ``.ws_url`` (``ws://...``), ``.port``, ``.log()`` (the server's output so far). Requesting it
  makes the test transactional (it pulls in ``transactional_db``): the server is another process
  and sees only committed rows.
* ``browser`` (function scope) -- a playwright ``Browser``: Debian's headless ``/usr/bin/chromium``,
  launched once per session (``chromium``, also import it); the per-test wrapper confines playwright's
  "running loop" mark and DJANGO_ALLOW_ASYNC_UNSAFE to tests that use the browser.
* ``page`` (function scope) -- a ``Page`` in a fresh context (own cookies), viewport 1280x800.
* ``login(page, base_url, username, password, path="/login/")`` -- submits Django's
  ``AuthenticationForm`` (fields ``username``/``password``).
* ``screenshot(page, name)`` -- a full-page PNG in ``test-output/screenshots/``; returns its path.

How the server runs, and why this way:

* A fresh interpreter (``python -m tests.browser <fd>``), not a fork of pytest like channels'
  ``DaphneProcess``/``ChannelsLiveServerTestCase``. A fork inherits the parent's open
  PostgreSQL/Redis sockets, playwright's driver pipes and pytest-django's DB-blocker patch;
  and channels' ``set_database_connection`` re-derives the test DB name from
  ``TEST.NAME``/``"test_" + NAME`` after pytest-django has already switched NAME, which on
  PostgreSQL gives ``test_test_meshhub``. A spawned Daphne is the production shape (runhub
  also runs ``daphne.server.Server``) and costs about a second to import Django.
* The child is pointed at the test database the way the runhub tests do it
  (``tests.process_helpers.hub_env``: MESHHUB_SQLITE_PATH or DATABASE_URL of the test DB);
  REDIS_URL is inherited, so in production mode the child's channel layer is channels-redis
  on the suite's Redis DB. In embedded mode the layer is in-memory *inside the child*: a test
  cannot ``group_send`` to the browser from the test process; trigger pushes through the server.
* Settings the suite changes at run time are mirrored into the child (``_MIRRORED_SETTINGS``):
  the root conftest puts the MD5 hasher first, and a server with Django's default hashers
  could not check the passwords of users created by the test.
* The parent binds the listening socket (port 0, so no free-port race) and hands the file
  descriptor to Daphne (``fd:fileno=N`` endpoint, as ``daphne --fd`` does).
* Static files: whitenoise (in MIDDLEWARE) with ``WHITENOISE_USE_FINDERS = True`` serves them
  from the finders; no collectstatic needed.
* Function scope on purpose: pytest-django flushes the database after every transactional
  test and ``post_migrate`` recreates content types and permissions with new ids, which a
  long-lived server would still hold in ContentType's cache (stale FKs, e.g. admin LogEntry).
  Starting Daphne costs about a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_DIR = REPO_ROOT / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 800}
ASGI_APPLICATION = "hub.asgi.application"

_MIRRORED_SETTINGS = ("PASSWORD_HASHERS",)
_OVERRIDES_ENV = "MESHHUB_TEST_SETTINGS_JSON"
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0


@dataclass
class LiveHub:
    url: str
    ws_url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    enroll_port: int = 0  # the device listeners run in the same process, as under runhub
    mesh_port: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


_DEVICE_PORTS_ENV = "MESHHUB_TEST_DEVICE_PORTS"


def _child_env() -> dict[str, str]:
    from django.conf import settings

    from tests.process_helpers import hub_env

    env = hub_env()
    env["DJANGO_SETTINGS_MODULE"] = "hub.settings"
    # The server should detect sync ORM calls from async code just as it does in production.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env[_OVERRIDES_ENV] = json.dumps({name: getattr(settings, name) for name in _MIRRORED_SETTINGS})
    return env


def _wait_until_serving(hub: LiveHub) -> None:
    """Any HTTP answer (even an error status) means Django is loaded and Daphne is accepting."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if hub.process.poll() is not None:
            raise RuntimeError(f"Daphne exited with {hub.process.returncode} before serving; log:\n{hub.log()}")
        try:
            with urllib.request.urlopen(hub.url + "/healthz", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except (OSError, TimeoutError):
            time.sleep(0.05)
    raise RuntimeError(f"Daphne did not answer within {_START_TIMEOUT_S:.0f} s; log:\n{hub.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # Twisted's handler stops the reactor; Daphne closes the apps
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(name="live_hub")
def live_hub_fixture(transactional_db: None, tmp_path: Path) -> Iterator[LiveHub]:
    """hub.asgi.application under Daphne on 127.0.0.1:<free port>, against this test's database."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    from tests.process_helpers import free_ports

    enroll_port, mesh_port = free_ports(2)
    # The ports also go into the child's settings: the enrollment page prints them for the agent.
    env = {**_child_env(), _DEVICE_PORTS_ENV: f"{enroll_port},{mesh_port}", "MESHHUB_ENROLL_PORT": str(enroll_port), "MESHHUB_MESH_PORT": str(mesh_port)}
    log_path = tmp_path / "daphne.log"
    with open(log_path, "wb") as log, listener:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.browser", str(listener.fileno())],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    hub = LiveHub(
        url=f"http://127.0.0.1:{port}",
        ws_url=f"ws://127.0.0.1:{port}",
        port=port,
        process=process,
        log_path=log_path,
        enroll_port=enroll_port,
        mesh_port=mesh_port,
    )
    try:
        _wait_until_serving(hub)
        yield hub
    finally:
        _stop(process)


class _SharedChromium:
    """One Playwright driver + Chromium per pytest session, however many modules import the fixtures.

    A session-scoped fixture imported into two test modules is two fixture definitions to
    pytest (two launches); this count keeps one browser and closes it after the last user.
    """

    def __init__(self) -> None:
        self.users = 0
        self.playwright: Any = None
        self.browser: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def acquire(self) -> tuple[Any, asyncio.AbstractEventLoop]:
        if self.users == 0:
            if not os.path.exists(CHROMIUM):
                pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (`make test` does this as root)")
            from playwright.sync_api import sync_playwright

            self.playwright = sync_playwright().start()
            self.loop = asyncio.get_running_loop()  # playwright's, marked running by the call above
            try:
                self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            except BaseException:
                self.playwright.stop()
                asyncio._set_running_loop(None)
                raise
            asyncio._set_running_loop(None)
        self.users += 1
        assert self.loop is not None
        return self.browser, self.loop

    def release(self) -> None:
        self.users -= 1
        if self.users:
            return
        asyncio._set_running_loop(self.loop)
        try:
            self.browser.close()
        finally:
            self.playwright.stop()  # ends the loop; run_until_complete clears the mark
            self.playwright = self.browser = self.loop = None


_SHARED_CHROMIUM = _SharedChromium()


@pytest.fixture(name="chromium", scope="session")
def chromium_fixture() -> Iterator[tuple[Any, asyncio.AbstractEventLoop]]:
    """Debian's Chromium, headless, launched once per session. Never `playwright install`: it downloads a browser.

    Tests use `browser` (or `page`), not this. Playwright's sync API runs its asyncio loop in
    a greenlet of the main thread and leaves that loop marked as *running* between calls.
    Left so for the whole session, every later test that uses asyncio in the main thread
    (asyncio.run, async_to_sync: tests/test_gateway.py ...) fails with "Cannot run the event
    loop while another loop is running", and Django refuses sync ORM calls. So the mark is
    cleared here and set again only while a test holds `browser` (playwright itself toggles
    it the same way: playwright/_impl/_greenlets.py, sync_api/_context_manager.py).
    """
    yield _SHARED_CHROMIUM.acquire()
    _SHARED_CHROMIUM.release()


@pytest.fixture(name="browser")
def browser_fixture(chromium: tuple[Any, asyncio.AbstractEventLoop]) -> Iterator[Any]:
    """The session's playwright Browser, usable for the length of one test."""
    browser, loop = chromium
    asyncio._set_running_loop(loop)
    # With playwright's loop marked running, Django would refuse the test's ORM calls
    # (and pytest-django's flush) as "async"; the server process keeps the check.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        try:
            yield browser
        finally:
            _close_marked_connections()
            asyncio._set_running_loop(None)


def _close_marked_connections() -> None:
    """Close the DB connections this test opened while playwright's loop was marked running.

    Django keeps connections in an asgiref Local that is thread-local in sync code but a
    context-var store while a loop runs: under the mark the test gets a *second* connection.
    Left open, it makes pytest-django's final DROP DATABASE wait 5 s and fail on PostgreSQL
    ("test_meshhub is being accessed by other users"). One in a transaction is left alone.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


@pytest.fixture(name="page")
def page_fixture(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def login(page: Any, base_url: str, username: str, password: str, path: str = "/login/") -> None:
    """Log in through Django's AuthenticationForm at `path`; the caller asserts where it lands."""
    page.goto(base_url + path)
    form = page.locator("form", has=page.locator('input[name="password"]'))
    form.locator('input[name="username"]').fill(username)
    form.locator('input[name="password"]').fill(password)
    with page.expect_navigation():
        form.locator('[type="submit"]').first.click()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page PNG as test-output/screenshots/<name>.png (name made file-safe)."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") + ".png")
    page.screenshot(path=str(path), full_page=True)
    # Looked at, a page wider than its window was a table pushed out by one long token
    # (the audit page at 1,376 px): every page fits the width it is shown at.
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{name} is {overflow} px wider than the window (screenshot: {path})"
    return path


def _serve(fd: int) -> None:
    """The child: Django + Daphne on the listening socket inherited as `fd`."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
    import django
    from django.conf import settings

    for name, value in json.loads(os.environ.pop(_OVERRIDES_ENV, "{}")).items():
        setattr(settings, name, value)
    django.setup(set_prefix=False)  # the daphne app imports daphne.server: Twisted's asyncio reactor

    from daphne.server import Server, twisted_loop

    from devices import identity
    from hub.asgi import application
    from hub.mesh.enroll import EnrollmentListener
    from hub.mesh.gateway import MeshGateway

    def start_device_listeners() -> None:
        """As runhub does: enrollment and mesh gateway on Daphne's loop, one channel layer."""
        ports = os.environ.get(_DEVICE_PORTS_ENV)
        if not ports:
            return
        enroll_port, mesh_port = (int(p) for p in ports.split(","))
        files = identity.ensure_hub_identity()
        twisted_loop.create_task(EnrollmentListener("127.0.0.1", enroll_port, files).start())
        twisted_loop.create_task(MeshGateway("127.0.0.1", mesh_port, files, application).start())

    Server(
        application=application,
        endpoints=[f"fd:fileno={fd}"],
        signal_handlers=True,
        verbosity=0,
        http_timeout=None,
        websocket_timeout=86400,
        ready_callable=start_device_listeners,
    ).run()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
