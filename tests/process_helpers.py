"""Helpers for tests that run hub processes (runhub, runmesh) against the test database."""

from __future__ import annotations

import os
import re
import selectors
import socket
import subprocess
import time

from django.conf import settings
from django.db import connection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    """Read the hub's log until a line matches; fail with the log if it never does."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    seen: list[str] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not selector.select(timeout=max(0.0, end - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"never saw {pattern!r}; log:\n{''.join(seen[-40:])}")
