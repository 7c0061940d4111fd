"""`Idempotency-Key` on the command endpoints: a retried request answers with the first
response and the device executes the command once; a key reused for another request, or a
malformed key, is refused with a precise reason and audited."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from conftest import make_token_client
from devices.guards import CommandRequest, Refusal, guards
from devices.models import Command, Device, DeviceStatus
from hub.models import IdempotencyKey
from hub.tasks import prune_idempotency_keys
from tests.factories import GroupFactory, dimmer, relay, thermostat
from tests.mesh_helpers import wait_for
from tests.test_gateway import RunningAgent, enroll_device, listeners  # noqa: F401 (fixture)

SETPOINT = {"action": "set", "capability": "setpoint", "value": 21.5}
URL = "/api/v1/devices/sensor-1/commands/"


def post(client: APIClient, url: str, body: Any, key: str | None) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(url, body, format="json", headers=headers)


def denies() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(decision="deny").order_by("seq"))


@pytest.mark.django_db
def test_it_answers_a_retry_with_the_first_response_and_creates_one_command(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    first = post(alice_api, URL, SETPOINT, "retry-7f3a")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first.headers
    again = post(alice_api, URL, {"value": 21.5, "capability": "setpoint", "action": "set"}, "retry-7f3a")  # same JSON, other key order
    assert again.status_code == 201, again.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Command.objects.count() == 1
    assert AuditEvent.objects.filter(action="command.create", decision="allow").count() == 1
    replay = AuditEvent.objects.get(action="api.idempotent_replay")
    assert replay.decision == "allow" and replay.details["key"] == "retry-7f3a" and replay.actor_id.endswith("/alice")

    flat = post(alice_api, "/api/v1/commands/", {"node_id": "sensor-1", **SETPOINT}, "flat-1")
    flat_again = post(alice_api, "/api/v1/commands/", {"node_id": "sensor-1", **SETPOINT}, "flat-1")
    assert (flat.status_code, flat_again.status_code) == (201, 201)
    assert flat_again.json()["id"] == flat.json()["id"] != first.json()["id"]
    assert Command.objects.count() == 2

    # Without the header nothing changes: every request is a new command.
    assert len({post(alice_api, URL, SETPOINT, None).json()["id"] for _ in range(2)}) == 2
    assert Command.objects.count() == 4 and IdempotencyKey.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("other_url", "other_body", "says"),
    [
        (URL, {**SETPOINT, "value": 22}, "with a different body"),
        ("/api/v1/commands/", {"node_id": "sensor-1", **SETPOINT}, f"for POST {URL}"),
    ],
)
def test_it_refuses_the_same_key_for_another_request_with_409(alice_api: APIClient, other_url: str, other_body: dict[str, Any], says: str) -> None:
    thermostat("sensor-1")
    first = post(alice_api, URL, SETPOINT, "k-1")
    assert first.status_code == 201
    refused = post(alice_api, other_url, other_body, "k-1")
    assert refused.status_code == 409, refused.content
    body = refused.json()
    assert set(body) == {"field", "reason"} and body["field"] == "Idempotency-Key"
    assert body["reason"].startswith("Idempotency-Key 'k-1' was already used at ") and says in body["reason"]
    assert body["reason"].endswith("use a new key for a different request")
    assert Command.objects.count() == 1 and Command.objects.get().value == 21.5
    [deny] = denies()
    assert deny.reason == body["reason"] and deny.actor_id.endswith("/alice")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "Idempotency-Key must not be empty"),
        ("   ", "Idempotency-Key must not be empty"),
        ('""', "Idempotency-Key must not be empty"),
        ("k" * 256, "Idempotency-Key is 256 characters long; at most 255 are allowed"),
        ("bell\x07key", "Idempotency-Key has a non-printable character U+0007 at position 4; only printable ASCII is allowed"),
        ("tab\tkey", "Idempotency-Key has a non-printable character U+0009 at position 3; only printable ASCII is allowed"),
        ("cl\xe9", "Idempotency-Key has a non-printable character U+00E9 at position 2; only printable ASCII is allowed"),
    ],
)
def test_it_refuses_a_malformed_key_with_400_and_creates_nothing(alice_api: APIClient, key: str, reason: str) -> None:
    thermostat("sensor-1")
    response = alice_api.post(URL, SETPOINT, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400, response.content
    assert response.json() == {"field": "Idempotency-Key", "reason": reason}
    assert not Command.objects.exists() and not IdempotencyKey.objects.exists()
    assert [d.reason for d in denies()] == [reason]


@pytest.mark.django_db
def test_it_accepts_the_structured_field_form_of_a_key(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    quoted = post(alice_api, URL, SETPOINT, '"8e03978e-40d5-43e8-bc93-6894a57f9324"')
    bare = post(alice_api, URL, SETPOINT, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert bare.headers["Idempotent-Replayed"] == "true" and bare.json()["id"] == quoted.json()["id"]


@pytest.mark.django_db
def test_a_key_is_the_principals_own_and_never_answers_another(alice: Any, alice_api: APIClient, admin_api: APIClient, bob_api: APIClient) -> None:
    thermostat("sensor-1")
    mine = post(alice_api, URL, SETPOINT, "shared-key")
    theirs = post(admin_api, URL, SETPOINT, "shared-key")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"] and theirs.json()["requested_by"].endswith("/root")
    # Alice's second token is another principal too: a leaked key alone replays nothing.
    other_token, _ = make_token_client(alice, ["command"])
    also_new = post(other_token, URL, {**SETPOINT, "value": 30}, "shared-key")
    assert also_new.status_code == 201 and "Idempotent-Replayed" not in also_new.headers
    assert Command.objects.count() == 3
    assert post(alice_api, URL, SETPOINT, "shared-key").json()["id"] == mine.json()["id"], "each principal still has its own answer"
    # Bob may not command: he is refused for the scope before any key is looked at.
    refused = post(bob_api, URL, SETPOINT, "shared-key")
    assert refused.status_code == 403 and "Idempotent-Replayed" not in refused.headers and "id" not in refused.json()
    assert denies()[-1].reason == "missing scope 'command'"


@pytest.mark.django_db
def test_a_refused_command_is_not_remembered_and_may_be_retried_with_the_same_key(alice_api: APIClient) -> None:
    device = thermostat("sensor-1", status=DeviceStatus.UNPROVISIONED)
    refused = post(alice_api, URL, SETPOINT, "k-later")
    assert refused.status_code == 400 and refused.json()["level"] == "provisioned"
    assert denies()[-1].action == "command.create", "the deny survives: it is not rolled back with the key"
    Device.objects.filter(pk=device.pk).update(status=DeviceStatus.PROVISIONED)
    accepted = post(alice_api, URL, SETPOINT, "k-later")
    assert accepted.status_code == 201 and "Idempotent-Replayed" not in accepted.headers
    retried = post(alice_api, URL, SETPOINT, "k-later")
    assert retried.headers["Idempotent-Replayed"] == "true" and retried.json()["id"] == accepted.json()["id"]
    assert Command.objects.count() == 1


@pytest.mark.django_db
def test_an_expired_key_is_pruned_by_the_housekeeping_task_and_is_free_again(alice_api: APIClient, settings: Any) -> None:
    thermostat("sensor-1")
    old = post(alice_api, URL, SETPOINT, "k-old").json()["id"]
    fresh = post(alice_api, URL, SETPOINT, "k-fresh").json()["id"]
    IdempotencyKey.objects.filter(key="k-old").update(created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_S + 60))

    assert prune_idempotency_keys.apply().get() == 1  # the task beat schedules, through Celery's task machinery (in this process)
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["k-fresh"]
    assert "prune-idempotency-keys" in settings.CELERY_BEAT_SCHEDULE

    reused = post(alice_api, URL, {**SETPOINT, "value": 25}, "k-old")
    assert reused.status_code == 201 and "Idempotent-Replayed" not in reused.headers
    assert reused.json()["id"] not in (old, fresh)
    assert post(alice_api, URL, SETPOINT, "k-fresh").json()["id"] == fresh, "a key within its 24 h still answers"


@pytest.mark.django_db
def test_an_expired_key_is_free_even_before_it_is_pruned(alice_api: APIClient, settings: Any) -> None:
    thermostat("sensor-1")
    first = post(alice_api, URL, SETPOINT, "k-stale").json()["id"]
    assert post(alice_api, URL, SETPOINT, "k-stale").json()["id"] == first
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL_S + 1))
    again = post(alice_api, URL, SETPOINT, "k-stale")
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers and again.json()["id"] != first


@pytest.mark.django_db
def test_a_batch_is_answered_once_per_key(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    dimmer("dimmer-1")
    items = [
        {"node_id": "sensor-1", "action": "set", "capability": "setpoint", "value": 19},
        {"node_id": "dimmer-1", "action": "set", "capability": "level", "value": 150},
    ]
    first = post(alice_api, "/api/v1/commands/batch/", {"commands": items}, "batch-1")
    assert first.status_code == 200 and first.json()["accepted"] == 1
    again = post(alice_api, "/api/v1/commands/batch/", {"commands": items}, "batch-1")
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert Command.objects.count() == 1
    other = post(alice_api, "/api/v1/commands/batch/", {"commands": items[:1]}, "batch-1")
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    assert Command.objects.count() == 1


@pytest.mark.django_db
def test_a_group_command_is_answered_once_per_key(alice_api: APIClient) -> None:
    group = GroupFactory(name="lights")
    group.members.add(relay("relay-1"), relay("relay-2"))
    url = f"/api/v1/groups/{group.pk}/command/"
    first = post(alice_api, url, {"action": "set", "capability": "on", "value": True}, "lights-on")
    again = post(alice_api, url, {"action": "set", "capability": "on", "value": True}, "lights-on")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert sorted(str(c.id) for c in Command.objects.all()) == sorted(r["id"] for r in first.json()["results"])
    off = post(alice_api, url, {"action": "set", "capability": "on", "value": False}, "lights-on")
    assert off.status_code == 409 and "with a different body" in off.json()["reason"]
    assert Command.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_retried_command_reaches_the_real_device_once(listeners: tuple[Any, Any], tmp_path: Path, alice_api: APIClient) -> None:  # noqa: F811
    state_dir = enroll_device(listeners, "relay-1", tmp_path / "relay-1")
    body = {"action": "toggle", "capability": "on"}
    with RunningAgent(state_dir, "relay") as agent:
        wait_for(lambda: Device.objects.get(node_id="relay-1").online and agent.acked_reports >= 1)
        first = post(alice_api, "/api/v1/devices/relay-1/commands/", body, "toggle-once")
        retry = post(alice_api, "/api/v1/devices/relay-1/commands/", body, "toggle-once")  # the client timed out and retried
        assert (first.status_code, retry.status_code) == (201, 201)
        command_id = first.json()["id"]
        assert retry.json()["id"] == command_id
        wait_for(lambda: Command.objects.get(pk=command_id).status == "succeeded")
        late = post(alice_api, "/api/v1/devices/relay-1/commands/", body, "toggle-once")  # a retry after the device answered
        assert late.json()["id"] == command_id
        # A second toggle would have turned it off again.
        wait_for(lambda: Device.objects.get(node_id="relay-1").reported.get("on") is True)
        assert agent.hardware.values["on"] is True
        assert agent.executed == 1
        assert Command.objects.count() == 1


class HoldFirst:
    """A command guard that keeps the first command's transaction open (key row inserted,
    not committed) until the test lets it go, so the other requests arrive while it runs."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, request: CommandRequest) -> Refusal | None:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.entered.set()
            assert self.release.wait(60), "the test never released the first request"
        return None


