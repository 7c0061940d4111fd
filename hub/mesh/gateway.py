"""The mesh gateway: an mTLS protocol server for Channels, as Daphne is for HTTP.

Each device connection becomes one application instance (routed under the `mesh` key
of the ASGI router, i.e. a `DeviceConsumer`) with scope
`{"type": "mesh", "node_id", "cert_serial", "peer"}`. The server owns the socket: the TLS
handshake (client certificate from the hub CA only, CRL checked, no session tickets),
the database re-check of the serial, framing with size and idle limits, a per-device
token bucket, a bounded outbound buffer, and one session per node. The consumer owns
the protocol: envelopes, anti-replay, the session, state and commands.

Messages between the two:
  server → consumer: `mesh.connect`, `mesh.frame {frame}`, `mesh.disconnect {reason, replaced}`
  consumer → server: `mesh.send {frame}`, `mesh.close {code, reason}`
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from cryptography import x509
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from audit.models import ActorType, Decision
from audit.services import Actor, Entry, record_many
from devices import delivery, events, identity
from devices.models import Certificate, CertificateStatus, DeviceStatus
from devices.session import sweepers as session_sweepers
from hub import messages, outages
from hub.mesh import framing
from hub.models import Heartbeat

logger = logging.getLogger("meshhub.gateway")

Application = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


def mesh_context(files: identity.PkiFiles) -> ssl.SSLContext:
    """TLS ≥ 1.2, client certificate required and checked against the hub CAs and their CRLs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.server_chain), str(files.server_key), password=files.passphrase)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(files.trust_bundle))
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.num_tickets = 0  # no resumption: a revoked certificate cannot ride an old session
    context.options |= ssl.OP_NO_TICKET
    return context


def refuse_resumed(ssl_object: Any) -> bool:
    """True when the handshake resumed a session: the gateway then closes without serving.

    Tickets are off (TLS 1.3 and 1.2), but TLS 1.2 session-ID resumption is not: CPython
    sets a session id context and OpenSSL keeps a server-side session cache per context,
    and Python's ssl has no SSL_CTX_set_session_cache_mode. A resumed handshake skips the
    certificate and CRL checks (the peer certificate comes from the cached session), so
    the only guarantee the stdlib offers is to look at `session_reused` after the
    handshake and refuse: every session starts with a full handshake, checked against the
    current CRL. Devices lose nothing (a full P-256 handshake is what they do anyway)."""
    return bool(getattr(ssl_object, "session_reused", False))


