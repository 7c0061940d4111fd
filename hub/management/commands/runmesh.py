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
from hub.mesh.discovery import DiscoveryResponder
from hub.mesh.enroll import EnrollmentListener
from hub.mesh.gateway import MeshGateway

logger = logging.getLogger("meshhub.runmesh")


class Command(BaseCommand):
    help = "Run the device listeners (enrollment port and mesh gateway) until SIGINT/SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.DEVICE_BIND)
        parser.add_argument("--enroll-port", type=int, default=settings.ENROLL_PORT)
        parser.add_argument("--mesh-port", type=int, default=settings.MESH_PORT)
        parser.add_argument("--discovery-port", type=int, default=settings.DISCOVERY_PORT, help="UDP discovery port, 0 = off")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            files = identity.ensure_hub_identity()
        except identity.IdentityError as exc:
            raise CommandError(exc.reason) from None
        identity.warn_if_devices_dial_elsewhere(options["enroll_port"], options["mesh_port"])
        answer = identity.discovery_answer(options["enroll_port"], options["mesh_port"]) if options["discovery_port"] else None
        serve = self.serve(options["host"], options["enroll_port"], options["mesh_port"], files, options["discovery_port"], answer)
        try:  # uvloop: about a sixth of the memory per idle TLS connection (docs/performance.md)
            import uvloop
        except ImportError:
            asyncio.run(serve)
        else:
            uvloop.run(serve)

    async def serve(self, host: str, enroll_port: int, mesh_port: int, files: identity.PkiFiles, discovery_port: int, answer: dict[str, Any] | None) -> None:
        from hub.asgi import application

        listener = EnrollmentListener(host, enroll_port, files)
        gateway = MeshGateway(host, mesh_port, files, application)
        await listener.start()
        await gateway.start()
        responder = DiscoveryResponder(host, discovery_port, answer) if answer else None
        if responder is not None:
            await responder.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await asyncio.gather(listener.close(), gateway.close(), *([responder.close()] if responder else []))
        logger.info("device listeners stopped")
