"""`manage.py runhub`: the embedded all-in-one hub.

Daphne serves the ASGI app in this process, and the device listeners (enrollment now,
the mesh gateway next) run on Daphne's event loop; a Celery worker with embedded beat runs as a
supervised child (restarted with backoff if it dies). SIGINT/SIGTERM stop Daphne, then
the child's whole process group, so nothing outlives the hub; the child also gets
SIGTERM from the kernel if this process dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from devices import identity
from firmware.simulate import PROFILE_CYCLE, PROFILE_FILE
from hub import system
from hub.mesh.discovery import DiscoveryResponder
from hub.mesh.enroll import EnrollmentListener
from hub.mesh.gateway import MeshGateway
from hub.settings import write_private_file

logger = logging.getLogger("meshhub.runhub")

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 15.0


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when the hub process dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the normal shutdown path still stops the child


class SupervisedProcess:
    """Keeps one child process running until stop(); restarts it with capped backoff."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name=f"supervise-{name}", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only the hub, which then stops us in order.
        self.proc = subprocess.Popen(self.argv, start_new_session=True, preexec_fn=_die_with_parent)
        logger.info("%s started", self.name, extra={"pid": self.proc.pid})

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            assert self.proc is not None
            try:
                code = self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                continue
            if self._stopping.is_set():
                return
            logger.error("%s exited with status %s; restarting in %.0fs", self.name, code, backoff, extra={"exit_code": code})
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 30.0)
            self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        logger.info("stopping %s", self.name, extra={"pid": proc.pid})
        try:
            # The worker's main process shuts its pool and beat down itself (warm shutdown).
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0fs; killing it", self.name, STOP_GRACE_S)
        except ProcessLookupError:
            return
        # Whatever is left of the group (pool children of a worker killed mid-shutdown) goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def worker_argv(concurrency: int) -> list[str]:
    """The Celery child. Its start-up banner (config and task list, some 30 lines in the
    middle of `make run`'s output) only at DEBUG, like its per-task lines (settings.LOGGING)."""
    quiet = [] if settings.LOG_LEVEL == "DEBUG" else ["--quiet"]
    return [
        sys.executable, "-m", "celery", "-A", "hub", *quiet, "worker", "--beat",
        "--loglevel", settings.LOG_LEVEL, "--concurrency", str(concurrency),
        "--hostname", "meshhub@%h",
    ]  # fmt: skip


# What the demo fleet's devices are called (the assistant matches these): "turn on the kitchen
# light", "set the greenhouse thermostat to 21". Devices past the list keep their node ids.
DEMO_NAMES = {
    "demo-thermostat-1": ("Greenhouse thermostat", ["greenhouse"]),
    "demo-relay-1": ("Kitchen light", []),
    "demo-dimmer-1": ("Desk lamp", ["reading light"]),
    "demo-door-1": ("Front door", []),
    "demo-meter-1": ("Main meter", ["electricity meter"]),
    "demo-thermostat-2": ("Office thermostat", ["office"]),
    "demo-relay-2": ("Hall light", []),
    "demo-dimmer-2": ("Bedroom lamp", []),
    "demo-door-2": ("Garage door", []),
    "demo-meter-2": ("Workshop meter", []),
}


def demo_fleet_argv(count: int, enroll_port: int) -> list[str]:
    """Enrollment codes for the demo devices that have no identity yet, then the simulator's
    command line: the demo fleet joins through the same enrollment port as hardware."""
    from django.utils import timezone

    from audit.services import Actor
    from devices.models import Certificate, CertificateStatus, Device

    root = settings.DATA_DIR / "demo"
    root.mkdir(mode=0o700, exist_ok=True)
    tickets = []
    for index in range(count):
        profile = PROFILE_CYCLE[index % len(PROFILE_CYCLE)]  # the simulator's own mix
        node_id = f"demo-{profile}-{index // len(PROFILE_CYCLE) + 1}"
        # The simulator runs each device as the profile named here, also for a state
        # directory made before it remembered profiles.
        (root / node_id).mkdir(mode=0o700, exist_ok=True)
        (root / node_id / PROFILE_FILE).write_text(profile + "\n")
        has_state = (root / node_id / "cert.pem").exists()
        has_cert = Certificate.objects.filter(device__node_id=node_id, status=CertificateStatus.ACTIVE).exists()
        if has_state and has_cert:
            continue
        if has_cert:  # its identity files are gone: start it over
            identity.revoke_device(Actor.system("runhub --demo"), node_id, "demo device lost its state directory")
        ticket = identity.create_enrollment(Actor.system("runhub --demo"), node_id, device_type=profile, ttl_s=3600).as_dict()
        tickets.append(ticket)
        if node_id in DEMO_NAMES:  # registered with its name before it enrolls; an operator's rename stays
            name, aliases = DEMO_NAMES[node_id]
            device, created = Device.objects.get_or_create(
                node_id=node_id, defaults={"device_type": profile, "name": name, "aliases": aliases, "named_at": timezone.now()}
            )
            if not created and device.name in ("", node_id):
                Device.objects.filter(pk=device.pk).update(name=name, aliases=aliases, named_at=timezone.now())
    codes = root / "enrollments.json"
    codes.unlink(missing_ok=True)
    write_private_file(codes, json.dumps(tickets))
    connections.close_all()
    return [
        sys.executable, "-m", "firmware.simulate", "--devices", str(count), "--state-root", str(root),
        "--enrollments", str(codes), "--enroll-host", "127.0.0.1", "--enroll-port", str(enroll_port),
    ]  # fmt: skip


