"""A real Modbus TCP server (pymodbus 3.16) for tests and benchmarks of the Modbus poller.

Why a real server and not a mocked client: the poller's interesting failures (exception
responses, dropped connections, a PLC that restarts) live in the framing and transport
layers, which a mock skips. The server runs in a background thread with its own asyncio
loop, so sync pytest tests and Celery-task code under test (same process) can both use it.

Data lives in the non-deprecated simulator model: a ``SimDevice`` holding four distinct
blocks (coils, discrete inputs, holding registers, input registers) built from ``SimData``.
``ModbusSequentialDataBlock``/``ModbusDeviceContext``/``ModbusServerContext`` log a
deprecation warning in 3.16 (pymodbus/datastore/context.py:66, :121) and go away in v4.
Values are changed while running through the server's own ``async_getValues`` /
``async_setValues`` (pymodbus/server/base.py:109, :125), run on the server loop.

Injected failures use the simulator's ``action`` hook (pymodbus/simulator/simdevice.py:91-115),
which may return an exception code for a request. For coils and discrete inputs pymodbus
hands the hook the 16-bit words a request touches, not its bit count
(pymodbus/simulator/simruntime.py:88-93), so bit failures work at 16-coil granularity.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

RegisterType = Literal["coils", "discrete", "holding", "input"]

# One function code per table that pymodbus's simulator maps to it (simruntime.py:18-30);
# used for the helper's own reads and writes, which go through the same datastore path.
_READ_FC: dict[RegisterType, int] = {"coils": 1, "discrete": 2, "holding": 3, "input": 4}
_WRITE_FC: dict[RegisterType, int] = {"coils": 15, "discrete": 2, "holding": 16, "input": 4}
_TABLE_OF_FC: dict[int, RegisterType] = {1: "coils", 5: "coils", 15: "coils", 2: "discrete", 4: "input"}
_TABLE_OF_FC.update(dict.fromkeys((3, 6, 16, 22, 23), "holding"))
_READ_FCS = frozenset({1, 2, 3, 4, 23})
_BIT_TABLES: frozenset[RegisterType] = frozenset({"coils", "discrete"})

# Set inside the helper's own datastore calls so injected failures only hit network clients.
_HELPER_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("modbus_test_server_helper_call", default=False)

_T = TypeVar("_T")

# How long stop() waits for accepts and requests already under way before it cuts them off.
_DRAIN_S = 1.0


@dataclass(frozen=True)
class _Failure:
    table: RegisterType
    first: int
    end: int  # exclusive
    code: ExcCodes
    on_read: bool
    on_write: bool


class ModbusTestServer:
    """A pymodbus Modbus TCP server on 127.0.0.1, one device, zero-filled tables.

    ``start()``/``stop()``/``restart()`` model a PLC that goes away and comes back on the
    same port; the table contents survive a restart (like retentive PLC memory).
    """

    def __init__(
        self,
        coils: int = 2000,
        discrete_inputs: int = 2000,
        holding: int = 2000,
        input_registers: int = 2000,
        device_id: int = 1,
        port: int = 0,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
    ) -> None:
        """Sizes are counts from address 0; bit tables are padded by pymodbus to a multiple of 16.

        Requests for another unit id than ``device_id`` get exception 4 (DEVICE_FAILURE): pymodbus
        looks the id up, falls back to a device 0 and fails with a KeyError (simcore.py:36).
        ``device_id=0`` answers every unit id.
        """
        sizes: dict[RegisterType, int] = {"coils": coils, "discrete": discrete_inputs, "holding": holding, "input": input_registers}
        for table, size in sizes.items():
            if not 1 <= size <= 65536:
                raise ValueError(f"{table}: size {size} must be 1..65536")
        self.sizes = sizes
        self.device_id = device_id
        self.host = host
        self.port = port
        self.timeout = timeout
        self._values: dict[RegisterType, list[int] | list[bool]] = {
            "coils": [False] * coils,
            "discrete": [False] * discrete_inputs,
            "holding": [0] * holding,
            "input": [0] * input_registers,
        }
        self._failures: tuple[_Failure, ...] = ()
        self._holds: tuple[tuple[RegisterType, int, int, asyncio.Event], ...] = ()
        self.held_writes = 0  # write requests that reached a hold (and waited there)
        self._read_holds: tuple[tuple[RegisterType, int, int, asyncio.Event], ...] = ()
        self.held_reads = 0  # read requests that reached a hold
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> ModbusTestServer:
        """Listen (on ``port``, or a free one the first time when it is 0) and return once accepting."""
        if self._thread is not None:
            raise RuntimeError("ModbusTestServer is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name=f"modbus-test-server-{self.port or 'new'}", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._run(self._listen())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every open client connection, keep the data, end the loop thread.

        Requests the server is already processing are answered first (up to ``_DRAIN_S``); every
        later request finds the connection closed. To simulate a PLC that dies mid-request, use
        a raw socket server that reads and closes instead.
        """
        if self._thread is None:
            return
        try:
            if self._server is not None:
                self._run(self._shutdown())
        finally:
            self._stop_loop()

    def restart(self) -> None:
        """Stop and start again on the same port with the same data, like a PLC power cycle."""
        self.stop()
        self.start()

    def __enter__(self) -> ModbusTestServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------ data access

    def set_holding(self, address: int, values: Sequence[int]) -> None:
        self._set("holding", address, values)

    def set_input(self, address: int, values: Sequence[int]) -> None:
        self._set("input", address, values)

    def set_coils(self, address: int, values: Sequence[bool]) -> None:
        self._set("coils", address, values)

    def set_discrete(self, address: int, values: Sequence[bool]) -> None:
        self._set("discrete", address, values)

    def get_holding(self, address: int, count: int = 1) -> list[int]:
        return [int(v) for v in self._get("holding", address, count)]

    def get_input(self, address: int, count: int = 1) -> list[int]:
        return [int(v) for v in self._get("input", address, count)]

    def get_coils(self, address: int, count: int = 1) -> list[bool]:
        return [bool(v) for v in self._get("coils", address, count)]

    def get_discrete(self, address: int, count: int = 1) -> list[bool]:
        return [bool(v) for v in self._get("discrete", address, count)]

    # ------------------------------------------------------- injected failures

    def fail_reads(self, register_type: RegisterType, address: int, count: int = 1, exception_code: int = ExcCodes.ILLEGAL_ADDRESS) -> None:
        """Answer reads touching ``address..address+count-1`` with a Modbus exception (default 2).

        Bit tables fail per 16-coil word (see module docstring): align to 16 for exact edges.
        """
        self._add_failure(register_type, address, count, exception_code, on_read=True, on_write=False)

    def fail_writes(self, register_type: RegisterType, address: int, count: int = 1, exception_code: int = ExcCodes.ILLEGAL_ADDRESS) -> None:
        """Answer writes touching the range with a Modbus exception; the data is left unchanged."""
        self._add_failure(register_type, address, count, exception_code, on_read=False, on_write=True)

    def clear_failures(self) -> None:
        self._failures = ()

    def hold_writes(self, register_type: RegisterType, address: int, count: int = 1) -> None:
        """Keep write requests touching the range waiting (unanswered, not applied) until
        `release_writes()`: a PLC write in flight, for a test that kills its writer."""
        self._check_range(register_type, address, count)
        first, end = address, address + count
        if register_type in _BIT_TABLES:
            first, end = first // 16 * 16, (end + 15) // 16 * 16
        self._holds = (*self._holds, (register_type, first, end, asyncio.Event()))

    def release_writes(self) -> None:
        """Let every held write go on (each is then applied, as a PLC applies a request whose
        client has gone away) and hold no more."""
        holds, self._holds = self._holds, ()
        assert self._loop is not None
        for *_, event in holds:
            self._loop.call_soon_threadsafe(event.set)

    def hold_reads(self, register_type: RegisterType, address: int, count: int = 1) -> None:
        """Keep read requests touching the range unanswered until `release_reads()`: a poll
        in flight, for a test that kills its poller."""
        self._check_range(register_type, address, count)
        first, end = address, address + count
        if register_type in _BIT_TABLES:
            first, end = first // 16 * 16, (end + 15) // 16 * 16
        self._read_holds = (*self._read_holds, (register_type, first, end, asyncio.Event()))

    def release_reads(self) -> None:
        """Answer every held read and hold no more."""
        holds, self._read_holds = self._read_holds, ()
        assert self._loop is not None
        for *_, event in holds:
            self._loop.call_soon_threadsafe(event.set)

    # ----------------------------------------------------------------- internals

    def _add_failure(self, table: RegisterType, address: int, count: int, code: int, *, on_read: bool, on_write: bool) -> None:
        self._check_range(table, address, count)
        first, end = address, address + count
        if table in _BIT_TABLES:  # widen to the 16-bit words the action hook can see
            first, end = first // 16 * 16, (end + 15) // 16 * 16
        # Replace the tuple, never mutate it: the server thread reads it without a lock.
        self._failures = (*self._failures, _Failure(table, first, end, ExcCodes(code), on_read, on_write))

    async def _action(
        self, function_code: int, start_address: int, address: int, count: int, registers: list[int], set_values: list[int] | list[bool] | None
    ) -> ExcCodes | None:
        """The simulator's per-request hook: return an exception code to fail the request."""
        if _HELPER_CALL.get() or (table := _TABLE_OF_FC.get(function_code)) is None:
            return None
        holds = self._holds if set_values is not None else self._read_holds if function_code in _READ_FCS else ()
        if holds:
            first = address // 16 * 16 if table in _BIT_TABLES else address
            end = first + count * 16 if table in _BIT_TABLES else address + count
            for held_table, held_first, held_end, released in holds:
                if held_table == table and first < held_end and held_first < end:
                    if set_values is not None:
                        self.held_writes += 1
                    else:
                        self.held_reads += 1
                    await released.wait()
                    break
        if not self._failures:
            return None
        # Classify by what the request does: fc 5/6 read their value back after writing it
        # (pymodbus/pdu/register_message.py:223, bit_message.py:109), which is not a read request.
        is_write = set_values is not None
        if not is_write and function_code not in _READ_FCS:
            return None
        if table in _BIT_TABLES:  # address is a bit number, count the number of 16-bit words touched
            first = address // 16 * 16
            end = first + count * 16
        else:
            first, end = address, address + count
        for failure in self._failures:
            if failure.table == table and (failure.on_write if is_write else failure.on_read) and first < failure.end and failure.first < end:
                return failure.code
        return None

    def _build_device(self) -> SimDevice:
        def block(table: RegisterType) -> list[SimData]:
            datatype = DataType.BITS if table in _BIT_TABLES else DataType.REGISTERS
            return [SimData(address=0, values=list(self._values[table]), datatype=datatype)]

        return SimDevice(id=self.device_id, simdata=(block("coils"), block("discrete"), block("holding"), block("input")), action=self._action)

    async def _listen(self) -> None:
        # ModbusTcpServer must be built on the loop that will serve it (it grabs the running loop).
        server = ModbusTcpServer(self._build_device(), address=(self.host, self.port))
        await server.serve_forever(background=True)
        self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # an asyncio.Server
        self._server = server

    async def _shutdown(self) -> None:
        server = self._server
        assert server is not None
        # Stop accepting, but keep the listening socket open until accepts already under way
        # have become connections: asyncio's Server.close() makes such an accept fail silently
        # (Server._attach asserts) and its socket then lingers open, never answered, until the
        # garbage collector finds it. Connections still in the kernel backlog get a reset.
        loop = asyncio.get_running_loop()
        for sock in server.transport.sockets:  # type: ignore[attr-defined]  # an asyncio.Server
            loop.remove_reader(sock.fileno())
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:  # accepts (and requests being answered), each finishing in a few loop iterations
            await asyncio.wait(others, timeout=_DRAIN_S)
        # shutdown() closes the listener and every accepted connection (pymodbus/transport/transport.py:374-384).
        await server.shutdown()
        self._server = None
        await asyncio.sleep(0)  # let the closes reach the sockets
        # Keep the data for the next start(): read it back through the datastore.
        token = _HELPER_CALL.set(True)
        try:
            for table, size in self.sizes.items():
                self._values[table] = await server.async_getValues(self.device_id, _READ_FC[table], 0, size)
        finally:
            _HELPER_CALL.reset(token)

    async def _datastore_get(self, table: RegisterType, address: int, count: int) -> list[int] | list[bool]:
        assert self._server is not None
        _HELPER_CALL.set(True)  # this coroutine runs as its own task, so the flag stays local to it
        return await self._server.async_getValues(self.device_id, _READ_FC[table], address, count)

    async def _datastore_set(self, table: RegisterType, address: int, values: list[int] | list[bool]) -> None:
        assert self._server is not None
        _HELPER_CALL.set(True)
        await self._server.async_setValues(self.device_id, _WRITE_FC[table], address, values)

    def _get(self, table: RegisterType, address: int, count: int) -> list[int] | list[bool]:
        self._check_range(table, address, count)
        if not self.running:
            return self._values[table][address : address + count]
        return self._run(self._datastore_get(table, address, count))

    def _set(self, table: RegisterType, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        self._check_range(table, address, len(values))
        clean: list[int] | list[bool]
        if table in _BIT_TABLES:
            clean = [bool(v) for v in values]
        else:
            clean = [int(v) for v in values]
            if any(not 0 <= v <= 0xFFFF for v in clean):
                raise ValueError(f"{table}: register values must be 0..65535, got {values!r}")
        if not self.running:  # stopped: change what the next start() will serve
            self._values[table][address : address + len(clean)] = clean  # type: ignore[assignment]
            return
        self._run(self._datastore_set(table, address, clean))

    def _check_range(self, table: RegisterType, address: int, count: int) -> None:
        if table not in self.sizes:
            raise ValueError(f"unknown register type {table!r}; use one of {sorted(self.sizes)}")
        if count < 1 or address < 0 or address + count > self.sizes[table]:
            raise IndexError(f"{table}[{address}:{address + count}] is outside 0..{self.sizes[table] - 1}")

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine on the server loop from any other thread and wait for its result."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("ModbusTestServer is not running")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("ModbusTestServer methods block; do not call them from the server's own loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(self.timeout)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(asyncio.sleep(0))  # transports closed by the cancellations
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        self._server = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout)


@pytest.fixture(name="modbus_server")
def modbus_server_fixture() -> Iterator[ModbusTestServer]:
    """A started server on a free port, stopped after the test (no database needed).

    Import it as ``from tests.modbus_server import modbus_server_fixture  # noqa: F401`` and
    take a ``modbus_server`` argument: importing the fixture under the argument's own name
    makes ruff report F811 (redefinition) on every test that uses it.
    """
    with ModbusTestServer() as server:
        yield server


# The import name first asked for; it works, but see F811 above.
modbus_server = modbus_server_fixture
