"""Firmware updates end to end (issue #15): real agents over real mTLS, real images from
`firmware.simulate make-image`, real signatures, the gateway streaming from the firmware
storage, the rollout driver deciding (driven here as beat would, every 0.2 s).

- A bad release of each kind stops itself: the devices of its first wave revert on their
  own, report `rolled_back` with the reason, and the error threshold pauses the rollout
  before the next wave. A healthy release then completes on every device.
- A device that loops at boot enters safe mode, refuses actuation and offers, and leaves it
  after `bootguard/clear`; a forced rollback returns a device to its previous image.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import call_command
from django.db import close_old_connections
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from conftest import make_token_client
from devices import identity
from devices.models import Device
from firmware import simulate
from firmware.agent import port as agent_port
from firmware.agent.core import enroll as agent_enroll
from firmware.agent.core.agent import Agent
from firmware.agent.hardware import VirtualHardware
from firmware.agent.profiles import PROFILES
from ota import deployments, driver, releases
from ota import statemachine as sm
from ota.frames import complete_payload
from ota.models import Deployment, DeviceFirmware, Rollout
from tests.mesh_helpers import wait_for
from tests.test_gateway import RawDevice, listeners  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def enroll_device(listeners: Any, node_id: str, state_dir: Path) -> Path:  # noqa: F811
    """Through the real enrollment port, as a thermostat (the type releases are built for)."""
    enroll, gateway = listeners
    ticket = identity.create_enrollment(Actor("user", "alice"), node_id, device_type="thermostat").as_dict()
    agent_enroll.enroll(agent_port, "127.0.0.1", enroll.port, node_id, ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
    hub = json.loads((state_dir / "hub.json").read_text())
    hub["mesh_port"] = gateway.port  # the test gateway listens on a free port
    (state_dir / "hub.json").write_text(json.dumps(hub))
    return state_dir


class Fleet:
    """Simulated thermostats, each a real agent thread with quick beacons and retries."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.agents: dict[str, Agent] = {}
        self.threads: list[threading.Thread] = []

    def start(self, state_dir: Path, **options: Any) -> Agent:
        agent = Agent(
            agent_port,
            str(state_dir),
            PROFILES["thermostat"],
            VirtualHardware(PROFILES["thermostat"], seed=1),
            report_s=1.0,
            beacon_s=0.2,
            retry_delay_s=0.2,
            **options,
        )
        self.agents[agent.node_id] = agent
        thread = threading.Thread(target=agent.run, args=(self.stop.is_set,), daemon=True, name=agent.node_id)
        thread.start()
        self.threads.append(thread)
        return agent

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)


@pytest.fixture(autouse=True)
def _enroll_many(settings: Any) -> None:
    settings.ENROLL_ATTEMPTS_PER_MINUTE = 100  # twenty devices enroll from one address here


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    running = Fleet()
    yield running
    running.close()


@pytest.fixture
def ota_api(django_user_model: Any) -> APIClient:
    user = django_user_model.objects.create_user("olga", password="olga-Pass-123")
    return make_token_client(user, ["ota", "read-status", "command", "reset"])[0]


@pytest.fixture(autouse=True)
def _own_firmware_storage(settings: Any, tmp_path: Path) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "firmware": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "fw")}},
    }


def publish(tmp_path: Path, version: str, behaviour: str, size: int = 20_000) -> int:
    """make-image, ota sign, ota upload: the release id."""
    img = tmp_path / f"{version}.img"
    assert simulate.main(["make-image", "--version", version, "--behaviour", behaviour, "--size", str(size), "--out", str(img)]) == 0
    manifest = tmp_path / f"{version}.json"
    call_command("ota", "sign", "--image", str(img), "--version", version, "--device-type", "thermostat", "--out", str(manifest))
    with img.open("rb") as handle:
        return releases.store_release(Actor.system("test"), releases.Upload(manifest.read_bytes(), handle, img.name)).pk


