"""ASGI entry point: HTTP through Django (and `/mcp/`, the MCP server of `assistant.mcp`),
the pages' WebSocket through Channels, and the mesh gateway's device sessions."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from assistant.mcp import app as mcp_app  # noqa: E402
from devices.consumers import DeviceConsumer  # noqa: E402
from hub.consumers import LiveConsumer  # noqa: E402


async def http(scope, receive, send):  # type: ignore[no-untyped-def]
    """`/mcp` and `/mcp/` to the MCP server, everything else to Django."""
    if scope["path"] in ("/mcp", "/mcp/"):
        await mcp_app(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


# "mesh" is not an ASGI standard type: the mesh gateway (hub/mesh/gateway.py) is the
# protocol server that creates these scopes, one per device connection.
application = ProtocolTypeRouter(
    {
        "http": http,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([path("ws/live/", LiveConsumer.as_asgi())]))),
        "mesh": DeviceConsumer.as_asgi(),
    }
)
