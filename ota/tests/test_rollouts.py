"""Rollouts through the API (ARCHITECTURE §9.1): creation with its checks, every target
listed from the start, the operator controls and who may use them, the driver's wave
verdicts and error threshold over real deployment rows moved by the state machine, and
the interlock on commands while a device installs or sits in safe mode."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor, record
from conftest import make_token_client
from devices.models import Device
from ota import deployments, driver
from ota import statemachine as sm
from ota.models import Deployment, DeploymentState, DeviceFirmware, FirmwareRelease, Rollout
from tests.factories import GroupFactory, relay, thermostat
from tests.lock_helpers import Beside, postgresql_only

pytestmark = pytest.mark.django_db

URL = "/api/v1/ota/rollouts/"


@pytest.fixture
def ota_api(django_user_model: Any) -> APIClient:
    user = django_user_model.objects.create_user("olga", password="olga-Pass-123")
    return make_token_client(user, ["ota", "read-status", "command"])[0]


def release(version: str = "1.2.0", types: tuple[str, ...] = ("thermostat",), counter: int = 0) -> FirmwareRelease:
    now = timezone.now()
    return FirmwareRelease.objects.create(
        name="thermostat-fw",
        version=version,
        sha256=hashlib.sha256(version.encode()).hexdigest(),
        size=10_000,
        device_types=list(types),
        security_counter=counter,
        manifest_created_at=now,
        expires_at=now + timedelta(days=30),
        document={},
        key_id="00" * 8,
        blob="releases/none.img",
        uploaded_by="user:olga",
    )


def fleet(n: int) -> list[Device]:
    devices = [thermostat(f"thermo-{i:02d}") for i in range(n)]
    Device.objects.filter(pk__in=[d.pk for d in devices]).update(online=True)
    return devices


def create(api: APIClient, **body: Any) -> Any:
    return api.post(URL, body, format="json")


def test_a_rollout_lists_every_target_from_the_start_in_its_waves(ota_api: APIClient) -> None:
    fleet(10)
    group = GroupFactory(name="greenhouse")
    group.members.add(*Device.objects.filter(node_id__in=["thermo-00", "thermo-01"]))
    r = release()
    answer = create(ota_api, release=r.pk, targets={"groups": ["greenhouse"], "device_type": "thermostat"}, waves=[1, "50%", "100%"], start=False)
    assert answer.status_code == 201, answer.content
    body = ota_api.get(f"{URL}{answer.json()['id']}/").json()
    assert body["state"] == "draft" and body["counts"]["queued"] == 10
    assert sorted(d["node_id"] for d in body["deployments"]) == [f"thermo-{i:02d}" for i in range(10)]
    assert sorted(d["wave"] for d in body["deployments"]) == [0] + [1] * 4 + [2] * 5
    assert AuditEvent.objects.filter(action="ota.rollout.create", decision="allow", actor_id__endswith="/olga").exists()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"targets": {"devices": ["nope"]}}, "targets.devices[0]", "no device 'nope'"),
        ({"targets": {"groups": ["nope"]}}, "targets.groups[0]", "no group 'nope'"),
        ({"targets": {"planets": True}}, "targets.planets", "is not a target kind"),
        ({"targets": {"device_type": "relay"}}, "targets", "selects no provisioned device that runs the release (thermostat)"),
        ({"targets": {"devices": ["relay-1"]}}, "targets.devices[0]", "device relay-1 is a relay; the release runs on thermostat"),
        ({"targets": {"all": True}, "waves": ["50%", "10%", "100%"]}, "waves[1]", "cumulative"),
        ({"targets": {"all": True}, "waves": [1, "50%"]}, "waves[1]", 'the last wave must be "100%"'),
        ({"targets": {"all": True}, "error_threshold": 2}, "error_threshold", "from 0 to 1"),
        ({"targets": {"all": True}, "release": 999}, "release", "no release 999"),
    ],
)
def test_a_rollout_that_cannot_work_is_refused_naming_the_field(ota_api: APIClient, body: dict[str, Any], field: str, words: str) -> None:
    fleet(2)
    relay("relay-1")
    r = release()
    answer = create(ota_api, **{"release": r.pk, **body})
    assert answer.status_code == 400, answer.content
    assert answer.json()["field"] == field and words in answer.json()["reason"], answer.json()
    assert not Rollout.objects.exists()


def test_only_a_token_with_the_ota_scope_creates_or_controls_rollouts(ota_api: APIClient, bob_api: APIClient) -> None:
    fleet(2)
    r = release()
    denied = create(bob_api, release=r.pk, targets={"all": True})
    assert denied.status_code == 403 and not Rollout.objects.exists()
    rollout_id = create(ota_api, release=r.pk, targets={"all": True}).json()["id"]
    assert bob_api.post(f"{URL}{rollout_id}/pause/").status_code == 403
    assert AuditEvent.objects.filter(action="ota.rollout.pause", decision="deny").exists()
    assert bob_api.get(f"{URL}{rollout_id}/").status_code == 200  # reading is read-status


def test_pause_resume_abort_and_the_states_they_apply_in(ota_api: APIClient) -> None:
    fleet(3)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}).json()["id"]
    assert ota_api.post(f"{URL}{rollout_id}/resume/").status_code == 409
    assert ota_api.post(f"{URL}{rollout_id}/pause/").json()["state"] == "paused"
    assert ota_api.post(f"{URL}{rollout_id}/resume/").json()["state"] == "running"
    assert ota_api.post(f"{URL}{rollout_id}/approve/").status_code == 409  # nothing awaits approval
    assert ota_api.post(f"{URL}{rollout_id}/abort/").json()["state"] == "aborted"
    assert set(Deployment.objects.filter(rollout_id=rollout_id).values_list("state", flat=True)) == {"aborted"}
    assert ota_api.post(f"{URL}{rollout_id}/resume/").status_code == 409
    actions = list(AuditEvent.objects.filter(action__startswith="ota.rollout.", decision="allow").order_by("seq").values_list("action", flat=True))
    assert actions == ["ota.rollout.create", "ota.rollout.pause", "ota.rollout.resume", "ota.rollout.abort"]


@pytest.mark.parametrize("path", ["null,null/abort/", "x/pause/", "1.5/resume/", "-1/approve/", "abc/"])
def test_a_rollout_or_release_id_that_is_not_a_number_is_not_found(ota_api: APIClient, path: str) -> None:
    # schemathesis found these answered 500 (int("null,null") inside the control)
    assert ota_api.post(f"{URL}{path}").status_code == 404
    assert ota_api.get(f"/api/v1/ota/releases/{path.split('/')[0]}/").status_code == 404


def walk(deployment: Deployment, *events: sm.Event) -> None:
    for event in events:
        deployments.apply(deployment.pk, event)


def succeed(deployment: Deployment) -> None:
    size = deployment.rollout.release.size
    chunk = sm.DeploymentParams(version="x", size=1).chunk_size
    acks = [sm.ChunkAcked(min(size, (i + 1) * chunk * 4)) for i in range(-(-size // (chunk * 4)))]
    walk(deployment, sm.Offer(), sm.Accepted(0))
    for ack in acks:
        state = deployments.to_state(Deployment.objects.get(pk=deployment.pk), sent_offset=size)
        deployments.apply(deployment.pk, ack, sent_offset=max(state.sent_offset, ack.offset))
    walk(deployment, sm.Verified(True), sm.Rebooting())
    walk(deployment, sm.Booted("b", deployment.rollout.release.version, "ota"), *[sm.HealthBeacon(True)] * 3, sm.Completed(True))


def fail(deployment: Deployment, why: str = "crash at boot") -> None:
    walk(deployment, sm.Offer(), sm.Rejected(f"incompatible: {why}"))


def test_the_driver_advances_waves_on_success_and_pauses_on_the_error_threshold(ota_api: APIClient) -> None:
    fleet(10)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=[2, "100%"], error_threshold=0.2, min_sample=2).json()["id"]
    rollout = Rollout.objects.get(pk=rollout_id)
    first = list(Deployment.objects.filter(rollout=rollout, wave=0).select_related("rollout__release"))
    assert len(first) == 2
    report = driver.drive(rollout_id)
    assert sorted(report.offered) == sorted(d.device.node_id for d in first), "only the first wave is offered"
    succeed(first[0])
    assert driver.drive(rollout_id).verdict.startswith("wait")
    succeed(first[1])
    driver.drive(rollout_id)
    rollout.refresh_from_db()
    assert (rollout.state, rollout.wave) == ("running", 1)
    second = list(Deployment.objects.filter(rollout=rollout, wave=1).select_related("rollout__release"))
    for deployment in second[:3]:
        fail(deployment)
    driver.drive(rollout_id)
    rollout.refresh_from_db()
    assert rollout.state == "paused" and "3 of 5 finished deployments failed" in rollout.reason, rollout.reason
    assert AuditEvent.objects.filter(action="ota.rollout.paused", decision="deny").exists()
    assert driver.drive(rollout_id).offered == [], "a paused rollout offers nothing"


def test_with_approval_the_next_wave_waits_for_an_operator(ota_api: APIClient) -> None:
    fleet(4)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=[1, "100%"], approval=True).json()["id"]
    (first,) = Deployment.objects.filter(rollout_id=rollout_id, wave=0).select_related("rollout__release")
    driver.drive(rollout_id)
    succeed(first)
    driver.drive(rollout_id)
    rollout = Rollout.objects.get(pk=rollout_id)
    assert (rollout.wave, rollout.awaiting_approval) == (0, True) and "waiting for approval" in rollout.reason
    assert driver.drive(rollout_id).offered == []
    assert ota_api.post(f"{URL}{rollout_id}/approve/").json()["wave"] == 1
    assert len(driver.drive(rollout_id).offered) == 3


def test_the_last_wave_passing_completes_the_rollout(ota_api: APIClient) -> None:
    fleet(2)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=["100%"]).json()["id"]
    for deployment in Deployment.objects.filter(rollout_id=rollout_id).select_related("rollout__release"):
        succeed(deployment)
    driver.drive(rollout_id)
    body = ota_api.get(f"{URL}{rollout_id}/").json()
    assert body["state"] == "completed" and body["counts"]["succeeded"] == 2


def test_a_device_away_only_briefly_keeps_the_rollout_open_one_gone_for_long_does_not(ota_api: APIClient, settings: Any) -> None:
    """A target that is only rebooting when the last wave passes (the previous rollout just
    restarted it) still gets its offer; one offline for longer than the grace is left queued."""
    settings.OTA_OFFLINE_GRACE_S = 120
    fleet(2)
    Device.objects.filter(node_id="thermo-01").update(online=False, last_seen=timezone.now() - timedelta(seconds=2))
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=["100%"], success_threshold=0.5).json()["id"]
    succeed(Deployment.objects.select_related("rollout__release").get(rollout_id=rollout_id, device__node_id="thermo-00"))
    driver.drive(rollout_id)
    assert Rollout.objects.get(pk=rollout_id).state == "running", "thermo-01 is rebooting, not gone"
    Device.objects.filter(node_id="thermo-01").update(last_seen=timezone.now() - timedelta(seconds=121))
    driver.drive(rollout_id)
    rollout = Rollout.objects.get(pk=rollout_id)
    assert rollout.state == "completed" and "1 never offered (offline for more than 120 s)" in rollout.reason, rollout.reason
    assert Deployment.objects.get(rollout_id=rollout_id, device__node_id="thermo-01").state == "queued"


def test_a_device_mid_update_or_in_safe_mode_refuses_actuation_but_answers_reads(ota_api: APIClient, alice_api: APIClient) -> None:
    fleet(2)
    rollout_id = create(ota_api, release=release().pk, targets={"devices": ["thermo-00"]}, waves=["100%"]).json()["id"]
    deployment = Deployment.objects.get(rollout_id=rollout_id)
    walk(deployment, sm.Offer(), sm.Accepted(0))
    command = {"action": "set", "capability": "setpoint", "value": 21}
    refused = alice_api.post("/api/v1/devices/thermo-00/commands/", command, format="json")
    assert refused.status_code == 400 and refused.json()["guard"] == "ota.installing" and "installing firmware" in refused.json()["reason"]
    assert alice_api.post("/api/v1/devices/thermo-00/commands/", {"action": "get", "capability": "temperature"}, format="json").status_code == 201
    DeviceFirmware.objects.create(device=Device.objects.get(node_id="thermo-01"), version="1.0.0", slot="a", safe_mode=True, consecutive_fails=4)
    safe = alice_api.post("/api/v1/devices/thermo-01/commands/", command, format="json")
    assert safe.status_code == 400 and safe.json()["guard"] == "ota.safe_mode"
    assert ota_api.get("/api/v1/devices/thermo-01/").json()["firmware"]["safe_mode"] is True
    assert driver.drive(rollout_id).offered == [], "thermo-00 is busy; thermo-01 is not targeted"


def test_device_controls_need_their_scope_and_a_live_session(ota_api: APIClient, bob_api: APIClient) -> None:
    fleet(1)
    Device.objects.filter(node_id="thermo-00").update(online=False)
    assert bob_api.post("/api/v1/devices/thermo-00/ota/rollback/").status_code == 403
    offline = ota_api.post("/api/v1/devices/thermo-00/ota/rollback/", {"reason": "bad batch"}, format="json")
    assert offline.status_code == 409 and "offline" in offline.json()["reason"]
    assert ota_api.post("/api/v1/devices/thermo-00/bootguard/clear/").status_code == 403, "bootguard/clear needs scope reset"
    Device.objects.filter(node_id="thermo-00").update(online=True)
    sent = ota_api.post("/api/v1/devices/thermo-00/ota/rollback/", {"reason": "bad batch"}, format="json")
    assert sent.status_code == 202 and sent.json()["id"]
    assert AuditEvent.objects.filter(action="ota.device.rollback", decision="allow", target_id="thermo-00").exists()


def test_a_timed_out_offer_fails_and_counts_against_the_release(ota_api: APIClient) -> None:
    fleet(1)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=["100%"]).json()["id"]
    deployment = Deployment.objects.get(rollout_id=rollout_id)
    walk(deployment, sm.Offer())
    Deployment.objects.filter(pk=deployment.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    report = driver.drive(rollout_id)
    assert report.timed_out == [deployment.pk]
    deployment.refresh_from_db()
    assert deployment.state == DeploymentState.FAILED and deployment.reason
    assert AuditEvent.objects.filter(action="ota.deployment.failed", decision="deny", target_id="thermo-00").exists()


def test_the_device_page_shows_its_firmware_and_the_controls_its_user_may_use(django_user_model: Any) -> None:
    from conftest import client_for

    device = thermostat("thermo-00")
    DeviceFirmware.objects.create(
        device=device,
        version="1.0.0",
        slot="a",
        previous_version="1.2.0",
        last_boot_reason="rollback",
        last_boot_at=timezone.now(),
        last_rollback_at=timezone.now(),
        last_rollback_reason="crashed at boot",
        safe_mode=True,
        consecutive_fails=4,
        diagnostic={"last_error": "crashed at boot (stage app)"},
    )
    admin = client_for(django_user_model.objects.create_user("ada", password="ada-Pass-123"), "admin")
    viewer = client_for(django_user_model.objects.create_user("vic", password="vic-Pass-123"), "viewer")
    page = admin.get("/devices/thermo-00/").content.decode()
    card = page[page.index("data-firmware") :]
    for text in ("1.0.0 in slot a", "1.2.0", "rollback", ">4<", "crashed at boot (stage app)"):
        assert text in card, text
    assert "Roll back" not in card and "Clear the boot guard" not in card, "controls go through the live session: an offline device shows none"
    Device.objects.filter(pk=device.pk).update(online=True)
    card = admin.get("/devices/thermo-00/").content.decode()
    assert "/devices/thermo-00/firmware/rollback/" in card and "/devices/thermo-00/firmware/clear-bootguard/" in card
    viewer_page = viewer.get("/devices/thermo-00/").content.decode()
    assert "data-firmware" in viewer_page and "/firmware/rollback/" not in viewer_page and "Clear the boot guard" not in viewer_page

    answer = admin.post("/devices/thermo-00/firmware/rollback/", {"reason": "customer complaint"})
    assert answer.status_code == 302
    order = DeviceFirmware.objects.get(device=device).pending_order
    assert order["kind"] == "rollback" and order["reason"] == "customer complaint"
    assert viewer.post("/devices/thermo-00/firmware/clear-bootguard/", {"reason": "x"}).status_code == 403
    assert AuditEvent.objects.filter(action="ota.device.bootguard.clear", decision="deny", actor_id="vic").exists()
    assert admin.post("/devices/thermo-00/firmware/reflash/").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_device_event_applies_while_the_driver_holds_its_rollout(ota_api: APIClient) -> None:
    """The driver locks a rollout, then writes its deployments; a device's event must lock its
    deployment alone. Had it locked the joined rollout as well (after the deployment), the
    two would deadlock on PostgreSQL, as a gateway's transfer event and a drive once did."""
    postgresql_only()
    fleet(1)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=["100%"]).json()["id"]
    deployment = Deployment.objects.get(rollout_id=rollout_id)
    with transaction.atomic():
        Rollout.objects.select_for_update().get(pk=rollout_id)  # what drive() holds
        device_event = Beside(lambda: deployments.apply(deployment.pk, sm.Offer()))
        device_event.start()
        device_event.join()
    assert device_event.errors == []
    assert Deployment.objects.get(pk=deployment.pk).state == DeploymentState.OFFERED