def drive_until(rollout_id: int, done: Callable[[Rollout], bool], timeout_s: float = 90) -> Rollout:
    """What beat does every few seconds, every 0.2 s, until `done`."""
    deadline = time.monotonic() + timeout_s
    while True:
        close_old_connections()
        driver.drive(rollout_id)
        rollout = Rollout.objects.get(pk=rollout_id)
        if done(rollout):
            return rollout
        if time.monotonic() > deadline:
            states = list(Deployment.objects.filter(rollout_id=rollout_id).values_list("device__node_id", "state", "reason"))
            raise AssertionError(f"rollout {rollout_id} is {rollout.state} ({rollout.reason}); deployments: {states}")
        time.sleep(0.2)


def start_fleet(listeners: Any, fleet: Fleet, tmp_path: Path, count: int) -> list[str]:  # noqa: F811
    names = [f"thermo-{i:02d}" for i in range(count)]
    for name in names:
        fleet.start(enroll_device(listeners, name, tmp_path / name))
    wait_for(lambda: Device.objects.filter(node_id__in=names, online=True).count() == count, timeout_s=60)
    wait_for(lambda: DeviceFirmware.objects.filter(device__node_id__in=names, version="1.0.0").count() == count, timeout_s=30)  # their boot frames
    return names


BAD = {  # kind: (the deployment's reason on the hub, the device's own rollback reason)
    "crash-at-boot": ("crashed at boot", "crashed at boot"),
    # The device reverts right after its failing beacon: the hub ends the deployment on that
    # beacon ("health check failed after …") or, when the reboot's session is handled first,
    # on the rollback report ("the device rolled back: … failed its health check"). Both
    # name the health check; which comes first is a race between two sessions.
    "fail-health": ("health check", "failed its health check"),
    "no-network": ("", "could not reach the hub by the deadline"),
}


def test_a_bad_release_of_each_kind_stops_itself_and_a_good_one_completes(
    listeners: Any,  # noqa: F811
    fleet: Fleet,
    tmp_path: Path,
    ota_api: APIClient,
) -> None:
    names = start_fleet(listeners, fleet, tmp_path, 20)
    for n, (behaviour, (words, device_words)) in enumerate(BAD.items()):
        version = f"1.1.{n}"
        release_id = publish(tmp_path, version, behaviour)
        spec = {"release": release_id, "targets": {"device_type": "thermostat"}, "waves": [3, "100%"], "error_threshold": 0.2, "deadline_s": 10}
        created = ota_api.post("/api/v1/ota/rollouts/", spec, format="json")
        assert created.status_code == 201, created.content
        rollout = drive_until(created.json()["id"], lambda r: r.state != "running")
        assert rollout.state == "paused" and "finished deployments failed" in rollout.reason and "> error threshold 20%" in rollout.reason, rollout.reason
        # A pause stops new offers (a device of the first wave chosen but not offered yet
        # stays queued) and lets the deployments already offered finish.
        drive_until(
            rollout.pk, lambda r: not Deployment.objects.filter(rollout=r, wave=0).exclude(state__in=["queued", "rolled_back", "failed", "succeeded"]).exists()
        )
        # How many of the wave took the image before the first failure paused the rollout
        # depends on how fast that failure came (one, two or three): each of them reverted.
        first = [d for d in Deployment.objects.filter(rollout=rollout, wave=0).select_related("device") if d.state != "queued"]
        assert len(first) >= 1 and {d.state for d in first} == {"rolled_back"}, [(d.state, d.reason) for d in first]
        assert all(words in d.reason for d in first), [d.reason for d in first]
        assert set(Deployment.objects.filter(rollout=rollout, wave=1).values_list("state", flat=True)) == {"queued"}, "paused before the next wave"
        for deployment in first:
            agent = fleet.agents[deployment.device.node_id]
            wait_for(lambda agent=agent: agent.fw.version == "1.0.0" and agent.fw.slot == "a" and not agent.fw.pending)
            # The hub learns it from the device's next boot frame (after a no-network revert,
            # the deployment may have timed out on the hub first).
            wait_for(
                lambda d=deployment, words=device_words: DeviceFirmware.objects.filter(
                    device=d.device, version="1.0.0", slot="a", last_boot_reason="rollback", last_rollback_reason__contains=words
                ).exists()
            )
            firmware = DeviceFirmware.objects.get(device=deployment.device)
            assert device_words in firmware.last_rollback_reason, firmware.last_rollback_reason
        assert ota_api.post(f"/api/v1/ota/rollouts/{rollout.pk}/abort/").json()["state"] == "aborted"

    good = publish(tmp_path, "1.2.0", "healthy")
    created = ota_api.post("/api/v1/ota/rollouts/", {"release": good, "targets": {"all": True}, "waves": [3, "50%", "100%"]}, format="json").json()
    rollout = drive_until(created["id"], lambda r: r.state != "running", timeout_s=120)
    assert rollout.state == "completed", rollout.reason
    outcomes = list(Deployment.objects.filter(rollout=rollout).values_list("device__node_id", "state", "reason"))
    failed = [o for o in outcomes if o[1] != "succeeded"]
    history = {
        o[0]: list(AuditEvent.objects.filter(target_id=o[0], action__startswith="ota.").order_by("seq").values_list("action", "reason", "details"))
        for o in failed
    }
    assert failed == [] and len(outcomes) == 20, history
    wait_for(lambda: DeviceFirmware.objects.filter(device__node_id__in=names, version="1.2.0", slot="b").count() == 20)
    wait_for(lambda: all(a.fw.version == "1.2.0" and a.fw.state["valid"]["b"] for a in fleet.agents.values()))
    assert AuditEvent.objects.filter(action="ota.deployment.succeeded", decision="allow").count() == 20
    body = ota_api.get("/api/v1/devices/thermo-00/").json()
    assert body["firmware"]["version"] == "1.2.0" and body["firmware"]["previous_version"] == "1.0.0"


