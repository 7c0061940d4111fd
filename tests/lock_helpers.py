"""Two transactions that meet on PostgreSQL, run side by side: the test's own holds one
side's locks while `Beside` runs the other side in a second connection
(docs/architecture.md "Lock order")."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections


class Beside(threading.Thread):
    """`work` in a second connection while the test's transaction holds its locks: a lock
    it waits for too long fails it with a lock timeout, it never hangs the suite."""

    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__()
        self.work, self.errors, self.ready = work, list[BaseException](), threading.Event()  # ready: backend_pid known
        self.backend_pid = 0
        self.result: Any = None

    def run(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '20s'")
                cursor.execute("SELECT pg_backend_pid()")
                self.backend_pid = cursor.fetchone()[0]
            self.ready.set()
            self.result = self.work()
        except BaseException as exc:  # asserted on by the test
            self.errors.append(exc)
        finally:
            self.ready.set()
            connections.close_all()

    def until_waiting_for_a_lock(self) -> None:
        """Return once the other connection waits for a row lock (or has finished)."""
        self.ready.wait()
        with connection.cursor() as cursor:
            while self.is_alive():
                cursor.execute("SELECT pg_stat_clear_snapshot()")  # a transaction sees one snapshot otherwise
                cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [self.backend_pid])
                row = cursor.fetchone()
                if row and row[0] == "Lock":
                    return
                time.sleep(0.01)


def until_another_connection_waits_for_a_lock() -> None:
    """Return once some other connection to this database waits for a lock (work that runs
    on a thread of its own, such as a database_sync_to_async call inside `Beside`)."""
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)


def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer and no row locks to order")
