"""`/ws/live/` through the real ASGI application and channel layer (Channels' communicator)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group

from devices import state
from hub import live
from hub.asgi import application
from tests.factories import thermostat

pytestmark = pytest.mark.django_db(transaction=True)


def communicator_for(user: Any) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")])
    communicator.scope["user"] = user  # what AuthMiddlewareStack puts there from the session
    return communicator


async def next_events(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "events", message
    return list(message["events"])


async def next_snapshot(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    """The answer to a "watch", past any live batch still on its way."""
    while True:
        message = await communicator.receive_json_from(timeout=5)
        if message.get("snapshot"):
            return list(message["events"])


def test_a_page_gets_a_snapshot_then_coalesced_changes(bob: Any) -> None:
    bob.groups.add(Group.objects.get_or_create(name="viewer")[0])
    thermostat("sensor-1")
    state.set_presence("sensor-1", True)

    async def scenario() -> None:
        communicator = communicator_for(bob)
        connected, _ = await communicator.connect()
        assert connected
        await communicator.send_json_to({"type": "watch", "nodes": ["sensor-1"]})
        assert {"type": "presence", "node_id": "sensor-1", "online": True} in await next_events(communicator)
        # Three reports in quick succession: the page gets the latest value once.
        for value in (20.0, 20.5, 21.0):
            await sync_to_async(live.on_state)([state.StateReport("sensor-1", {"temperature": value}, state.timezone.now())])
        await sync_to_async(state.set_presence)("sensor-1", False)
        events = await next_events(communicator)
        temperatures = [e["value"] for e in events if e["type"] == "state"]
        assert temperatures == [21.0]
        assert {"type": "presence", "node_id": "sensor-1", "online": False} in events
        await communicator.disconnect()

    asyncio.run(scenario())


def test_without_a_role_or_a_session_the_socket_is_refused(django_user_model: Any) -> None:
    from django.contrib.auth.models import AnonymousUser

    nobody = django_user_model.objects.create_user("mallory", password="mallory-Pass-123")

    async def scenario() -> None:
        for user in (AnonymousUser(), nobody):
            communicator = communicator_for(user)
            connected, code = await communicator.connect()
            assert not connected and code == 4403

    asyncio.run(scenario())


def test_a_user_demoted_while_connected_stops_receiving(alice: Any) -> None:
    alice.groups.add(Group.objects.get_or_create(name="operator")[0])
    thermostat("sensor-1")

    async def scenario() -> None:
        communicator = communicator_for(alice)
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"type": "watch", "nodes": ["sensor-1"]})
        await next_events(communicator)
        await sync_to_async(alice.groups.clear)()
        await sync_to_async(state.set_presence)("sensor-1", True)
        closed = await communicator.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4403}

    asyncio.run(scenario())


def test_a_reconnecting_page_gets_the_status_of_the_commands_it_shows(alice: Any) -> None:
    from audit.services import Actor
    from devices import delivery, services

    alice.groups.add(Group.objects.get_or_create(name="operator")[0])
    thermostat("sensor-1")
    command = services.send_command(Actor("user", "alice"), "sensor-1", "set", "setpoint", 21)
    delivery.record_result("sensor-1", str(command.pk), "ok", 21, None)  # finished before the page connected

    async def scenario() -> None:
        communicator = communicator_for(alice)
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"type": "watch", "nodes": [], "commands": [str(command.pk), "not-a-uuid"]})
        events = await next_events(communicator)
        assert {"type": "command", "id": str(command.pk), "status": "succeeded", "result": {"value": 21, "reason": ""}} in events
        await communicator.disconnect()

    asyncio.run(scenario())


def test_an_enrollment_page_learns_that_its_code_was_redeemed_live_and_on_reconnect(alice: Any) -> None:
    from audit.services import Actor
    from devices import identity
    from tests.mesh_helpers import make_csr

    alice.groups.add(Group.objects.get_or_create(name="operator")[0])
    ticket = identity.create_enrollment(Actor("user", "alice"), "greenhouse-1", device_type="thermostat")
    identity.create_enrollment(Actor("user", "alice"), "greenhouse-2")  # another code, still open

    async def scenario() -> None:
        communicator = communicator_for(alice)
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"type": "watch", "nodes": ["greenhouse-1"], "enrolling": ["greenhouse-1", "greenhouse-2"]})
        assert not [e for e in await next_events(communicator) if e["type"] == "enrolled"]  # nobody redeemed yet
        _, csr = make_csr("greenhouse-1")
        await sync_to_async(identity.complete_enrollment)(ticket.code, None, csr, "127.0.0.1", "greenhouse-1")
        events = await next_events(communicator)
        assert {"type": "enrolled", "node_id": "greenhouse-1", "device_type": "thermostat"} in events
        # A page that reconnects after the fact learns it from the snapshot; the open code stays open.
        await communicator.send_json_to({"type": "watch", "nodes": [], "enrolling": ["greenhouse-1", "greenhouse-2"]})
        enrolled = [e["node_id"] for e in await next_events(communicator) if e["type"] == "enrolled"]
        assert enrolled == ["greenhouse-1"]
        await communicator.disconnect()

    asyncio.run(scenario())


def test_denied_attempts_reach_open_pages_as_alerts_a_storm_only_its_newest(bob: Any) -> None:
    from audit.services import Actor, Entry, record_many

    bob.groups.add(Group.objects.get_or_create(name="viewer")[0])

    async def scenario() -> None:
        communicator = communicator_for(bob)
        assert (await communicator.connect())[0]
        storm = [Entry(Actor("device", f"unknown@10.0.0.{i}"), "mesh.handshake", "deny", reason=f"attempt {i}") for i in range(50)]
        await sync_to_async(record_many)(storm)
        await sync_to_async(record_many)([Entry(Actor("user", "alice"), "api.device.list", "allow")])  # allows are not alerts
        alerts = [e for e in await next_events(communicator) if e["type"] == "alert"]
        assert [a["reason"] for a in alerts] == [f"attempt {i}" for i in range(42, 50)]
        assert alerts[-1]["who"] == "device:unknown@10.0.0.49" and alerts[-1]["kind"] == "denied"
        await communicator.disconnect()

    asyncio.run(scenario())


def test_a_page_receives_only_what_it_watches(bob: Any) -> None:
    bob.groups.add(Group.objects.get_or_create(name="viewer")[0])
    thermostat("sensor-1")
    thermostat("sensor-2")

    async def scenario() -> None:
        communicator = communicator_for(bob)
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"type": "watch", "nodes": ["sensor-1"]})
        await next_events(communicator)
        now = state.timezone.now()
        await sync_to_async(live.on_state)(
            [state.StateReport("sensor-2", {"temperature": 30.0}, now), state.StateReport("sensor-1", {"temperature": 19.0}, now)]
        )
        await sync_to_async(state.set_presence)("sensor-2", True)
        events = await next_events(communicator)
        assert events == [{"type": "state", "node_id": "sensor-1", "capability": "temperature", "value": 19.0}]
        await communicator.disconnect()

    asyncio.run(scenario())


def test_an_open_device_list_gets_the_row_of_a_device_that_enrolls_and_then_its_presence(alice: Any, bob: Any) -> None:
    from audit.services import Actor, Entry, record_many
    from devices import identity
    from tests.mesh_helpers import make_csr

    alice.groups.add(Group.objects.get_or_create(name="operator")[0])
    bob.groups.add(Group.objects.get_or_create(name="viewer")[0])
    ticket = identity.create_enrollment(Actor("user", "alice"), "greenhouse-1", device_type="thermostat")
    rendered_at = state.timezone.now().isoformat()  # what /devices/ puts in data-since

    async def scenario() -> None:
        devices_list = communicator_for(bob)
        overview = communicator_for(alice)  # a page that lists no devices
        for communicator, watch in ((devices_list, {"devices_since": rendered_at}), (overview, {})):
            assert (await communicator.connect())[0]
            await communicator.send_json_to({"type": "watch", "nodes": [], **watch})
            assert not [e for e in await next_events(communicator) if e["type"] == "device"]  # nothing enrolled yet
        _, csr = make_csr("greenhouse-1")
        await sync_to_async(identity.complete_enrollment)(ticket.code, None, csr, "127.0.0.1", "greenhouse-1")
        row = {
            "type": "device",
            "node_id": "greenhouse-1",
            "url": "/devices/greenhouse-1/",
            "name": "greenhouse-1",
            "device_type": "thermostat",
            "status": "provisioned",
            "online": False,
            "last_seen": None,
            "firmware_version": "",
        }
        assert row in await next_events(devices_list)
        # Its first connection reaches the list that added its row.
        await sync_to_async(state.set_presence)("greenhouse-1", True)
        assert {"type": "presence", "node_id": "greenhouse-1", "online": True} in await next_events(devices_list)
        # The overview got neither: the next thing it hears is an alert everybody gets.
        await sync_to_async(record_many)([Entry(Actor("device", "mallory"), "mesh.handshake", "deny", reason="bad cert")])
        assert [e["type"] for e in await next_events(overview)] == ["alert"]
        # A list that reconnects gets the rows of devices enrolled since it was rendered, not before.
        await devices_list.send_json_to({"type": "watch", "nodes": [], "devices_since": rendered_at})
        assert [e["node_id"] for e in await next_snapshot(devices_list) if e["type"] == "device"] == ["greenhouse-1"]
        await devices_list.send_json_to({"type": "watch", "nodes": [], "devices_since": state.timezone.now().isoformat()})
        assert not [e for e in await next_snapshot(devices_list) if e["type"] == "device"]
        for communicator in (devices_list, overview):
            await communicator.disconnect()

    asyncio.run(scenario())


def test_a_rule_page_gets_its_rules_runs_as_they_start_and_finish(bob: Any) -> None:
    """A run waiting at a delay, then finished by beat: the page watching the rule gets both
    states of the run (coalesced per run), a page watching another rule gets nothing."""
    from datetime import timedelta

    from audit.services import Actor
    from automation import evaluator, rules, runs
    from devices.models import Device
    from tests.factories import relay

    bob.groups.add(Group.objects.get_or_create(name="viewer")[0])
    thermostat("thermo-1")
    relay("relay-1")
    Device.objects.update(status="provisioned")
    alice = Actor("user", "alice", scopes=frozenset({"command"}))
    on = {"device": "relay-1", "capability": "on", "action": "set", "value": True}
    when = {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30}
    rule = rules.create(alice, {"name": "pulse", "when": when, "then": [on, {"delay_s": 5}, {**on, "value": False}]})

    async def scenario() -> None:
        watching, other = communicator_for(bob), communicator_for(bob)
        for communicator, watched in ((watching, rule.pk), (other, rule.pk + 1)):
            assert (await communicator.connect())[0]
            await communicator.send_json_to({"type": "watch", "nodes": [], "rules": [watched]})
            await next_snapshot(communicator)
        now = state.timezone.now()
        reports = [state.StateReport("thermo-1", {"temperature": 31.0}, now)]
        await sync_to_async(state.apply_reports)(reports)
        await sync_to_async(evaluator.on_state)(reports)
        [started] = [e for e in await next_events(watching) if e["type"] == "rule_run"]
        assert (started["rule_id"], started["outcome"], started["trigger"]) == (rule.pk, "running", "thermo-1.temperature = 31.0")
        assert started["reason"] == "waiting 5 s at then[1]"
        await sync_to_async(runs.resume_due)(now + timedelta(seconds=6))
        [finished] = [e for e in await next_events(watching) if e["type"] == "rule_run"]
        assert (finished["run_id"], finished["outcome"], finished["actions"]) == (started["run_id"], "fired", "relay-1 pending, delay 5 s, relay-1 pending")
        assert await other.receive_nothing(timeout=0.6)
        await watching.disconnect()
        await other.disconnect()

    asyncio.run(scenario())


def test_a_rules_page_that_reconnects_gets_the_runs_it_missed(bob: Any) -> None:
    """The rule page says when it was rendered; its socket (on connect and on every
    reconnect) gets the runs that started or ended since then and those still in flight,
    oldest first, and nothing of rules it does not show."""
    import re
    from datetime import timedelta

    from django.test import Client
    from django.utils import timezone

    from audit.services import Actor
    from automation import rules
    from automation.models import RuleRun
    from devices.models import Device
    from tests.factories import relay

    bob.groups.add(Group.objects.get_or_create(name="viewer")[0])
    thermostat("thermo-1")
    relay("relay-1")
    Device.objects.update(status="provisioned")
    alice = Actor("user", "alice", scopes=frozenset({"command"}))
    when = {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30}
    rule, other = (
        rules.create(alice, {"name": name, "when": when, "then": [{"device": "relay-1", "capability": "on", "action": "set", "value": True}]})
        for name in ("fan", "lamp")
    )
    hour_ago = timezone.now() - timedelta(hours=1)

    def run(rule_id: int, started: Any, finished: Any, outcome: str) -> RuleRun:
        return RuleRun.objects.create(
            rule_id=rule_id, started_at=started, finished_at=finished, outcome=outcome, trigger={"device": "thermo-1", "capability": "temperature", "value": 31}
        )

    run(rule.pk, hour_ago, hour_ago, "fired")  # shown when the page was rendered
    waiting = run(rule.pk, hour_ago + timedelta(minutes=1), None, "running")  # in flight at render
    ended_later = run(rule.pk, hour_ago + timedelta(minutes=2), None, "running")
    client = Client()
    client.force_login(bob)
    page = client.get(f"/automation/{rule.pk}/").content.decode()
    [since] = re.findall(r'data-runs-since="([^"]+)"', page)
    RuleRun.objects.filter(pk=ended_later.pk).update(finished_at=timezone.now(), outcome="failed")
    started_later = run(rule.pk, timezone.now(), timezone.now(), "fired")
    run(other.pk, timezone.now(), timezone.now(), "fired")  # a rule the page does not show

    async def scenario() -> None:
        communicator = communicator_for(bob)
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"type": "watch", "nodes": [], "rules": [rule.pk], "runs_since": since})
        missed = [(e["run_id"], e["outcome"]) for e in await next_snapshot(communicator) if e["type"] == "rule_run"]
        assert missed == [(waiting.pk, "running"), (ended_later.pk, "failed"), (started_later.pk, "fired")]
        await communicator.send_json_to({"type": "watch", "nodes": [], "rules": [rule.pk]})  # a page without a render time
        assert not [e for e in await next_snapshot(communicator) if e["type"] == "rule_run"]
        await communicator.disconnect()

    asyncio.run(scenario())
