"""Test helpers for the device listeners: a real listener on a background event loop,
a raw TLS client for malformed traffic, and CSRs of every wrong kind."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devices import identity
from hub.mesh.enroll import EnrollmentListener


@contextmanager
def running_enrollment_listener() -> Iterator[EnrollmentListener]:
    """The real listener, bound to 127.0.0.1:<free port>, on its own loop in a thread."""
    files = identity.ensure_hub_identity()
    loop = asyncio.new_event_loop()
    listener = EnrollmentListener("127.0.0.1", 0, files)
    loop.run_until_complete(listener.start())
    thread = threading.Thread(target=loop.run_forever, name="enroll-listener", daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        asyncio.run_coroutine_threadsafe(listener.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def raw_tls(port: int) -> ssl.SSLSocket:
    """A TLS client that trusts anything: for sending what a real agent never would."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="127.0.0.1")
    return sock


def recv_exactly(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_answer(sock: ssl.SSLSocket) -> dict[str, Any]:
    (length,) = struct.unpack(">I", recv_exactly(sock, 4))
    return json.loads(recv_exactly(sock, length))


def closed_by_peer(sock: ssl.SSLSocket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def send_raw(port: int, data: bytes) -> dict[str, Any]:
    with raw_tls(port) as sock:
        sock.sendall(data)
        answer = read_answer(sock)
        assert closed_by_peer(sock), "the listener closes after answering"
        return answer


def enroll_frame(body: dict[str, Any]) -> bytes:
    payload = json.dumps({"v": 1, "type": "enroll", "id": "test-1", "body": body}).encode()
    return struct.pack(">I", len(payload)) + payload


def make_csr(common_name: str, key: Any = None) -> tuple[Any, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def tampered_csr(common_name: str) -> str:
    """A CSR whose signature no longer matches its contents (last signature byte flipped)."""
    _, pem = make_csr(common_name)
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


def dump_stuck(loop: asyncio.AbstractEventLoop) -> None:
    """Every thread's stack and every task of `loop` with its stack, on stderr (pytest shows
    it with the failure): what a shutdown that does not end is waiting for."""
    faulthandler.dump_traceback(all_threads=True)

    def tasks() -> None:
        for task in asyncio.all_tasks(loop):
            print(f"task {task.get_name()}: {task.get_coro()}", file=sys.stderr)
            task.print_stack(limit=20, file=sys.stderr)

    loop.call_soon_threadsafe(tasks)
    time.sleep(0.5)  # the loop thread prints


@contextmanager
def running_device_listeners() -> Iterator[tuple[EnrollmentListener, Any]]:
    """Enrollment listener and mesh gateway on one background loop, as runhub runs them."""
    from hub.asgi import application
    from hub.mesh.gateway import MeshGateway

    files = identity.ensure_hub_identity()
    loop = asyncio.new_event_loop()
    enroll = EnrollmentListener("127.0.0.1", 0, files)
    gateway = MeshGateway("127.0.0.1", 0, files, application)

    async def start() -> None:
        await enroll.start()
        await gateway.start()

    loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, name="device-listeners", daemon=True)
    thread.start()
    try:
        yield enroll, gateway
    finally:

        async def stop() -> None:
            await asyncio.gather(enroll.close(), gateway.close())

        stopping = asyncio.run_coroutine_threadsafe(stop(), loop)
        try:
            stopping.result(60)  # sessions wind down (up to 10 s each, concurrently)
        except TimeoutError:
            dump_stuck(loop)  # seen once in CI (teardown of test_tls_resumption): say where it hangs
            raise
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def wait_for(predicate: Any, timeout_s: float = 15.0, interval_s: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy (an event we cannot await directly); fail loudly otherwise."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s: {predicate}")