class AuditBatcher:
    """Gateway decisions are many and small: collect them and append in batches.

    While the database is away they wait in memory, at most `limit` of them
    (MESHHUB_AUDIT_BACKLOG_MAX), counting those being written. Past it the oldest go
    (ARCHITECTURE §7: oldest-first drop; a batch being written is not dropped mid-write, the
    oldest of the rest go), counted with the time range they covered (drops while a gap
    itself is being written go in the next gap), and the first append after the outage writes
    one `audit.gap` event ahead of the survivors: the hash chain shows the hole where it is
    instead of hiding it. The backlog's state is on /healthz (this process), in the
    gateway's heartbeat (/system/) and in the log (one line when dropping starts, one when
    the gap is recorded)."""

    def __init__(self, interval_s: float = 0.1, max_batch: int = 500, limit: int | None = None, source: str = "mesh gateway") -> None:
        self.interval_s = interval_s
        self.max_batch = max_batch
        self.limit = max(1, settings.MESH_AUDIT_BACKLOG_MAX if limit is None else limit)
        self.source = source
        self._pending: deque[tuple[datetime, Entry]] = deque()  # (when it happened, what)
        self._writing = 0  # taken out of _pending by a flush that has not finished
        self._gap_writing = False
        self._since_gap: tuple[datetime, datetime] | None = None  # (first, last) dropped while a gap is written
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self.dropped = 0  # lost since the last recorded gap
        self.dropped_first: datetime | None = None
        self.dropped_last: datetime | None = None
        self.dropped_total = 0
        self.gaps_recorded = 0
        outages.register_backlog(self)

    def add(self, entry: Entry) -> None:
        self._pending.append((timezone.now(), entry))
        self._trim()
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    def _trim(self) -> None:
        while self._pending and len(self._pending) + self._writing > self.limit:
            at, _ = self._pending.popleft()
            if self.dropped == 0:
                logger.error(
                    "audit backlog full (%d events): dropping the oldest until the database is back; the gap will be recorded",
                    self.limit,
                    extra={"source": self.source, "limit": self.limit},
                )
            self.dropped += 1
            self.dropped_total += 1
            self.dropped_first = at if self.dropped_first is None or at < self.dropped_first else self.dropped_first
            self.dropped_last = at if self.dropped_last is None or at > self.dropped_last else self.dropped_last
            if self._gap_writing:
                self._since_gap = (at, at) if self._since_gap is None else (min(self._since_gap[0], at), max(self._since_gap[1], at))

    def gap_entry(self) -> Entry | None:
        """The event that stands in the chain for the events dropped since the last gap."""
        if not self.dropped or self.dropped_first is None or self.dropped_last is None:
            return None
        return Entry(
            Actor.system(self.source),
            "audit.gap",
            Decision.DENY,
            target_type="audit",
            target_id=self.source,
            reason=(
                f"{self.dropped} audit events lost while the database was unavailable "
                f"(the backlog holds at most {self.limit}), from {self.dropped_first.isoformat()} to {self.dropped_last.isoformat()}"
            ),
            details={"lost": self.dropped, "first_at": self.dropped_first.isoformat(), "last_at": self.dropped_last.isoformat(), "limit": self.limit},
        )

    def backlog(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pending": len(self._pending) + self._writing,
            "limit": self.limit,
            "dropped": self.dropped,
            "dropping_since": self.dropped_first.isoformat() if self.dropped_first else None,
            "dropped_total": self.dropped_total,
            "gaps_recorded": self.gaps_recorded,
        }

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Append what is pending, oldest first (the gap first when there is one), in chunks;
        on failure the rest waits for the next try, within the bound."""
        while self._pending or self.dropped:
            gap = self.gap_entry()
            taken = [self._pending.popleft() for _ in range(min(len(self._pending), 10 * self.max_batch))]
            batch = ([gap] if gap is not None else []) + [entry for _, entry in taken]
            self._writing = len(taken)  # still pending (for the bound and /healthz) until written
            lost, self._gap_writing = (self.dropped, True) if gap is not None else (0, False)
            try:
                await database_sync_to_async(record_many)(batch)
            except Exception as exc:  # the database is away: keep them for the next try
                outages.report_failure(exc, "audit batcher")
                self._writing, self._gap_writing, self._since_gap = 0, False, None
                self._pending.extendleft(reversed(taken))
                self._trim()
                return
            self._writing, self._gap_writing = 0, False
            outages.report_success(outages.DATABASE)
            if gap is not None:
                logger.warning("recorded an audit gap: %s", gap.reason, extra={"source": self.source, **gap.details})
                self.gaps_recorded += 1
                # What was dropped while the gap was being written goes in the next one.
                since, self._since_gap = self._since_gap, None
                self.dropped -= lost
                self.dropped_first, self.dropped_last = since if self.dropped and since is not None else (None, None)

    async def close(self) -> None:
        """Stop the periodic flush by asking it to, not by cancelling it, then write what is
        left. A cancellation can be lost: a write's post-commit live push (a deny is an alert)
        runs on this loop through asgiref, which swallows the cancellation of the flush when
        that push completes anyway (channels-redis), so the flush went on for ever and the
        gateway's shutdown hung (seen once in CI). And a cancelled write whose thread then
        failed never put its events back."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.capacity = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


@dataclass
class Connection:
    node_id: str
    serial: str
    peer: str
    writer: asyncio.StreamWriter
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closing: bool = False
    close_reason: str = ""
    replaced: bool = False  # a newer session of the node took over: it owns the presence now
    reset_queued: bool = False  # the sweep handed this session a reset to deliver


def peer_identity(ssl_object: Any) -> tuple[str, str]:
    """node_id (the certificate's CN) and serial (lowercase hex) of the client certificate."""
    der = ssl_object.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return (str(names[0].value) if names else ""), format(cert.serial_number, "x")