@pytest.fixture
def hold_first() -> Iterator[HoldFirst]:
    hold = HoldFirst()
    guards.register("test.hold_first", hold, app="test")
    yield hold
    hold.release.set()
    guards.unregister("test.hold_first")


def lock_waiters() -> int:
    """Backends of this test database waiting for a lock (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()")
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_against_a_live_server_create_one_command(alice: Any, live_server: Any, hold_first: HoldFirst, embedded: bool) -> None:
    """N clients POST the same key and body at once to a threaded live server (each request its
    own thread and database connection). The first holds its transaction open; on PostgreSQL the
    others are seen waiting on the key's unique index before it is let go."""
    thermostat("sensor-1")
    _, token = make_token_client(alice, ["command"])
    clients = 6
    answers: list[requests.Response] = []
    answers_lock = threading.Lock()

    def call() -> None:
        answer = requests.post(live_server.url + URL, json=SETPOINT, headers={"Authorization": f"Token {token}", "Idempotency-Key": "race-1"}, timeout=120)
        with answers_lock:
            answers.append(answer)

    first = threading.Thread(target=call)
    first.start()
    assert hold_first.entered.wait(60)
    others = [threading.Thread(target=call) for _ in range(clients - 1)]
    for thread in others:
        thread.start()
    if not embedded:
        wait_for(lambda: lock_waiters() >= clients - 1, timeout_s=60)
    # SQLite queues writers at BEGIN IMMEDIATE (busy timeout), which no query can see: the
    # others are released as they come; the answer below holds whatever the interleaving.
    hold_first.release.set()
    for thread in [first, *others]:
        thread.join(120)

    assert len(answers) == clients
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert Command.objects.count() == 1 and str(Command.objects.get().id) in ids
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == clients - 1
    assert hold_first.calls == 1, "the guard (and so the command's validation) ran once"
