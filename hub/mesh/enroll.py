"""The enrollment listener: server-auth TLS, one `enroll` frame in, one answer out.

A device that has a one-time code but no certificate yet connects here, pins the hub's
CA by fingerprint, sends `enroll {code, pin, csr}` and gets `enrolled {cert, ca_chain,
hub_signing_key, release_key, mesh_host, mesh_port}` or `error {code, reason}`. Every
attempt is audited, never with the code or PIN in it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections

from audit.models import ActorType, Decision
from audit.services import Actor, record
from devices import identity
from hub.mesh import framing

logger = logging.getLogger("meshhub.enroll")


def server_context(files: identity.PkiFiles) -> ssl.SSLContext:
    """TLS ≥ 1.2 with the hub's server certificate; no client certificate asked for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.server_chain), str(files.server_key), password=files.passphrase)
    context.verify_mode = ssl.CERT_NONE
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    return context


@database_sync_to_async
def _audit_refusal(peer: str, code: str, reason: str) -> None:
    record(
        Actor(ActorType.DEVICE, f"unknown@{peer}"), "device.enroll", Decision.DENY, target_type="device", reason=reason, details={"peer": peer, "code": code}
    )


# Not thread-sensitive: the code check is a deliberate ~0.25 s of PBKDF2, which must not
# queue every other database call of this process behind it on the one shared thread.
def _enroll_sync(body: dict[str, Any], peer: str) -> dict[str, Any]:
    try:
        result = identity.complete_enrollment(body.get("code"), body.get("pin"), body.get("csr"), peer, body.get("node_id"))
        return result.response_body()
    finally:
        connections.close_all()  # pool threads come and go; do not leave their connections behind


_enroll = database_sync_to_async(_enroll_sync, thread_sensitive=False)


class EnrollmentListener:
    def __init__(self, host: str, port: int, files: identity.PkiFiles) -> None:
        self.host = host
        self.port = port
        self.context = server_context(files)
        self.limiter = framing.SlidingWindowLimiter(settings.ENROLL_ATTEMPTS_PER_MINUTE)
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Bind and listen; returns the bound port (useful with port 0)."""
        self.server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self.context, ssl_handshake_timeout=settings.ENROLL_HANDSHAKE_TIMEOUT_S, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]
        logger.info("enrollment listening on %s:%s (TLS, server auth)", self.host, self.port, extra={"port": self.port})
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self.server.wait_closed()
        # The database thread keeps a connection for reuse; give it back on shutdown.
        await database_sync_to_async(connections.close_all)()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except (TimeoutError, OSError, ssl.SSLError):
                pass  # the peer went away first; nothing left to flush

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer = str(peername[0])
        if not self.limiter.allow(peer):
            reason = f"more than {settings.ENROLL_ATTEMPTS_PER_MINUTE} enrollment attempts a minute from {peer}"
            await _audit_refusal(peer, "rate_limited", reason)
            await self._send(writer, framing.error_frame("rate_limited", reason))
            return
        ref = None
        try:
            message = await framing.read_frame(reader, settings.ENROLL_MAX_FRAME, settings.ENROLL_READ_TIMEOUT_S)
            ref = message.get("id") if isinstance(message.get("id"), str) else None
            body = framing.check_envelope(message, "enroll")
        except framing.FrameError as error:
            await _audit_refusal(peer, error.code, error.reason)
            if error.code != "closed":
                await self._send(writer, framing.error_frame(error.code, error.reason, ref))
            return
        try:
            answer = await _enroll(body, peer)
        except identity.IdentityError as refused:
            await self._send(writer, framing.error_frame(refused.code, refused.reason, ref))
            return
        await self._send(writer, framing.encode(framing.envelope("enrolled", answer, ref=ref)))
        logger.info("device %s enrolled from %s", answer["node_id"], peer, extra={"node_id": answer["node_id"], "peer": peer})

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), 5)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            logger.info("could not answer an enrollment client: %s", exc)