def test_a_boot_loop_enters_safe_mode_and_bootguard_clear_leaves_it(
    listeners: Any,  # noqa: F811
    fleet: Fleet,
    tmp_path: Path,
    ota_api: APIClient,
) -> None:
    state_dir = enroll_device(listeners, "thermo-00", tmp_path / "thermo-00")
    agent = fleet.start(state_dir, boot_faults=4)  # the confirmed image fails its next four boots
    wait_for(lambda: DeviceFirmware.objects.filter(device__node_id="thermo-00", safe_mode=True).exists(), timeout_s=60)
    firmware = DeviceFirmware.objects.get(device__node_id="thermo-00")
    assert firmware.diagnostic["failures_in_10_min"] == 4 and "crashed at boot" in firmware.diagnostic["last_error"]
    assert AuditEvent.objects.filter(action="ota.safe_mode", decision="deny", target_id="thermo-00").exists()
    refused = ota_api.post("/api/v1/devices/thermo-00/commands/", {"action": "set", "capability": "setpoint", "value": 21}, format="json")
    assert refused.status_code == 400 and refused.json()["guard"] == "ota.safe_mode"
    release_id = publish(tmp_path, "1.2.0", "healthy")
    created = ota_api.post("/api/v1/ota/rollouts/", {"release": release_id, "targets": {"devices": ["thermo-00"]}, "waves": ["100%"]}, format="json").json()
    assert driver.drive(created["id"]).offered == [], "no offer to a device in safe mode"

    assert ota_api.post("/api/v1/devices/thermo-00/bootguard/clear/", {"reason": "fixed the power supply"}, format="json").status_code == 202
    wait_for(lambda: not DeviceFirmware.objects.get(device__node_id="thermo-00").safe_mode, timeout_s=30)
    assert not agent.fw.safe_mode and agent.fw.state["consecutive_fails"] == 0
    assert ota_api.post("/api/v1/devices/thermo-00/commands/", {"action": "set", "capability": "setpoint", "value": 21}, format="json").status_code == 201
    rollout = drive_until(created["id"], lambda r: r.state != "running")
    assert rollout.state == "completed"


