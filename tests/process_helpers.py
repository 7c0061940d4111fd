"""Helpers for tests that run hub processes (runhub, runmesh) against the test database."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import time
from typing import Any

from django.conf import settings
from django.db import connection


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all bound at once (two separate binds may get the same port)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def hub_env() -> dict[str, str]:
    """Point the child at this test's (migrated) database, whichever mode we run in."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if settings.EMBEDDED:
        env["MESHHUB_SQLITE_PATH"] = str(connection.settings_dict["NAME"])
    else:
        db = connection.settings_dict
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    return env


def read_until(proc: subprocess.Popen[str], pattern: str, deadline_s: float) -> re.Match[str]:
    """Read the hub's log until a line matches (searching every line seen so far, so calls
    may ask in any order); fail with the log if none does by the deadline.

    Reads the pipe's file descriptor directly: `select()` beside the text wrapper's
    `readline()` misses lines that wrapper already buffered (two log lines written at
    once left the second unseen until the deadline)."""
    assert proc.stdout is not None
    log: dict[str, Any] = proc.__dict__.setdefault("_meshhub_log", {"lines": [], "partial": b""})
    regex = re.compile(pattern)
    searched = 0
    end = time.monotonic() + deadline_s
    fd = proc.stdout.fileno()
    while True:
        for line in log["lines"][searched:]:
            match = regex.search(line)
            if match:
                return match
        searched = len(log["lines"])
        remaining = end - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *complete, log["partial"] = (log["partial"] + chunk).split(b"\n")
        log["lines"].extend(raw.decode("utf-8", "replace") + "\n" for raw in complete)
    raise AssertionError(f"never saw {pattern!r}; log:\n{''.join(log['lines'][-40:])}")