def unapplied_migrations() -> list[str]:
    connection = connections["default"]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


class Command(BaseCommand):
    help = "Run the embedded hub: web (Daphne) and a supervised Celery worker with beat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HTTP_HOST, help="address to bind (MESHHUB_HTTP_HOST)")
        parser.add_argument("--port", type=int, default=settings.HTTP_PORT, help="HTTP port (MESHHUB_HTTP_PORT)")
        parser.add_argument("--no-worker", action="store_true", help="do not start the Celery worker/beat child")
        parser.add_argument("--device-host", default=settings.DEVICE_BIND, help="address the device listeners bind (MESHHUB_DEVICE_BIND)")
        parser.add_argument("--enroll-port", type=int, default=settings.ENROLL_PORT, help="enrollment port (MESHHUB_ENROLL_PORT)")
        parser.add_argument("--mesh-port", type=int, default=settings.MESH_PORT, help="device mTLS port (MESHHUB_MESH_PORT)")
        parser.add_argument("--discovery-port", type=int, default=settings.DISCOVERY_PORT, help="UDP discovery port, 0 = off (MESHHUB_DISCOVERY_PORT)")
        parser.add_argument("--concurrency", type=int, default=settings.WORKER_CONCURRENCY)
        parser.add_argument("--demo", type=int, default=0, metavar="N", help="also run N simulated devices that enroll through the real flow")

    def handle(self, *args: Any, **options: Any) -> None:
        pending = unapplied_migrations()
        if pending:
            raise CommandError(f"{len(pending)} migrations not applied (first: {pending[0]}); run `python manage.py migrate`")
        try:
            pki_files = identity.ensure_hub_identity()
        except identity.IdentityError as exc:
            raise CommandError(exc.reason) from None
        if not options["no_worker"]:
            system.record_hub_start()  # /system/ shows the worker and beat as starting, not down, until they are due
        connections.close_all()

        # Importing daphne.server installs Twisted's asyncio reactor; it must come first.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server, twisted_loop
        from twisted.internet import defer, reactor

        from hub.asgi import application

        identity.warn_if_devices_dial_elsewhere(options["enroll_port"], options["mesh_port"])
        enroll_listener = EnrollmentListener(options["device_host"], options["enroll_port"], pki_files)
        gateway = MeshGateway(options["device_host"], options["mesh_port"], pki_files, application)
        responder = None
        if options["discovery_port"]:
            answer = identity.discovery_answer(options["enroll_port"], options["mesh_port"])
            responder = DiscoveryResponder(options["device_host"], options["discovery_port"], answer)

        def start_device_listeners() -> None:
            """On Daphne's event loop, so web and device listeners share one process."""

            def started(task: asyncio.Task[int]) -> None:
                if task.exception() is not None:
                    logger.critical("a device listener failed to start: %s", task.exception())
                    server.stop()

            twisted_loop.create_task(enroll_listener.start()).add_done_callback(started)
            twisted_loop.create_task(gateway.start()).add_done_callback(started)
            if responder is not None:
                twisted_loop.create_task(responder.start()).add_done_callback(started)

            async def close_all() -> None:
                await asyncio.gather(enroll_listener.close(), gateway.close(), *([responder.close()] if responder else []))

            def close_listeners() -> defer.Deferred[None]:
                return defer.Deferred.fromFuture(asyncio.ensure_future(close_all(), loop=twisted_loop))

            reactor.addSystemEventTrigger("before", "shutdown", close_listeners)  # type: ignore[arg-type]  # zope stubs count `self`

        worker = None if options["no_worker"] else SupervisedProcess("celery worker+beat", worker_argv(options["concurrency"]))
        host, port = options["host"], options["port"]

        def ready() -> None:
            start_device_listeners()
            for listener in server.listening_addresses:
                logger.info("meshhub web listening on http://%s:%s/", listener[0], listener[1], extra={"host": listener[0], "port": listener[1]})
            logger.info(
                "mode %s, data dir %s",
                "embedded" if settings.EMBEDDED else "production",
                settings.DATA_DIR,
                extra={
                    "database": connections["default"].vendor,
                    "channel_layer": str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1],
                },
            )

        server = Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            ready_callable=ready,
            verbosity=0,
            http_timeout=None,
            websocket_timeout=86400,
        )
        demo = None
        if options["demo"] > 0:
            demo = SupervisedProcess("demo fleet", demo_fleet_argv(options["demo"], options["enroll_port"]))
        if worker is not None:
            worker.start()
        if demo is not None:
            demo.start()
        try:
            server.run()
        finally:
            if demo is not None:
                demo.stop()
            if worker is not None:
                worker.stop()
            logger.info("meshhub stopped")
