"""The MCP server at /mcp/ through the official MCP client over HTTP, against Daphne with a
real agent: the tools listed match the token's scopes; a command tool call reaches the
agent and its result comes back; a viewer token's command is refused with the reason and
audited; a malformed call gets a precise error; no token is 401 and audited."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from audit.models import AuditEvent
from conftest import make_token_client
from devices.models import Command, Device
from firmware.agent import port as agent_port
from firmware.agent.core.agent import Agent
from firmware.agent.profiles import PROFILES
from tests.browser import LiveHub, live_hub_fixture  # noqa: F401
from tests.mesh_helpers import wait_for
from tests.test_automation_end_to_end import HeldHardware
from tests.test_browser_ota import enrolled

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

READ_TOOLS = {"list_devices", "get_device", "list_groups", "list_scenes", "get_telemetry", "list_rules"}
COMMAND_TOOLS = {"send_command", "group_command", "activate_scene"}


def token_for(django_user_model: Any, name: str, scopes: list[str]) -> str:
    return make_token_client(django_user_model.objects.create_user(name, password=f"{name}-Pass-123"), scopes)[1]


def client(live_hub: LiveHub, token: str) -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return Client(streamable_http_client(live_hub.url + "/mcp/", http_client=http))


async def tools_of(live_hub: LiveHub, token: str) -> set[str]:
    async with client(live_hub, token) as session:
        return {tool.name for tool in (await session.list_tools()).tools}


async def call(live_hub: LiveHub, token: str, name: str, arguments: dict[str, Any]) -> Any:
    async with client(live_hub, token) as session:
        return await session.call_tool(name, arguments)


def test_an_mcp_client_drives_a_real_device_within_its_tokens_scopes(live_hub: LiveHub, django_user_model: Any, tmp_path: Path, settings: Any) -> None:
    settings.ENROLL_ATTEMPTS_PER_MINUTE = 100
    operator = token_for(django_user_model, "otto", ["read-status", "command"])
    viewer = token_for(django_user_model, "vera", ["read-status"])
    updater = token_for(django_user_model, "uma", ["read-status", "ota"])
    stop = threading.Event()
    relay = Agent(agent_port, str(enrolled(live_hub, "relay-1", tmp_path)), PROFILES["relay"], HeldHardware(PROFILES["relay"]), report_s=0.5, retry_delay_s=0.2)
    threading.Thread(target=relay.run, args=(stop.is_set,), daemon=True).start()
    try:
        wait_for(lambda: Device.objects.filter(node_id="relay-1", online=True).exists(), timeout_s=30)

        assert asyncio.run(tools_of(live_hub, operator)) == READ_TOOLS | COMMAND_TOOLS
        assert asyncio.run(tools_of(live_hub, viewer)) == READ_TOOLS, "a tool the token cannot use is not listed"
        assert asyncio.run(tools_of(live_hub, updater)) == READ_TOOLS | {"list_rollouts"}

        device = asyncio.run(call(live_hub, operator, "get_device", {"node_id": "relay-1"}))
        assert not device.is_error and {c["name"] for c in device.structured_content["capabilities"]} == {"on", "power"}

        sent = asyncio.run(call(live_hub, operator, "send_command", {"node_id": "relay-1", "action": "set", "capability": "on", "value": True}))
        assert not sent.is_error, sent
        command_id = sent.structured_content["id"]
        wait_for(lambda: relay.hardware.values["on"] is True, timeout_s=20)
        wait_for(lambda: Command.objects.get(pk=command_id).status == "succeeded", timeout_s=20)
        assert Command.objects.get(pk=command_id).requested_by.endswith("/otto")
        assert AuditEvent.objects.filter(action="assistant.tool", decision="allow", target_id="send_command", details__via="mcp").exists()

        refused = asyncio.run(call(live_hub, viewer, "send_command", {"node_id": "relay-1", "action": "set", "capability": "on", "value": False}))
        assert refused.is_error and refused.structured_content["error"] == {"field": "name", "reason": "missing scope 'command'", "scope": "command"}
        assert AuditEvent.objects.filter(action="assistant.tool", decision="deny", actor_id__endswith="/vera", target_id="send_command").exists()
        assert relay.hardware.values["on"] is True and Command.objects.count() == 1

        malformed = asyncio.run(call(live_hub, operator, "send_command", {"node_id": "relay-1", "action": "set", "capability": "on", "value": "maybe"}))
        assert malformed.is_error and malformed.structured_content["error"]["level"] == "value" and malformed.structured_content["error"]["field"] == "value"
        wrong_type = asyncio.run(call(live_hub, operator, "send_command", {"node_id": 7, "action": "set", "capability": "on"}))
        assert wrong_type.is_error and wrong_type.structured_content["error"]["field"] == "node_id"
        unknown = asyncio.run(call(live_hub, operator, "send_command", {"node_id": "relay-1", "action": "set", "capability": "on", "colour": "red"}))
        assert unknown.is_error and unknown.structured_content["error"]["field"] == "colour"
        assert Command.objects.count() == 1, "nothing refused was written"

        anonymous = httpx2.post(
            live_hub.url + "/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Accept": "application/json, text/event-stream"}
        )
        assert anonymous.status_code == 401 and anonymous.json()["error"]["field"] == "Authorization"
        forged = httpx2.post(live_hub.url + "/mcp/", json={}, headers={"Authorization": "Bearer mh_nope_nope"})
        assert forged.status_code == 401 and forged.json()["error"]["reason"] == "invalid token"
        assert AuditEvent.objects.filter(action="mcp.authenticate", decision="deny").count() == 2
    finally:
        stop.set()
