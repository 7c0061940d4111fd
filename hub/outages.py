"""What this process knows about its dependencies (database, channel layer, broker): which
is down, since when, with what error, and the audit backlog the gateways keep meanwhile.

Every place that finds a dependency away (a health check, a page, the gateway's batcher,
sweep and stamp) reports it here instead of logging a traceback per attempt: the log gets one
line when a dependency goes down and one when it is back (plus a reminder every
`REMIND_EVERY` while it stays down), and /healthz and the 503 page read the same state.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import redis
from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

logger = logging.getLogger("meshhub.outages")

REMIND_EVERY = timedelta(minutes=1)
DATABASE = "database"
CHANNEL_LAYER = "channel_layer"
BROKER = "broker"


def describe(exc: BaseException) -> str:
    """The error as one short line (psycopg's messages run over several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


# SQLite raises OperationalError for SQL mistakes too ("no such table"): only these say the
# file cannot be used right now.
SQLITE_UNAVAILABLE = ("locked", "unable to open", "disk i/o", "database or disk is full", "readonly")


def unavailable(exc: BaseException) -> str | None:
    """Which dependency an exception says is unreachable, or None for any other error
    (a bug, bad input): only these turn into a 503 instead of a 500."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        if isinstance(exc.__cause__, sqlite3.Error):
            return DATABASE if any(word in str(exc.__cause__).lower() for word in SQLITE_UNAVAILABLE) else None
        return DATABASE
    if isinstance(exc, DatabaseError) and "connection" in str(exc).lower():
        return DATABASE
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return CHANNEL_LAYER
    if isinstance(exc, KombuOperationalError):
        return BROKER
    return None


@dataclass
class Dependency:
    name: str
    down_since: datetime | None = None
    error: str = ""
    failures: int = 0
    _reminded_at: datetime | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, where: str = "") -> None:
        """Record a failed attempt; log only the transition to down (and a reminder)."""
        now = timezone.now()
        with self._lock:
            self.failures += 1
            self.error = describe(exc)
            if self.down_since is None:
                self.down_since = self._reminded_at = now
                logger.error("%s unavailable: %s", self.name, self.error, extra={"dependency": self.name, "where": where, "state": "down"})
            elif self._reminded_at is not None and now - self._reminded_at >= REMIND_EVERY:
                self._reminded_at = now
                down_s = int((now - self.down_since).total_seconds())
                logger.error(
                    "%s still unavailable after %d s (%d failed attempts): %s",
                    self.name,
                    down_s,
                    self.failures,
                    self.error,
                    extra={"dependency": self.name, "where": where, "state": "down", "down_s": down_s},
                )

    def succeeded(self) -> None:
        """An attempt worked: if it was down, log that it is back, once."""
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            down_s = round((timezone.now() - self.down_since).total_seconds(), 1)
            logger.warning(
                "%s available again after %s s (%d failed attempts)",
                self.name,
                down_s,
                self.failures,
                extra={"dependency": self.name, "state": "up", "down_s": down_s, "last_error": self.error},
            )
            self.down_since = None
            self.failures = 0
            self.error = ""

    def as_dict(self) -> dict[str, Any]:
        if self.down_since is None:
            return {"state": "up"}
        return {
            "state": "down",
            "since": self.down_since.isoformat(),
            "down_s": round((timezone.now() - self.down_since).total_seconds(), 1),
            "failures": self.failures,
            "error": self.error,
        }


DEPENDENCIES: dict[str, Dependency] = {name: Dependency(name) for name in (DATABASE, CHANNEL_LAYER, BROKER)}


def process_exiting() -> bool:
    """True once the interpreter has begun to exit. The main thread is still alive while
    `threading._shutdown` runs its exit hooks (concurrent.futures' refuses new work, then
    waits for its workers), so that alone is not enough: the flag it sets first is read too."""
    return getattr(threading, "_SHUTTING_DOWN", False) or not threading.main_thread().is_alive() or sys.is_finalizing()


def report_failure(exc: BaseException, where: str) -> str | None:
    """Record an outage error against the dependency it names and return which; any other
    error is a bug, logged with its traceback as before."""
    name = unavailable(exc)
    if name is None and process_exiting():
        # Work still running on another thread (a state batch's live push, after a gateway
        # stopped) finds the interpreter's executors shut down. Neither an outage nor a bug.
        logger.info("%s not done: the process is exiting (%s)", where, describe(exc))
        return None
    if name is None:
        logger.error("%s failed: %s", where, describe(exc), exc_info=exc)
        return None
    DEPENDENCIES[name].failed(exc, where)
    return name


def report_success(name: str) -> None:
    DEPENDENCIES[name].succeeded()


def database_connected(sender: Any, **kwargs: Any) -> None:
    """Django's `connection_created`: a new connection got through, so the database is up."""
    DEPENDENCIES[DATABASE].succeeded()


class Backlog(Protocol):
    def backlog(self) -> dict[str, Any]: ...


_backlogs: weakref.WeakSet[Any] = weakref.WeakSet()


def register_backlog(owner: Backlog) -> None:
    """An audit batcher of this process (a gateway's), for /healthz and the 503 page to show."""
    _backlogs.add(owner)


def audit_backlogs() -> list[dict[str, Any]]:
    return [owner.backlog() for owner in list(_backlogs)]
