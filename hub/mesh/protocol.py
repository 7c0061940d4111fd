"""Mesh protocol v1 envelopes, without Django: what a frame must look like, who may send
which type, and the anti-replay window (ARCHITECTURE §5).

The gateway runs every incoming frame through `check_device_frame()` and one
`ReplayWindow` per session direction; each refusal is a `ProtocolError` whose `code`
and `reason` go back in an `error` frame and into the audit log.
"""

from __future__ import annotations

import binascii
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

VERSION = 1
NONCE_BYTES = 16
MAX_ID_LENGTH = 64
MAX_TTL_MS = 3_600_000
DEFAULT_SKEW_MS = 5 * 60 * 1000

# What a device may send, and what only the hub sends. A device reports, acks and
# answers; it never commands, resets, provisions or rolls back anything.
DEVICE_TYPES = frozenset(
    {
        "hello", "state", "event", "ack", "result", "ping", "pong", "cert.renew", "boot", "health",
        "ota.accept", "ota.reject", "ota.chunk_ack", "ota.verify", "ota.status", "ota.complete", "error",
    }
)  # fmt: skip
HUB_TYPES = frozenset(
    {
        "welcome", "session", "command", "ack", "ping", "pong", "cert.renew", "cert.issued", "ota.offer", "ota.chunk",
        "ota.abort", "ota.rollback", "ota.clear", "reset", "error",
    }
)  # fmt: skip
HUB_ONLY_TYPES = HUB_TYPES - DEVICE_TYPES

ERROR_CODES = {
    "bad_frame": "the frame is not a valid envelope (the reason names the field)",
    "bad_version": "v is not 1",
    "unknown_type": "no such frame type",
    "forbidden_type": "a frame type only the hub may send",
    "wrong_node": "the frame names another node than the certificate's",
    "bad_session": "missing or wrong session token",
    "replayed_seq": "seq not above the last accepted one",
    "nonce_reused": "nonce seen before within its ttl",
    "clock_skew": "issued_at outside the allowed skew",
    "expired": "issued_at + ttl_ms is in the past",
    "not_supported": "a device frame type no app of this hub handles",
    "forbidden_scope": "the frame's handler needs a device scope this session was not granted",
}


class ProtocolError(Exception):
    """A frame refused; `code` is one of ERROR_CODES (or a flow-specific code)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    type: str
    id: str
    seq: int
    issued_at: int
    ttl_ms: int
    nonce: str
    session: str | None
    sig: str | None
    body: dict[str, Any]


def _int(message: dict[str, Any], field: str, low: int, high: int) -> int:
    value = message.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_frame", f"{field} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ProtocolError("bad_frame", f"{field} {value} outside {low}..{high}")
    return value


def _str(message: dict[str, Any], field: str, *, required: bool = True, max_length: int = 256) -> str | None:
    value = message.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_frame", f"{field} must be a non-empty string")
    if len(value) > max_length:
        raise ProtocolError("bad_frame", f"{field} longer than {max_length} characters")
    return value


def parse_envelope(message: dict[str, Any]) -> Envelope:
    """Field types and ranges of a v1 envelope; the body's content is the handler's job."""
    if message.get("v") != VERSION:
        raise ProtocolError("bad_version", f"unsupported protocol version {message.get('v')!r}; this hub speaks v{VERSION}")
    kind = _str(message, "type", max_length=32)
    assert kind is not None
    frame_id = _str(message, "id", max_length=MAX_ID_LENGTH)
    nonce = _str(message, "nonce", max_length=64)
    assert frame_id is not None and nonce is not None
    try:
        if len(binascii.a2b_base64(nonce)) != NONCE_BYTES:
            raise ValueError
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_frame", f"nonce must be {NONCE_BYTES} random bytes in base64") from None
    body = message.get("body")
    if not isinstance(body, dict):
        raise ProtocolError("bad_frame", "body must be a JSON object")
    return Envelope(
        type=kind,
        id=frame_id,
        seq=_int(message, "seq", 0, 2**53),
        issued_at=_int(message, "issued_at", 0, 2**53),
        ttl_ms=_int(message, "ttl_ms", 1, MAX_TTL_MS),
        nonce=nonce,
        session=_str(message, "session", required=False),
        sig=_str(message, "sig", required=False, max_length=512),
        body=body,
    )


def check_device_type(kind: str) -> None:
    """The capability matrix for device→hub frames."""
    if kind in DEVICE_TYPES:
        return
    if kind in HUB_ONLY_TYPES:
        raise ProtocolError("forbidden_type", f"devices may not send '{kind}' frames")
    raise ProtocolError("unknown_type", f"unknown frame type '{kind}'")


def check_node(body: dict[str, Any], node_id: str) -> None:
    """The node id is always the certificate's: a frame naming another node is refused."""
    claimed = body.get("node_id")
    if claimed is not None and claimed != node_id:
        raise ProtocolError("wrong_node", f"frame names node '{claimed}' but this session is '{node_id}'")


