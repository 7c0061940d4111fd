"""Wire framing shared by the hub's device listeners, without Django.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (one object).
The agent has its own MicroPython-compatible copy (firmware/agent/core/framing.py): the
hub never imports firmware/, and the two are tested against each other over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from collections import deque
from typing import Any

HEADER = struct.Struct(">I")
PROTOCOL_VERSION = 1


class FrameError(Exception):
    """A frame that could not be read or is not acceptable; `code` goes on the wire."""

    def __init__(self, code: str, reason: str, *, fatal: bool = True) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.fatal = fatal


def encode(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return HEADER.pack(len(payload)) + payload


def envelope(kind: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "type": kind, "id": str(uuid.uuid4()), "issued_at": int(time.time() * 1000), "body": body, **extra}


def error_frame(code: str, reason: str, ref: str | None = None) -> bytes:
    return encode(envelope("error", {"code": code, "reason": reason, "ref": ref}))


async def read_frame(reader: asyncio.StreamReader, max_size: int, timeout_s: float) -> dict[str, Any]:
    """Read one frame within `timeout_s`; a slow, oversized or malformed frame is a FrameError."""
    try:
        header = await asyncio.wait_for(reader.readexactly(HEADER.size), timeout_s)
    except TimeoutError:
        raise FrameError("timeout", f"no complete frame header within {timeout_s:g} s") from None
    except asyncio.IncompleteReadError as exc:
        raise FrameError("closed", "connection closed before a frame" if not exc.partial else "connection closed inside a frame header") from None
    (length,) = HEADER.unpack(header)
    if length == 0:
        raise FrameError("bad_frame", "empty frame")
    if length > max_size:
        raise FrameError("frame_too_large", f"frame of {length} bytes exceeds the {max_size}-byte limit")
    try:
        payload = await asyncio.wait_for(reader.readexactly(length), timeout_s)
    except TimeoutError:
        raise FrameError("timeout", f"frame body of {length} bytes not received within {timeout_s:g} s") from None
    except asyncio.IncompleteReadError:
        raise FrameError("closed", "connection closed inside a frame") from None
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError("bad_json", f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError("bad_frame", f"frame must be a JSON object, got {type(message).__name__}")
    return message


def check_envelope(message: dict[str, Any], expected_type: str) -> dict[str, Any]:
    """Version, type, id and body of an incoming frame; returns the body."""
    if message.get("v") != PROTOCOL_VERSION:
        raise FrameError("bad_version", f"unsupported protocol version {message.get('v')!r}; this hub speaks v{PROTOCOL_VERSION}")
    if message.get("type") != expected_type:
        raise FrameError("unexpected_type", f"expected a '{expected_type}' frame, got {message.get('type')!r}")
    if not isinstance(message.get("id"), str) or not message["id"]:
        raise FrameError("bad_frame", "frame id must be a non-empty string")
    body = message.get("body")
    if not isinstance(body, dict):
        raise FrameError("bad_frame", "frame body must be a JSON object")
    return body


class SlidingWindowLimiter:
    """At most `limit` events per `window_s` per key (a source address); bounded memory."""

    def __init__(self, limit: int, window_s: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._prune(now)
            events = self._events[key] = deque()
        while events and now - events[0] > self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def _prune(self, now: float) -> None:
        for key in [k for k, v in self._events.items() if not v or now - v[-1] > self.window_s]:
            del self._events[key]
        while len(self._events) >= self.max_keys:  # all busy: forget the oldest key
            del self._events[next(iter(self._events))]