def test_a_forced_rollback_returns_the_device_to_its_previous_image(
    listeners: Any,  # noqa: F811
    fleet: Fleet,
    tmp_path: Path,
    ota_api: APIClient,
) -> None:
    start_fleet(listeners, fleet, tmp_path, 1)
    created = ota_api.post(
        "/api/v1/ota/rollouts/", {"release": publish(tmp_path, "1.2.0", "healthy"), "targets": {"all": True}, "waves": ["100%"]}, format="json"
    ).json()
    assert drive_until(created["id"], lambda r: r.state != "running").state == "completed"
    sent = ota_api.post("/api/v1/devices/thermo-00/ota/rollback/", {"reason": "customer complaint"}, format="json")
    assert sent.status_code == 202
    acknowledged = time.monotonic()
    wait_for(lambda: DeviceFirmware.objects.filter(device__node_id="thermo-00", version="1.0.0", slot="a", last_boot_reason="rollback").exists(), timeout_s=90)
    assert time.monotonic() - acknowledged < 90
    assert "customer complaint" in DeviceFirmware.objects.get(device__node_id="thermo-00").last_rollback_reason
    assert json.loads((tmp_path / "thermo-00" / "boot.json").read_text())["active"] == "a"


def test_a_forged_or_replayed_ota_complete_is_refused_and_audited(
    listeners: Any,  # noqa: F811
    tmp_path: Path,
    ota_api: APIClient,
) -> None:
    """A raw session in the device's name (its real certificate and key) in the health check
    of a deployment: an ota.complete signed by another key, for another deployment, or sent
    again after it finalized is refused with `bad_complete` and a deny; the valid one counts."""
    state_dir = enroll_device(listeners, "thermo-00", tmp_path / "thermo-00")
    device = RawDevice(state_dir, listeners[1].port)
    device.hello()
    release_id = publish(tmp_path, "1.2.0", "healthy")
    created = ota_api.post(
        "/api/v1/ota/rollouts/", {"release": release_id, "targets": {"all": True}, "waves": ["100%"], "health_beacons": 1}, format="json"
    ).json()
    deployment = Deployment.objects.get(rollout_id=created["id"])
    size = deployment.rollout.release.size
    for event in (sm.Offer(), sm.Accepted(0), sm.ChunkAcked(size), sm.Verified(True), sm.Rebooting(), sm.Booted("b", "1.2.0", "ota"), sm.HealthBeacon(True)):
        deployments.apply(deployment.pk, event, sent_offset=size)
    device_key = device_key_of(state_dir)

    def complete(key: ec.EllipticCurvePrivateKey, deployment_id: int) -> dict[str, Any]:
        return signed_complete(device, key, deployment_id)

    device.send(complete(ec.generate_private_key(ec.SECP256R1()), deployment.pk))  # forged: not the device's key
    assert device.error()["code"] == "bad_complete"
    device.send(complete(device_key, deployment.pk + 1000))  # the device's key, another deployment
    assert device.error()["code"] == "bad_complete"
    assert Deployment.objects.get(pk=deployment.pk).state == "health_check"
    good = complete(device_key, deployment.pk)
    device.send(good)
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).state == "succeeded")
    device.send(good)  # the same frame again: the session's anti-replay window
    assert device.error()["code"] in ("replayed_seq", "nonce_reused")
    device.send(complete(device_key, deployment.pk))  # a fresh frame, valid signature, after the end
    assert device.error()["code"] == "bad_complete"
    denies = list(AuditEvent.objects.filter(action="ota.complete", decision="deny").order_by("seq").values_list("reason", flat=True))
    assert len(denies) == 3 and "signature is not the device key's" in denies[0] and "not in its health check" in denies[2], denies
    device.sock.close()