class ReplayWindow:
    """Anti-replay for one direction of one session: strictly increasing `seq`, nonces
    unique while their frame could still be accepted, `issued_at` within the skew, and
    `ttl_ms` not expired. Memory is bounded: nonces leave once their frame has expired,
    and past `max_nonces` the oldest go (the seq check alone still refuses replays).

    Clocks (docs/protocol.md "Clocks"): the first accepted frame (`hello`) measures the
    peer's clock offset (issued_at - receipt); beyond the skew it is refused `clock_skew`.
    Later frames are judged at receipt, allowing the skew (ARCHITECTURE §9), or against
    the receipt corrected by the measured offset: a frame either view accepts passes, so
    a device that cannot set its clock works within the skew, and one that follows the
    hub's clock (welcome `time_ms`) gets no more leeway than the skew."""

    def __init__(self, skew_ms: int = DEFAULT_SKEW_MS, max_nonces: int = 4096) -> None:
        self.skew_ms = skew_ms
        self.max_nonces = max_nonces
        self.last_seq = -1
        self.offset_ms: int | None = None  # the peer's clock minus ours, from its first frame
        self._nonces: OrderedDict[str, int] = OrderedDict()  # nonce → when it may be forgotten

    def check(self, envelope: Envelope, now_ms: int) -> None:
        """Accept (and remember) the frame, or raise ProtocolError; state changes only on accept."""
        issued_at, ttl_ms, skew = envelope.issued_at, envelope.ttl_ms, self.skew_ms
        offset = issued_at - now_ms if self.offset_ms is None else self.offset_ms
        if self.offset_ms is None and abs(offset) > skew:
            raise ProtocolError(
                "clock_skew", f"the device's clock is {describe_offset(offset)} the hub's (measured at {envelope.type}); allowed ±{skew / 1000:g} s"
            )
        # Expired only when both views say so: at receipt allowing the skew, and at the
        # receipt corrected by the measured offset.
        if issued_at + ttl_ms < now_ms - skew and issued_at - offset + ttl_ms < now_ms:
            late = now_ms - skew - issued_at - ttl_ms
            raise ProtocolError("expired", f"frame expired {late / 1000:.1f} s ago (ttl_ms {ttl_ms}, allowing the ±{skew / 1000:g} s skew)")
        drift = issued_at - offset - now_ms
        if abs(issued_at - now_ms) > skew and abs(drift) > skew:
            raise ProtocolError(
                "clock_skew",
                f"issued_at is {(issued_at - now_ms) / 1000:+.1f} s from the hub's clock and {drift / 1000:+.1f} s from it corrected by "
                f"this session's measured offset ({offset / 1000:+.1f} s); allowed ±{skew / 1000:g} s",
            )
        if envelope.seq <= self.last_seq:
            raise ProtocolError("replayed_seq", f"seq {envelope.seq} is not above the last accepted seq {self.last_seq}")
        self._forget_expired(now_ms)
        if envelope.nonce in self._nonces:
            raise ProtocolError("nonce_reused", "nonce was already used in this session")
        self.last_seq = envelope.seq
        self.offset_ms = offset
        # Neither view accepts the frame after issued_at + ttl + skew (|offset| <= skew).
        self._nonces[envelope.nonce] = issued_at + ttl_ms + skew
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)

    def _forget_expired(self, now_ms: int) -> None:
        while self._nonces:
            nonce, forget_at = next(iter(self._nonces.items()))
            if forget_at >= now_ms:
                break
            del self._nonces[nonce]

    def __len__(self) -> int:
        return len(self._nonces)


def describe_offset(offset_ms: int) -> str:
    """`360.0 s behind` / `240.0 s ahead of`, for reasons a person reads."""
    return f"{abs(offset_ms) / 1000:.1f} s " + ("behind" if offset_ms < 0 else "ahead of")


def signing_payload(frame: dict[str, Any], node_id: str) -> bytes:
    """The bytes the hub signs for `reset`/`ota` frames: what, to whom, when, which frame.
    The agent rebuilds them identically (firmware/agent/core/signing.py)."""
    import json

    subject = {"type": frame["type"], "id": frame["id"], "issued_at": frame["issued_at"], "node_id": node_id, "body": frame["body"]}
    return json.dumps(subject, sort_keys=True, separators=(",", ":")).encode("utf-8")
