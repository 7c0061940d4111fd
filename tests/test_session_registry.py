"""Frame handlers that apps register (devices.session.frames), driven over a real mTLS
session: the way OTA and later apps add device frame types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from devices.session import DeviceScope, FrameRegistry, frames
from tests.mesh_helpers import wait_for
from tests.test_gateway import RawDevice, deny_codes, enroll_device, listeners  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def without(*frame_types: str) -> Iterator[None]:
    """The registry without these types for a while (the OTA app handles them all now),
    as it was before an app registered them; restored afterwards."""
    saved = [frames.get(t) for t in frame_types]
    for frame_type in frame_types:
        frames.unregister(frame_type)
    try:
        yield
    finally:
        for frame_type, handler in zip(frame_types, saved, strict=True):
            frames.unregister(frame_type)
            if handler is not None:
                frames.register(frame_type, handler.scope, handler.handle, app=handler.app)


OTA_TYPES = ("boot", "health", "ota.accept", "ota.reject", "ota.chunk_ack", "ota.verify", "ota.status", "ota.complete")


@pytest.fixture
def boot_frames() -> Iterator[list[dict[str, Any]]]:
    """A stand-in app that handles `boot` frames: registered through the public registry
    in place of the OTA app's handler, which is back after the test."""
    seen: list[dict[str, Any]] = []

    async def on_boot(session: Any, envelope: Any) -> None:
        seen.append({"node_id": session.node_id, **envelope.body})
        await session.send_frame("ack", {"ref": envelope.id})

    with without("boot"):
        frames.register("boot", DeviceScope.OTA, on_boot, app="test-ota")
        yield seen


def open_device(listeners: tuple[Any, Any], tmp_path: Path) -> RawDevice:  # noqa: F811
    device = RawDevice(enroll_device(listeners, "sensor-1", tmp_path / "sensor-1"), listeners[1].port)
    return device


def test_it_routes_a_registered_frame_type_to_its_app_and_grants_its_scope(
    listeners: tuple[Any, Any],  # noqa: F811
    tmp_path: Path,
    boot_frames: list[dict[str, Any]],
) -> None:
    device = open_device(listeners, tmp_path)
    device.send(device.frame("hello", {"firmware_version": "raw-1"}))
    session = device.read()
    assert session["body"]["scopes"] == ["answer", "ota", "report", "session"], "renew only when a renewal is due"
    device.token = session["body"]["token"]
    device.send(device.frame("boot", {"slot": "b", "reason": "ota"}))
    answer = device.read()
    assert answer["type"] == "ack" and answer["body"]["ref"] == f"t-{device.seq}"
    assert boot_frames == [{"node_id": "sensor-1", "slot": "b", "reason": "ota"}]
    device.sock.close()


def test_it_answers_not_supported_for_a_device_frame_type_no_app_handles(listeners: tuple[Any, Any], tmp_path: Path) -> None:  # noqa: F811
    with without("boot"):
        device = open_device(listeners, tmp_path)
        device.hello()
        device.send(device.frame("boot", {"slot": "a"}))
        assert device.error()["code"] == "not_supported"
        assert wait_for(lambda: "not_supported" in deny_codes())
        device.sock.close()


def test_a_session_keeps_the_scopes_it_was_granted(listeners: tuple[Any, Any], tmp_path: Path) -> None:  # noqa: F811
    """A handler registered after the session opened needs a scope this session was never
    granted: the scope is checked on every frame, so the frame is refused and audited."""
    with without(*OTA_TYPES):
        device = open_device(listeners, tmp_path)
        device.hello()  # granted without `ota`: no OTA handler is registered now

        async def on_health(session: Any, envelope: Any) -> None:
            raise AssertionError("must not run for a session without the ota scope")

        frames.register("health", DeviceScope.OTA, on_health, app="test-ota")
        try:
            device.send(device.frame("health", {"checks": "ok"}))
            error = device.error()
            assert (error["code"], error["reason"]) == ("forbidden_scope", "'health' frames need scope 'ota', which this session does not grant")
            assert wait_for(lambda: "forbidden_scope" in deny_codes())
            device.send(device.frame("state", {"values": {"temperature": 20.5}}))
            assert device.read()["type"] == "ack", "the session goes on"
        finally:
            device.sock.close()


def test_a_device_may_ask_for_a_new_certificate_only_when_the_hub_wants_one(listeners: tuple[Any, Any], tmp_path: Path) -> None:  # noqa: F811
    """`renew` is withheld unless the certificate is due: a device cannot have
    certificates issued whenever it likes (the expiring case is test_gateway's renewal)."""
    from devices.models import Certificate
    from tests.mesh_helpers import make_csr

    device = open_device(listeners, tmp_path)
    device.hello()
    _, csr = make_csr("sensor-1")
    device.send(device.frame("cert.renew", {"csr": csr}))
    error = device.error()
    assert (error["code"], error["reason"]) == ("forbidden_scope", "'cert.renew' frames need scope 'renew', which this session does not grant")
    assert Certificate.objects.filter(device__node_id="sensor-1").count() == 1, "no certificate was issued"
    device.sock.close()


def test_the_registry_refuses_hub_only_types_unknown_types_and_a_second_owner() -> None:
    registry = FrameRegistry()

    async def handler(session: Any, envelope: Any) -> None:
        return None

    with pytest.raises(ImproperlyConfigured, match="'reset', which is not a frame type devices may send"):
        registry.register("reset", DeviceScope.ANSWER, handler, app="mallory")
    with pytest.raises(ImproperlyConfigured, match="not a frame type devices may send"):
        registry.register("teleport", DeviceScope.REPORT, handler, app="mallory")
    registry.register("boot", DeviceScope.OTA, handler, app="ota")

    async def other(session: Any, envelope: Any) -> None:
        return None

    with pytest.raises(ImproperlyConfigured, match="already handled by ota"):
        registry.register("boot", DeviceScope.OTA, other, app="mallory")
    assert registry.types() == ["boot"] and registry.scopes() == ["ota"]


def test_the_devices_app_registers_its_own_frames_on_the_same_registry() -> None:
    by_app: dict[str, list[str]] = {}
    for frame_type in frames.types():
        handler = frames.get(frame_type)
        assert handler is not None
        by_app.setdefault(handler.app, []).append(frame_type)
    assert by_app == {"devices": ["ack", "cert.renew", "error", "event", "hello", "ping", "pong", "result", "state"], "ota": sorted(OTA_TYPES)}
    assert {t: str(frames.get(t).scope) for t in ("hello", "state", "ack", "cert.renew")} == {  # type: ignore[union-attr]
        "hello": "session",
        "state": "report",
        "ack": "answer",
        "cert.renew": "renew",
    }
