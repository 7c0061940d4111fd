"""`/mcp/`: the fleet as an MCP server (streamable HTTP, the official `mcp` SDK), for any
MCP-capable agent (Claude Desktop, an IDE, Home Assistant's MCP client, nanobot).

Authentication is the hub's API token: `Authorization: Bearer mh_<key>_<secret>` (the same
tokens as `Authorization: Token` on the REST API, `hub.authentication.check_token`). A
missing or bad token is 401 and a deny in the audit log. The token's scopes decide the
tools: `tools/list` shows only those it may use, `tools/call` checks again
(`assistant.tools`), and every call is audited with the token as actor.

The SDK's session manager runs stateless with JSON answers: every POST carries its own
token and needs no session affinity, so any number of hub processes can serve `/mcp/`
behind a load balancer. Its task group is started on the first request, on the serving
event loop, and lives as long as the process.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from typing import Any

import mcp_types as types
from channels.db import database_sync_to_async
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from assistant import tools
from audit.models import ActorType, Decision
from audit.services import Actor, record
from hub.authentication import TokenRefused, check_token

logger = logging.getLogger("meshhub.assistant")
caller: contextvars.ContextVar[Actor] = contextvars.ContextVar("mcp_caller")
INSTRUCTIONS = (
    "meshhub runs a fleet of devices (sensors, actuators, PLCs). list_devices and get_device tell what there is and "
    "what each capability takes; send_command, group_command and activate_scene act, each checked like any command "
    "(a refusal says which level refused and why)."
)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    actor = caller.get()
    return types.ListToolsResult(
        tools=[types.Tool(name=t.name, description=t.description, input_schema=t.schema) for t in tools.available(actor)],
    )


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    actor = caller.get()
    ok, result = await database_sync_to_async(tools.call)(actor, params.name, params.arguments or {}, "mcp")
    return types.CallToolResult(content=[types.TextContent(type="text", text=_compact(result))], structured_content=result, is_error=not ok)


server: Server[Any] = Server("meshhub", version="1", instructions=INSTRUCTIONS, on_list_tools=list_tools, on_call_tool=call_tool)


def _actor(headers: list[tuple[bytes, bytes]], path: str, client: str) -> tuple[Actor | None, str]:
    """The token's actor, or (None, reason) after auditing the refusal."""
    value = next((v for k, v in headers if k.lower() == b"authorization"), b"")
    parts = value.split()
    reason = ""
    actor_id = "unknown"
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        reason = "send Authorization: Bearer <API token>"
    else:
        try:
            token = check_token(parts[1].decode("ascii", "replace"))
            return Actor(ActorType.TOKEN, f"{token.key}/{token.user.get_username()}", frozenset(token.scopes)), ""
        except TokenRefused as refused:
            reason, actor_id = refused.reason, refused.actor_id
    record(
        Actor(ActorType.TOKEN, actor_id),
        "mcp.authenticate",
        Decision.DENY,
        target_type="endpoint",
        target_id=path[:150],
        reason=reason,
        details={"remote_addr": client},
    )
    return None, reason


class MCPApp:
    """The ASGI app mounted at /mcp/ (hub/asgi.py)."""

    def __init__(self) -> None:
        self.manager: StreamableHTTPSessionManager | None = None
        self.ready: asyncio.Event | None = None
        self.runner: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.ready is None or self.loop is not loop:  # first request, or a new event loop (a test's)
            self.loop = loop
            self.ready = asyncio.Event()
            self.manager = StreamableHTTPSessionManager(
                app=server,
                stateless=True,
                json_response=True,
                # The hub checks Host (ALLOWED_HOSTS) and the token; the SDK's localhost-only default would refuse a LAN address.
                security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            )
            ready, manager = self.ready, self.manager

            async def run() -> None:
                async with manager.run():
                    ready.set()
                    await asyncio.Event().wait()  # as long as the process

            self.runner = loop.create_task(run(), name="mcp session manager")
        await self.ready.wait()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        client = scope.get("client") or ("", 0)
        actor, reason = await database_sync_to_async(_actor)(scope.get("headers", []), scope.get("path", ""), str(client[0]))
        if actor is None:
            body = _compact({"error": {"field": "Authorization", "reason": reason}}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._start()
        assert self.manager is not None
        token = caller.set(actor)
        try:
            await self.manager.handle_request(scope, receive, send)
        finally:
            caller.reset(token)


app = MCPApp()