def _check_certificate(node_id: str, serial: str) -> str | None:
    """The serial re-checked in the database after the handshake: the CRL may lag.

    Runs on the gateway's own check thread, whose connection stays open between calls
    (CONN_MAX_AGE) and is dropped when stale or broken, as after a request."""
    close_old_connections()
    cert = Certificate.objects.select_related("device").filter(serial=serial).first()
    if cert is None:
        return f"certificate {serial} was not issued by this hub"
    if cert.device.node_id != node_id:
        return f"certificate {serial} belongs to '{cert.device.node_id}', not '{node_id}'"
    if cert.status != CertificateStatus.ACTIVE:
        return f"certificate {serial} is {cert.status}"
    if cert.device.status != DeviceStatus.PROVISIONED:
        return f"device '{node_id}' is {cert.device.status}"
    if cert.first_used_at is None:
        Certificate.objects.filter(pk=cert.pk, first_used_at__isnull=True).update(first_used_at=timezone.now())
    return None


SHUTDOWN_CANCEL_ROUNDS = 5
RELOAD_LISTENER_BACKOFF_S = 0.5
RELOAD_LISTENER_BACKOFF_MAX_S = 10.0
SHUTDOWN_CANCEL_WAIT_S = 2.0


class MeshGateway:
    def __init__(self, host: str, port: int, files: identity.PkiFiles, application: Application) -> None:
        self.host = host
        self.port = port
        self.application = application
        self.context = mesh_context(files)
        self.sessions: dict[str, Connection] = {}
        self.instance_id = uuid.uuid4().hex  # in the scope: tells this gateway's sessions from others'
        self.audit = AuditBatcher(source=self.heartbeat_name)
        self.listener: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._acceptor: asyncio.Task[None] | None = None
        # Certificate re-checks on a thread of their own: a handshake never waits behind a state batch.
        self._checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mesh-cert-check")
        self._tasks: set[asyncio.Task[None]] = set()
        self._reloader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._stamper: asyncio.Task[None] | None = None
        self.started_at = timezone.now()
        self._closing = False  # set by close(): loops that outlive errors stop retrying

    @property
    def heartbeat_name(self) -> str:
        return f"gateway:{self.instance_id[:12]}"

    async def start(self) -> int:
        """Bind first: a port in use raises before any background task runs (which would
        otherwise be left running, and keep a failed process from exiting)."""
        self.loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(1024)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self.listener = listener
        self.port = listener.getsockname()[1]
        self.audit.start()
        events.state_subscribers.bind_loop(self.loop)
        self._reloader = self.loop.create_task(self._listen_for_reloads())
        self._sweeper = self.loop.create_task(self._sweep_outbox())
        self._acceptor = self.loop.create_task(self._accept_loop(listener))
        self._stamper = self.loop.create_task(self._stamp_alive())
        logger.info("mesh gateway listening on %s:%s (mTLS)", self.host, self.port, extra={"port": self.port})
        return self.port

    async def reload(self) -> None:
        """New CAs or CRL: a fresh context for new handshakes, built from the database."""
        files = await database_sync_to_async(identity.write_pki_files)()
        self.context = mesh_context(files)
        logger.info("mesh gateway reloaded its trust store and CRLs")

    async def _listen_for_reloads(self) -> None:
        """`pki.crl_changed` on group mesh.gateways (sent by revocation and rotation).

        A channel-layer outage ends the receive with an error: subscribe again (with backoff)
        once it is back, and reload then, for a change announced meanwhile is lost. Without
        this the listener died with the first Redis outage, and the gateway kept its old trust
        store (no new CA, a stale CRL) until a restart."""
        layer = get_channel_layer()
        if layer is None:
            return
        backoff = RELOAD_LISTENER_BACKOFF_S
        missed = False
        while not self._closing:
            channel = ""
            try:
                # The default prefix: channels-redis serves every process-local channel of one prefix
                # from a single receive loop; a second prefix would hold that lock and starve the
                # consumers' channels (their group messages would pile up in Redis).
                channel = await layer.new_channel()
                await layer.group_add(identity.GATEWAYS_GROUP, channel)
                outages.report_success(outages.CHANNEL_LAYER)
                if missed:
                    await self._reload_or_log()
                    missed = False
                backoff = RELOAD_LISTENER_BACKOFF_S
                while True:
                    message = await layer.receive(channel)
                    if message.get("type") == "pki.crl_changed":
                        await self._reload_or_log()
            except Exception as exc:  # the layer is away: listen again once it is back
                outages.report_failure(exc, "gateway reload listener")
                missed = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RELOAD_LISTENER_BACKOFF_MAX_S)
            finally:
                if channel:
                    try:
                        await layer.group_discard(identity.GATEWAYS_GROUP, channel)
                    except Exception as exc:  # the group entry expires on its own (group_expiry)
                        logger.debug("group_discard of the reload listener failed: %s", exc)

    async def _reload_or_log(self) -> None:
        try:
            await self.reload()
        except Exception:  # keep the old context; the serial re-check still guards
            logger.exception("could not reload the trust store")

    async def _sweep_outbox(self) -> None:
        """Every second, two queries: which connected nodes have pending commands, and which
        sessions stand on a certificate that is no longer active. A lost channel-layer
        message costs a second, never a command or a revocation."""
        while True:
            await asyncio.sleep(settings.MESH_OUTBOX_SWEEP_S)
            if not self.sessions:
                continue
            try:
                waiting = await database_sync_to_async(delivery.nodes_with_pending)(list(self.sessions))
                serials = {conn.serial: node_id for node_id, conn in self.sessions.items()}
                dead = await database_sync_to_async(delivery.inactive_serials)(list(serials))
                for_apps = await database_sync_to_async(session_sweepers.sweep)(list(self.sessions))
            except Exception as exc:  # the database is away; the next sweep tries again
                outages.report_failure(exc, "outbox sweep")
                continue
            outages.report_success(outages.DATABASE)
            for serial, reset_kind in dead.items():
                conn = self.sessions.get(serials[serial])
                if conn is None or conn.serial != serial or conn.closing:
                    continue
                if reset_kind and not conn.reset_queued:
                    # A reset must reach the device: its session.reset message can be lost
                    # (the in-memory layer does not wake a loop on another thread), and
                    # closing first would leave a device that never forgets its identity.
                    # The session signs and sends the frame, then closes; if it has not by
                    # the next sweep, that sweep closes it.
                    conn.reset_queued = True
                    conn.queue.put_nowait(dict(messages.session_reset(reset_kind)))
                    continue
                self._write(conn, framing.error_frame("revoked", f"certificate {serial} is no longer valid"))
                self._close(conn, "certificate no longer valid")
            for node_id in waiting:
                conn = self.sessions.get(node_id)
                if conn is not None and not conn.closing:
                    conn.queue.put_nowait(dict(messages.command_pending()))
            for node_id, queued in for_apps.items():
                conn = self.sessions.get(node_id)
                if conn is not None and not conn.closing:
                    for message in queued:
                        conn.queue.put_nowait(dict(message))

    def _write_heartbeat(self) -> None:
        # This thread's connection may have died with the database (an outage): drop it if so,
        # as _check_certificate does, or every stamp after the outage fails on it too.
        close_old_connections()
        subscribers = events.state_subscribers.snapshot()
        details = {
            "host": self.host,
            "port": self.port,
            "pid": os.getpid(),
            "connections": len(self.sessions),
            "started_at": self.started_at.isoformat(),
            "audit_backlog": self.audit.backlog(),
            "state_subscribers": {"queued": subscribers.queued, "dropped_batches": subscribers.dropped_batches, "dropped_reports": subscribers.dropped_reports},
        }
        Heartbeat.objects.update_or_create(name=self.heartbeat_name, defaults={"at": timezone.now(), "details": details})

    async def _stamp_alive(self) -> None:
        """Every GATEWAY_STAMP_S, this gateway's row: the system page counts live gateways
        and their connections from these (a row that stops moving is a dead gateway)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._checks, self._write_heartbeat)
            except Exception as exc:  # the database is away; the next stamp tries again
                outages.report_failure(exc, "gateway heartbeat")
            else:
                outages.report_success(outages.DATABASE)
            await asyncio.sleep(settings.GATEWAY_STAMP_S)

    def _forget_heartbeat(self) -> None:
        close_old_connections()
        Heartbeat.objects.filter(name=self.heartbeat_name).delete()

    @staticmethod
    async def _cancel(tasks: set[asyncio.Task[None]], what: str) -> None:
        """Cancel the tasks, and again while any is left: a cancellation can be lost inside
        channels-redis's blocking receive (a BRPOP loop whose timeout swallowed it; seen as a
        shutdown that hung for ever, about one in six runs on Redis), and a loop that outlives
        a channel-layer error (the reload listener, a session's receive) would then go on.
        Cancelling again reaches the receive it waits on; after the last round we go on."""
        pending = set(tasks)
        for _ in range(SHUTDOWN_CANCEL_ROUNDS):
            if not pending:
                return
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=SHUTDOWN_CANCEL_WAIT_S)
        if pending:
            logger.warning("%d %s did not stop on shutdown", len(pending), what)

    async def _cancel_sessions(self) -> None:
        await self._cancel(set(self._tasks), "sessions")

    async def close(self) -> None:
        self._closing = True
        background = {task for task in (self._acceptor, self._reloader, self._sweeper, self._stamper) if task is not None}
        await self._cancel(background, "background tasks")
        if self.listener is not None:
            self.listener.close()
        for conn in list(self.sessions.values()):
            self._close(conn, "gateway shutting down")
        await self._cancel_sessions()
        await events.state_subscribers.unbind_loop(asyncio.get_running_loop())
        await self.audit.close()
        await database_sync_to_async(connections.close_all)()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._checks, self._forget_heartbeat)
        except Exception:  # a stale row ages out of the system page by itself
            logger.warning("could not remove the gateway heartbeat", exc_info=True)
        await loop.run_in_executor(self._checks, connections.close_all)
        self._checks.shutdown(wait=False)

    def deny(self, actor_id: str, action: str, reason: str, **details: Any) -> None:
        self.audit.add(
            Entry(Actor(ActorType.DEVICE, actor_id), action, Decision.DENY, target_type="device", target_id=actor_id, reason=reason, details=details)
        )

    def allow(self, node_id: str, action: str, **details: Any) -> None:
        self.audit.add(Entry(Actor(ActorType.DEVICE, node_id), action, Decision.ALLOW, target_type="device", target_id=node_id, details=details))

    async def _accept_loop(self, listener: socket.socket) -> None:
        """Accept plain TCP here and hand each socket to TLS before anything reads it.

        Not `create_server(ssl=...)`: that swallows refused handshakes, which must be
        audited. Not plain streams upgraded with `start_tls()`: uvloop starts reading an
        accepted socket at once, so a ClientHello sent right after the TCP handshake would
        land in the plain stream and the handshake would hang.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                logger.warning("mesh accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._accept(sock, address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _accept(self, sock: socket.socket, address: Any) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            writer, reader = await self._handshake(sock, f"{address[0]}")
            if writer is not None:
                await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            if writer is not None:
                writer.close()

    async def _handshake(self, sock: socket.socket, peer: str) -> tuple[asyncio.StreamWriter | None, asyncio.StreamReader]:
        """TLS with the current context (a reload swaps it for new handshakes); a refusal is audited."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=settings.MESH_MAX_FRAME + 4)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, ssl=self.context, ssl_handshake_timeout=settings.MESH_HANDSHAKE_TIMEOUT_S)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            sock.close()
            detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            self.deny(f"unknown@{peer}", "mesh.handshake", f"TLS handshake refused: {detail}", peer=peer)
            return None, reader
        ssl_object = transport.get_extra_info("ssl_object")
        if refuse_resumed(ssl_object):
            node_id, serial = peer_identity(ssl_object)
            transport.abort()
            self.deny(node_id or f"unknown@{peer}", "mesh.handshake", "TLS session resumption refused: a full handshake is required", peer=peer, serial=serial)
            return None, reader
        return asyncio.StreamWriter(transport, protocol, reader, loop), reader  # type: ignore[arg-type]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{peername[0]}"
        node_id, serial = peer_identity(writer.get_extra_info("ssl_object"))
        try:
            problem = await asyncio.get_running_loop().run_in_executor(self._checks, _check_certificate, node_id, serial)
        except Exception as exc:
            if outages.report_failure(exc, "certificate re-check") is None:
                raise
            # Unverified is refused: the device retries with backoff until the database is back.
            reason = "the hub cannot check certificates now (database unavailable); retry later"
            self.deny(node_id or f"unknown@{peer}", "mesh.handshake", reason, peer=peer, serial=serial)
            await self._send_now(writer, framing.error_frame("unavailable", reason))
            return
        if problem:
            self.deny(node_id or f"unknown@{peer}", "mesh.handshake", problem, peer=peer, serial=serial)
            await self._send_now(writer, framing.error_frame("certificate_rejected", problem))
            return
        conn = Connection(node_id, serial, peer, writer)
        previous = self.sessions.get(node_id)
        if previous is not None:
            self.deny(node_id, "mesh.session.replaced", "a newer connection of the same node replaced this session", peer=previous.peer)
            previous.replaced = True
            self._close(previous, "replaced by a newer connection")
        self.sessions[node_id] = conn
        self.allow(node_id, "mesh.handshake", peer=peer, serial=serial)
        scope = {"type": "mesh", "node_id": node_id, "cert_serial": serial, "peer": peer, "gateway": self.instance_id}
        app = asyncio.get_running_loop().create_task(self._run_app(conn, scope))
        try:
            await conn.queue.put({"type": "mesh.connect"})
            await self._read_loop(conn, reader)
        finally:
            if self.sessions.get(node_id) is conn:
                del self.sessions[node_id]
            await conn.queue.put({"type": "mesh.disconnect", "reason": conn.close_reason or "connection closed", "replaced": conn.replaced})
            try:
                await asyncio.wait_for(app, 10)
            except (TimeoutError, asyncio.CancelledError):
                app.cancel()

    async def _run_app(self, conn: Connection, scope: dict[str, Any]) -> None:
        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "mesh.send":
                self._write(conn, framing.encode(message["frame"]))
            elif kind == "mesh.close":
                if message.get("code"):
                    self._write(conn, framing.error_frame(message["code"], message.get("reason", "")))
                self._close(conn, message.get("reason", "closed by the hub"))
            else:
                raise ValueError(f"unknown message type {kind!r} from the mesh application")

        try:
            await self.application(scope, conn.queue.get, send)
        except Exception as exc:  # a consumer bug, or an outage, closes this session, never the gateway
            outages.report_failure(exc, f"device consumer for {conn.node_id}")  # one line per outage; a bug's traceback
            self._close(conn, "internal error")

    async def _read_loop(self, conn: Connection, reader: asyncio.StreamReader) -> None:
        bucket = TokenBucket(settings.MESH_FRAMES_PER_S, settings.MESH_FRAME_BURST)
        strikes = 0
        while not conn.closing:
            try:
                frame = await framing.read_frame(reader, settings.MESH_MAX_FRAME, settings.MESH_IDLE_TIMEOUT_S)
            except framing.FrameError as error:
                if error.code != "closed":
                    self.deny(conn.node_id, "mesh.frame", error.reason, code=error.code)
                    self._write(conn, framing.error_frame(error.code, error.reason))
                conn.close_reason = error.reason
                self._close(conn, error.reason)
                return
            except (OSError, ssl.SSLError) as exc:
                conn.close_reason = f"connection lost: {exc}"
                return
            if not bucket.take(settings.MESH_FRAME_COSTS.get(str(frame.get("type")), 1.0)):
                strikes += 1
                if strikes == 1 or strikes % 100 == 0:
                    self.deny(conn.node_id, "mesh.frame", "rate limit exceeded", code="rate_limited", dropped=strikes)
                    self._write(conn, framing.error_frame("rate_limited", f"more than {settings.MESH_FRAMES_PER_S:g} frames/s; frame dropped", frame.get("id")))
                continue
            await conn.queue.put({"type": "mesh.frame", "frame": frame})

    def _write(self, conn: Connection, data: bytes) -> None:
        if conn.closing:
            return
        transport = conn.writer.transport
        if transport.get_write_buffer_size() > settings.MESH_MAX_OUTBOUND_BYTES:
            self.deny(conn.node_id, "mesh.send", "outbound buffer full: the device is not reading", code="slow_consumer")
            self._close(conn, "outbound buffer full")
            return
        conn.writer.write(data)

    def _close(self, conn: Connection, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        conn.close_reason = conn.close_reason or reason
        conn.writer.close()

    @staticmethod
    async def _send_now(writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), 5)
        except (TimeoutError, OSError, ssl.SSLError):
            pass  # it is going away anyway