def device_key_of(state_dir: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((state_dir / "key.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def signed_complete(device: RawDevice, key: ec.EllipticCurvePrivateKey, deployment_id: int, beacons: int = 1) -> dict[str, Any]:
    """An ota.complete as the agent signs it (docs/ota.md), for thermo-00 on 1.2.0 in slot b."""
    body: dict[str, Any] = {"deployment": deployment_id, "version": "1.2.0", "slot": "b", "beacons": beacons}
    frame = device.frame("ota.complete", body)
    signature = key.sign(complete_payload("thermo-00", body, frame["issued_at"]), ec.ECDSA(hashes.SHA256()))
    body["signature"] = base64.b64encode(signature).decode()
    return frame


def test_a_reconnect_during_the_health_check_is_not_a_reboot(
    listeners: Any,  # noqa: F811
    tmp_path: Path,
    ota_api: APIClient,
) -> None:
    """Every session opens with the boot frame. The same boot told again after a reconnect
    keeps the beacons counted so far; a new boot (a higher boot_epoch) starts them over."""
    state_dir = enroll_device(listeners, "thermo-00", tmp_path / "thermo-00")
    release_id = publish(tmp_path, "1.2.0", "healthy")
    created = ota_api.post(
        "/api/v1/ota/rollouts/", {"release": release_id, "targets": {"all": True}, "waves": ["100%"], "health_beacons": 3}, format="json"
    ).json()
    deployment = Deployment.objects.get(rollout_id=created["id"])
    size = deployment.rollout.release.size
    for event in (sm.Offer(), sm.Accepted(0), sm.ChunkAcked(size), sm.Verified(True), sm.Rebooting()):
        deployments.apply(deployment.pk, event, sent_offset=size)
    boot = {"slot": "b", "version": "1.2.0", "reason": "ota", "consecutive_fails": 0, "pending": True, "deployment": deployment.pk, "previous_version": "1.0.0"}

    def session(epoch: int, beacons: int) -> RawDevice:
        device = RawDevice(state_dir, listeners[1].port)
        device.hello()
        device.send(device.frame("boot", {**boot, "boot_epoch": epoch}))
        for _ in range(beacons):
            device.send(device.frame("health", {"deployment": deployment.pk, "ok": True}))
        device.send(device.frame("ping", {}))
        while device.read()["type"] != "pong":
            pass
        return device

    session(7, 2).sock.close()
    assert Deployment.objects.get(pk=deployment.pk).beacons == 2
    device = session(7, 1)  # the same boot after a reconnect: 3 beacons now
    assert Deployment.objects.get(pk=deployment.pk).beacons == 3
    device.sock.close()
    device = session(8, 1)  # a reboot: they count again
    assert Deployment.objects.get(pk=deployment.pk).beacons == 1
    device.send(signed_complete(device, device_key_of(state_dir), deployment.pk))
    device.send(device.frame("health", {"deployment": deployment.pk, "ok": True}))
    device.send(device.frame("health", {"deployment": deployment.pk, "ok": True}))
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).state == "succeeded")
    device.sock.close()


MB = 1024 * 1024


def transferred(rollout_id: int, at_least: int) -> Callable[[Rollout], bool]:
    return lambda r: Deployment.objects.filter(rollout_id=rollout_id, state="transferring", offset__gte=at_least).exists()


def assert_resumed_and_installed(agent: Agent, cut_at: int) -> None:
    """The first offer started at 0; a later one resumed at or past the offset the hub had
    recorded when the link went (the device never fetched those bytes again)."""
    assert agent.fw.resumed_at[0] == 0 and max(agent.fw.resumed_at[1:], default=0) >= cut_at > 0, (agent.fw.resumed_at, cut_at)
    wait_for(lambda: agent.fw.version == "1.2.0" and agent.fw.slot == "b" and agent.fw.state["valid"]["b"] and not agent.fw.pending)
    assert agent.fw.state["valid"]["a"], "the previous image stays as the fallback"


def test_a_device_cut_mid_transfer_resumes_from_the_acknowledged_offset(
    listeners: Any,  # noqa: F811
    fleet: Fleet,
    tmp_path: Path,
    ota_api: APIClient,
    settings: Any,
) -> None:
    from tests.tcp_proxy import TcpProxy

    settings.OTA_PROGRESS_SAVE_S = 0.05
    with TcpProxy("127.0.0.1", listeners[1].port) as link:
        state_dir = enroll_device(listeners, "thermo-00", tmp_path / "thermo-00")
        hub = json.loads((state_dir / "hub.json").read_text())
        (state_dir / "hub.json").write_text(json.dumps({**hub, "mesh_port": link.port}))
        agent = fleet.start(state_dir)
        wait_for(lambda: DeviceFirmware.objects.filter(device__node_id="thermo-00", version="1.0.0").exists(), timeout_s=30)
        release_id = publish(tmp_path, "1.2.0", "healthy", size=4 * MB)
        created = ota_api.post("/api/v1/ota/rollouts/", {"release": release_id, "targets": {"all": True}, "waves": ["100%"]}, format="json").json()
        drive_until(created["id"], transferred(created["id"], MB))
        link.cut()  # a pulled cable: the connection is reset, reconnecting fails for a while
        cut_at = Deployment.objects.get(rollout_id=created["id"]).offset
        wait_for(lambda: not Device.objects.get(node_id="thermo-00").online)
        link.restore()
        rollout = drive_until(created["id"], lambda r: r.state != "running", timeout_s=120)
    assert rollout.state == "completed", rollout.reason
    assert_resumed_and_installed(agent, cut_at)


def test_a_gateway_killed_mid_transfer_resumes_from_the_acknowledged_offset(fleet: Fleet, tmp_path: Path, ota_api: APIClient) -> None:
    """`runmesh` as a real process, SIGKILLed while it streams an image: the deployment
    still says transferring; the restarted gateway's sweep takes it over once it has been
    silent and offers it again from the recorded offset."""
    import signal

    from tests.process_helpers import free_ports
    from tests.test_gateway_processes import start_runmesh

    enroll_port, mesh_port = free_ports(2)
    env = {"MESHHUB_OTA_PROGRESS_SAVE_S": "0.05", "MESHHUB_FIRMWARE_STORAGE_OPTIONS": json.dumps({"location": str(tmp_path / "fw")})}
    gateway = start_runmesh(enroll_port, mesh_port, env)
    try:
        ticket = identity.create_enrollment(Actor("user", "alice"), "thermo-00", device_type="thermostat").as_dict()
        state_dir = tmp_path / "thermo-00"
        agent_enroll.enroll(agent_port, "127.0.0.1", enroll_port, "thermo-00", ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
        hub = json.loads((state_dir / "hub.json").read_text())
        (state_dir / "hub.json").write_text(json.dumps({**hub, "mesh_port": mesh_port}))
        agent = fleet.start(state_dir)
        wait_for(lambda: DeviceFirmware.objects.filter(device__node_id="thermo-00", version="1.0.0").exists(), timeout_s=30)
        release_id = publish(tmp_path, "1.2.0", "healthy", size=4 * MB)
        created = ota_api.post("/api/v1/ota/rollouts/", {"release": release_id, "targets": {"all": True}, "waves": ["100%"]}, format="json").json()
        drive_until(created["id"], transferred(created["id"], MB))
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
        cut_at = Deployment.objects.get(rollout_id=created["id"]).offset
        assert Deployment.objects.get(rollout_id=created["id"]).state == "transferring"  # nobody told the row
        gateway = start_runmesh(enroll_port, mesh_port, env)
        rollout = drive_until(created["id"], lambda r: r.state != "running", timeout_s=120)
        assert rollout.state == "completed", rollout.reason
        assert_resumed_and_installed(agent, cut_at)
    finally:
        fleet.close()
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
