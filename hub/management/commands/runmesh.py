"""`manage.py runmesh`: the device listeners alone (enrollment now, the mesh gateway next),
for scale-out beside Daphne and Celery."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices import identity
from hub.mesh.enroll import EnrollmentListener
from hub.mesh.gateway import MeshGateway

logger = logging.getLogger("meshhub.runmesh")


class Command(BaseCommand):
    help = "Run the device listeners (enrollment port and mesh gateway) until SIGINT/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.DEVICE_BIND)
        parser.add_argument("--enroll-port", type=int, default=settings.ENROLL_PORT)
        parser.add_argument("--mesh-port", type=int, default=settings.MESH_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass  # the stock loop works, with more memory per TLS connection
        try:
            files = identity.ensure_hub_identity()
        except identity.IdentityError as exc:
            raise CommandError(exc.reason) from None
        asyncio.run(self.serve(options["host"], options["enroll_port"], options["mesh_port"], files))

    async def serve(self, host: str, enroll_port: int, mesh_port: int, files: identity.PkiFiles) -> None:
        from hub.asgi import application

        listener = EnrollmentListener(host, enroll_port, files)
        gateway = MeshGateway(host, mesh_port, files, application)
        await listener.start()
        await gateway.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await asyncio.gather(listener.close(), gateway.close())
        logger.info("device listeners stopped")
