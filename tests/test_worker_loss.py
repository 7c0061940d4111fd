"""A Celery worker killed in the middle of a PLC write: the command still completes, and the
PLC sees its value changed once (a `toggle` that ran twice would flip the coil back).

Real parts: a `celery -A hub worker --beat` process on the test's database and broker (the
filesystem broker embedded, Redis in production), a pymodbus server started here that holds
the write on the wire while the test SIGKILLs the worker's whole process group, then lets
the write land (as a PLC applies a request whose client has gone away)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from audit.services import Actor
from devices import services
from devices.models import Command, CommandStatus, Device
from industrial import config
from tests.mesh_helpers import wait_for
from tests.modbus_server import ModbusTestServer, modbus_server_fixture  # noqa: F401
from tests.process_helpers import hub_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LEASE_S = 3


class Worker:
    """One `celery worker --beat` process with a short write lease and a fast sweep."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        env = hub_env()
        env["MESHHUB_PLC_WRITE_LEASE_S"] = str(LEASE_S)
        env["MESHHUB_PLC_COMMAND_SWEEP_S"] = "1"
        self.log_path = tmp_path / f"{name}.log"
        self.log_file = self.log_path.open("w")
        argv = [
            sys.executable, "-m", "celery", "-A", "hub", "worker", "--beat", "--loglevel", "INFO",
            "--concurrency", "1", "--hostname", f"{name}-{uuid.uuid4().hex[:6]}@%h",
            "--schedule", str(tmp_path / f"{name}-beat"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool and beat children: nothing gets to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
        self.log_file.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def test_a_worker_killed_mid_write_leaves_a_command_that_completes_once(modbus_server: ModbusTestServer, workers: list[Worker], tmp_path: Path) -> None:
    config.import_document(
        Actor("user", "root"),
        {
            "bridges": [
                {
                    "node_id": "plc-line-1", "host": "127.0.0.1", "port": modbus_server.port, "unit_id": 1,
                    "timeout_s": 1.0, "retries": 0, "poll_interval_s": 60,
                    "points": [{"capability": "running", "register": "coil", "address": 0, "data_type": "bool", "writable": True}],
                }
            ]
        },
    )  # fmt: skip
    assert modbus_server.get_coils(0) == [False]
    modbus_server.hold_writes("coils", 0)

    workers.append(Worker(tmp_path, "first"))
    command = services.send_command(Actor("user", "alice"), "plc-line-1", "toggle", "running", None)
    try:
        wait_for(lambda: modbus_server.held_writes == 1, timeout_s=60)
    except AssertionError:
        raise AssertionError(f"the write never reached the PLC; worker log:\n{workers[0].log()[-4000:]}") from None

    # The target was decided and kept before the wire: a later run writes it, not its own.
    from industrial.models import PlcWriteClaim

    assert PlcWriteClaim.objects.get(command_id=command.pk).wanted == {"value": True}
    workers[0].kill()
    modbus_server.release_writes()  # the dead worker's write lands on the PLC after all
    wait_for(lambda: modbus_server.get_coils(0) == [True], timeout_s=30)

    workers.append(Worker(tmp_path, "second"))
    try:
        wait_for(lambda: Command.objects.get(pk=command.pk).status == CommandStatus.SUCCEEDED, timeout_s=90)
    except AssertionError:
        status = Command.objects.get(pk=command.pk).status
        raise AssertionError(f"the command stayed {status}; second worker's log:\n{workers[1].log()[-4000:]}") from None

    done = Command.objects.get(pk=command.pk)
    assert done.result is not None and done.result.get("value") is True, done.result
    assert modbus_server.get_coils(0) == [True], "toggled once: a second toggle would have switched it off again"
    assert modbus_server.held_writes == 1
    writes = list(AuditEvent.objects.filter(action="modbus.write", decision="allow"))
    assert len(writes) == 1, [w.details for w in writes]
    assert writes[0].details["written_by"].startswith("an earlier run"), writes[0].details
    assert "taken over from a run that did not finish" in workers[1].log()


def test_a_pending_plc_command_whose_task_was_lost_is_swept(modbus_server: ModbusTestServer, workers: list[Worker], tmp_path: Path, settings: Any) -> None:
    """The broker was away when the command was created (or the message went with a killed
    worker): nothing in the queue, the outbox row pending. The sweep queues it again."""
    config.import_document(
        Actor("user", "root"),
        {
            "bridges": [
                {
                    "node_id": "plc-line-1", "host": "127.0.0.1", "port": modbus_server.port, "unit_id": 1,
                    "timeout_s": 1.0, "retries": 0, "poll_interval_s": 60,
                    "points": [{"capability": "speed", "register": "holding", "address": 10, "data_type": "u16", "writable": True, "min": 0, "max": 3000}],
                }
            ]
        },
    )  # fmt: skip
    from devices import events
    from industrial import hooks

    events.created_hooks.remove(hooks.queue_plc_command)  # this command's task is never queued
    try:
        command = services.send_command(Actor("user", "alice"), "plc-line-1", "set", "speed", 1234)
    finally:
        events.created_hooks.append(hooks.queue_plc_command)
    assert Command.objects.get(pk=command.pk).status == CommandStatus.PENDING

    workers.append(Worker(tmp_path, "sweeper"))
    wait_for(lambda: Command.objects.get(pk=command.pk).status == CommandStatus.SUCCEEDED, timeout_s=90)
    assert modbus_server.get_holding(10) == [1234]


def test_a_worker_killed_mid_poll_leaves_polling_that_resumes(modbus_server: ModbusTestServer, workers: list[Worker], tmp_path: Path) -> None:
    """The poll's lease is what a killed poller leaves behind: it must expire on its own
    (a flag would stop that PLC's polling for good), and the next worker's polls store
    values again."""
    from industrial.models import ModbusBridge

    config.import_document(
        Actor("user", "root"),
        {
            "bridges": [
                {
                    "node_id": "plc-line-1", "host": "127.0.0.1", "port": modbus_server.port, "unit_id": 1,
                    "timeout_s": 1.0, "retries": 0, "poll_interval_s": 1,
                    "points": [{"capability": "speed", "register": "holding", "address": 10, "data_type": "u16"}],
                }
            ]
        },
    )  # fmt: skip
    modbus_server.set_holding(10, [111])
    modbus_server.hold_reads("holding", 10)

    workers.append(Worker(tmp_path, "poller"))
    try:
        wait_for(lambda: modbus_server.held_reads >= 1, timeout_s=60)
    except AssertionError:
        raise AssertionError(f"no poll reached the PLC; worker log:\n{workers[0].log()[-4000:]}") from None
    bridge = ModbusBridge.objects.get(device__node_id="plc-line-1")
    assert bridge.lease_until is not None, "the poll in flight holds the bridge's lease"
    workers[0].kill()
    modbus_server.release_reads()  # the dead poller's read is answered to nobody
    assert ModbusBridge.objects.get(pk=bridge.pk).lease_until == bridge.lease_until  # left behind by the killed poll
    assert Device.objects.get(node_id="plc-line-1").reported.get("speed") is None

    modbus_server.set_holding(10, [222])
    workers.append(Worker(tmp_path, "next-poller"))
    try:
        # The values commit first, then the poll's bookkeeping on the bridge row: wait for both.
        wait_for(
            lambda: Device.objects.get(node_id="plc-line-1").reported.get("speed") == 222 and ModbusBridge.objects.get(pk=bridge.pk).last_ok_at is not None,
            timeout_s=90,
        )
    except AssertionError:
        raise AssertionError(f"polling did not resume; worker log:\n{workers[1].log()[-4000:]}") from None
    after = ModbusBridge.objects.get(pk=bridge.pk)
    assert after.last_ok_at is not None and after.last_ok_at >= bridge.lease_until, "the next poll ran once the dead poll's lease had passed"
