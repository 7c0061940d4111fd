"""LAN discovery: a device with only an enrollment code asks "where is the hub?" over UDP.

Probe: one datagram of at least 1,024 bytes (padding included) holding
`{"v": 1, "type": "discover", ...}`; the padding requirement keeps the answer from
being an amplification: the reply is never larger than the probe. Answer:
`{"v": 1, "type": "hub", "body": {hub_version, enroll_host, enroll_port, mesh_host,
mesh_port, ca_fingerprint}}`. The device still pins the CA fingerprint from its code's
QR or printout: discovery only says where to dial, never whom to trust.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from hub.mesh import framing

logger = logging.getLogger("meshhub.discovery")

MIN_PROBE_BYTES = 1024


class DiscoveryProtocol(asyncio.DatagramProtocol):
    def __init__(self, answer: dict[str, Any], limiter: framing.SlidingWindowLimiter) -> None:
        self.answer = json.dumps({"v": 1, "type": "hub", "body": answer}, separators=(",", ":")).encode()
        self.limiter = limiter
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # a datagram transport (asyncio's is not a DatagramTransport subclass)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) < MIN_PROBE_BYTES or len(data) < len(self.answer) or not self.limiter.allow(str(addr[0])):
            return  # silently: a UDP answer to garbage is an attack tool
        try:
            probe = json.loads(data.decode("utf-8").rstrip(" \x00"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if isinstance(probe, dict) and probe.get("v") == 1 and probe.get("type") == "discover" and self.transport is not None:
            self.transport.sendto(self.answer, addr)


class DiscoveryResponder:
    def __init__(self, host: str, port: int, answer: dict[str, Any]) -> None:
        self.host = host
        self.port = port
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        limiter = framing.SlidingWindowLimiter(30)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: DiscoveryProtocol(self.answer, limiter), local_addr=(self.host, self.port), allow_broadcast=True
        )
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        logger.info("discovery answering on udp %s:%s", self.host, self.port, extra={"port": self.port})
        return self.port

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
