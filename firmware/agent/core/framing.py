"""Length-prefixed JSON frames, for MicroPython and CPython alike.

A frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON. Works on any
object with `write(bytes)` and `read(n)` (a socket's makefile, or an ssl socket wrapper).
"""

import json
import struct

MAX_FRAME = 65536
VERSION = 1


class FrameError(Exception):
    pass


def encode(message):
    payload = json.dumps(message).encode("utf-8")
    return struct.pack(">I", len(payload)) + payload


def read_exactly(stream, n):
    chunks = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise FrameError("connection closed after %d of %d bytes" % (got, n))
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(stream, max_size=MAX_FRAME):
    (length,) = struct.unpack(">I", read_exactly(stream, 4))
    if length == 0 or length > max_size:
        raise FrameError("frame length %d outside 1..%d" % (length, max_size))
    message = json.loads(read_exactly(stream, length).decode("utf-8"))
    if not isinstance(message, dict):
        raise FrameError("frame is not a JSON object")
    return message


def envelope(kind, body, message_id, issued_at_ms):
    return {"v": VERSION, "type": kind, "id": message_id, "issued_at": issued_at_ms, "body": body}


class FrameBuffer:
    """Reassembles frames from whatever chunks a socket returns (timeouts cut anywhere)."""

    def __init__(self, max_size=MAX_FRAME):
        self.max_size = max_size
        self.data = b""

    def feed(self, chunk):
        self.data += chunk
        frames = []
        while len(self.data) >= 4:
            (length,) = struct.unpack(">I", self.data[:4])
            if length == 0 or length > self.max_size:
                raise FrameError("frame length %d outside 1..%d" % (length, self.max_size))
            if len(self.data) < 4 + length:
                break
            message = json.loads(self.data[4 : 4 + length].decode("utf-8"))
            self.data = self.data[4 + length :]
            if not isinstance(message, dict):
                raise FrameError("frame is not a JSON object")
            frames.append(message)
        return frames
