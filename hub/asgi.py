"""ASGI entry point: HTTP through Django, WebSockets through Channels (routes join as pages arrive)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)

from devices.consumers import DeviceConsumer  # noqa: E402

# "mesh" is not an ASGI standard type: the mesh gateway (hub/mesh/gateway.py) is the
# protocol server that creates these scopes, one per device connection.
application = ProtocolTypeRouter({"http": django_asgi_app, "mesh": DeviceConsumer.as_asgi()})
