"""The pymodbus side of a bridge: one TCP client per bridge and worker process.

Everything pymodbus can throw back (exception responses, timeouts, closed connections,
short replies) becomes a `PlcError` with a reason an operator can act on, and whether
the connection is to be considered lost (then the poller backs off and reconnects).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from industrial.models import ModbusBridge, RegisterType

logger = logging.getLogger("meshhub.modbus")
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its own logs repeat what PlcError says

MAX_REGISTERS_PER_READ = 125  # Modbus application protocol limits
MAX_BITS_PER_READ = 2000

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class PlcError(Exception):
    def __init__(self, reason: str, *, connection_lost: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection_lost = connection_lost


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    unit_id: int
    timeout_s: float
    retries: int

    @classmethod
    def of(cls, bridge: ModbusBridge) -> Endpoint:
        return cls(bridge.host, bridge.port, bridge.unit_id, bridge.timeout_s, bridge.retries)

    def __str__(self) -> str:
        return f"{self.host}:{self.port} unit {self.unit_id}"


class PlcClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.modbus = ModbusTcpClient(endpoint.host, port=endpoint.port, timeout=endpoint.timeout_s, retries=endpoint.retries)

    def connect(self) -> None:
        if self.modbus.connected:
            return
        try:
            ok = self.modbus.connect()
        except Exception as exc:  # a resolver or socket error
            raise PlcError(f"cannot connect to {self.endpoint.host}:{self.endpoint.port}: {exc}", connection_lost=True) from None
        if not ok:
            raise PlcError(
                f"cannot connect to {self.endpoint.host}:{self.endpoint.port} (refused or no answer within {self.endpoint.timeout_s:g} s)", connection_lost=True
            )

    def close(self) -> None:
        self.modbus.close()

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        self.connect()
        try:
            reply = getattr(self.modbus, method)(*args, device_id=self.endpoint.unit_id, **kwargs)
        except ModbusIOException:
            self.close()
            raise PlcError(f"no answer to {what} within {self.endpoint.timeout_s:g} s ({self.endpoint.retries} retries)", connection_lost=True) from None
        except ConnectionException as exc:
            self.close()
            raise PlcError(f"connection to {self.endpoint.host}:{self.endpoint.port} lost during {what}: {exc}", connection_lost=True) from None
        except (ModbusException, ValueError, OSError) as exc:
            self.close()
            raise PlcError(f"{what} failed: {exc}", connection_lost=True) from None
        if reply is None:
            raise PlcError(f"no reply to {what}", connection_lost=True)
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            name = EXCEPTION_NAMES.get(code or 0, "unknown exception")
            raise PlcError(f"Modbus exception {code} ({name}) for {what}", connection_lost=False)
        return reply

    def read(self, register: str, address: int, count: int) -> list[int]:
        """`count` registers (as ints 0..65535) or bits (as 0/1) from `address`."""
        what = f"reading {count} {register} from {address}"
        if register == RegisterType.COIL:
            values = [int(bit) for bit in self._call(what, "read_coils", address, count=count).bits[:count]]
        elif register == RegisterType.DISCRETE_INPUT:
            values = [int(bit) for bit in self._call(what, "read_discrete_inputs", address, count=count).bits[:count]]
        elif register == RegisterType.HOLDING:
            values = list(self._call(what, "read_holding_registers", address, count=count).registers)
        elif register == RegisterType.INPUT:
            values = list(self._call(what, "read_input_registers", address, count=count).registers)
        else:
            raise PlcError(f"unknown register type {register!r}", connection_lost=False)
        if len(values) < count:
            raise PlcError(f"short reply {what}: got {len(values)} of {count}", connection_lost=False)
        if any(not isinstance(v, int) or not 0 <= v <= 0xFFFF for v in values):
            raise PlcError(f"garbage in the reply {what}", connection_lost=False)
        return values

    def write(self, register: str, address: int, values: list[int]) -> None:
        what = f"writing {len(values)} {register} at {address}"
        if register == RegisterType.COIL:
            self._call(what, "write_coil", address, bool(values[0]))
        elif register == RegisterType.HOLDING:
            if len(values) == 1:
                self._call(what, "write_register", address, values[0])
            else:
                self._call(what, "write_registers", address, values)
        else:
            raise PlcError(f"a {register} cannot be written", connection_lost=False)


_clients: dict[int, PlcClient] = {}
_lock = threading.Lock()


def client_for(bridge: ModbusBridge) -> PlcClient:
    """This process's client for the bridge (a new one when its endpoint changed)."""
    endpoint = Endpoint.of(bridge)
    with _lock:
        client = _clients.get(bridge.pk)
        if client is None or client.endpoint != endpoint:
            if client is not None:
                client.close()
            client = _clients[bridge.pk] = PlcClient(endpoint)
        return client


def drop_client(bridge_id: int) -> None:
    with _lock:
        client = _clients.pop(bridge_id, None)
    if client is not None:
        client.close()