@pytest.mark.django_db(transaction=True)
def test_a_drive_that_advances_a_wave_records_it_after_locking_the_rows_it_offers_to(ota_api: APIClient) -> None:
    """A device event holds its deployment and then records (the audit head); the drive
    must not hold the head while it waits for that deployment. Here the test's transaction
    is the device event: it holds the next wave's row until the drive waits for it, then
    records. Had the drive recorded its wave first, the two would deadlock."""
    postgresql_only()
    fleet(2)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=[1, "100%"]).json()["id"]
    (first,) = Deployment.objects.filter(rollout_id=rollout_id, wave=0).select_related("rollout__release")
    (second,) = Deployment.objects.filter(rollout_id=rollout_id, wave=1)
    succeed(first)
    with transaction.atomic():
        Deployment.objects.select_for_update().get(pk=second.pk)
        drive = Beside(lambda: driver.drive(rollout_id))
        drive.start()
        drive.until_waiting_for_a_lock()
        record(Actor("device", "thermo-01"), "ota.health", "allow", target_type="device", target_id="thermo-01")
    drive.join()
    assert drive.errors == []
    assert Rollout.objects.get(pk=rollout_id).wave == 1
    assert Deployment.objects.get(pk=second.pk).offer_requested_at is not None
    assert AuditEvent.objects.filter(action="ota.rollout.wave").count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_abort_locks_every_open_deployment_before_recording_any(ota_api: APIClient) -> None:
    """The same order for an abort: it ends its deployments one by one, each recorded; it
    must hold all their rows before the first record takes the audit head."""
    postgresql_only()
    fleet(3)
    rollout_id = create(ota_api, release=release().pk, targets={"all": True}, waves=["100%"]).json()["id"]
    last = Deployment.objects.filter(rollout_id=rollout_id).order_by("pk").last()
    assert last is not None
    with transaction.atomic():
        Deployment.objects.select_for_update().get(pk=last.pk)
        abort = Beside(lambda: ota_api.post(f"{URL}{rollout_id}/abort/"))
        abort.start()
        abort.until_waiting_for_a_lock()
        record(Actor("device", "thermo-02"), "ota.health", "allow", target_type="device", target_id="thermo-02")
    abort.join()
    assert abort.errors == [] and abort.result.status_code == 200, abort.result.content
    assert set(Deployment.objects.filter(rollout_id=rollout_id).values_list("state", flat=True)) == {"aborted"}
