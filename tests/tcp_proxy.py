"""A TCP forwarder a test puts between the hub and PostgreSQL or Redis, to cause an outage
of its own connections without stopping the shared servers (the machine's PostgreSQL
and Redis belong to the whole test run).

    with TcpProxy("127.0.0.1", 5432) as proxy:       # listens on proxy.port
        ... point the hub at 127.0.0.1:proxy.port ...
        proxy.cut()       # every open connection is reset; new ones are refused
        proxy.restore()   # new connections are forwarded again

`cut()` is what a server crash or a pulled cable looks like to a client: established
connections end with a reset, and connecting fails until it is back. `stall()` is the
other kind of outage: connections stay open and nothing moves until `restore()`.
Real sockets, real servers; only the path between them is under the test's control.
"""

from __future__ import annotations

import random
import selectors
import socket
import struct
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server((listen_host, 0))
        self._listener.setblocking(False)
        self.host = listen_host
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: dict[socket.socket, socket.socket] = {}  # each end → the other
        self._applied: threading.Event | None = None
        self._reset_wanted: random.Random | None = None
        self._reset_done = False
        self._clients: set[socket.socket] = set()  # the accepted ends, for reset_one()
        self._mode = "open"  # open | cut | stall
        self.accepted = 0
        self.refused = 0
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    # --- control, from the test -------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until `restore()`."""
        with self._lock:
            self._mode = "cut"
        self._applied_wait()

    def stall(self) -> None:
        """Keep connections open but forward nothing (a hung server or a black hole)."""
        with self._lock:
            self._mode = "stall"
        self._applied_wait()

    def restore(self) -> None:
        with self._lock:
            self._mode = "open"
        self._applied_wait()

    def reset_one(self, rng: random.Random) -> bool:
        """Reset one open connection chosen by `rng` (a flapping link); False if none is open."""
        with self._lock:
            self._reset_wanted = rng
            self._reset_done = False
        self._applied_wait()
        with self._lock:
            return self._reset_done

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs) // 2

    def close(self) -> None:
        self._stopping = True
        self._poke()
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    # --- the forwarding loop, on its own thread ---------------------------------------------

    def _poke(self) -> None:
        try:
            self._wakeup_w.send(b"x")
        except OSError:
            pass

    def _applied_wait(self) -> None:
        """Wait until the loop has applied the mode (so `cut()` returns with the links reset)."""
        done = threading.Event()
        with self._lock:
            self._applied = done
        self._poke()
        done.wait(timeout=5)

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:  # SO_LINGER 0: close() sends RST, as a crashed peer's kernel would
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            other = self._pairs.pop(sock, None)
            if other is not None:
                self._pairs.pop(other, None)
            self._clients.discard(sock)
            if other is not None:
                self._clients.discard(other)
        for end in (sock, other):
            if end is None:
                continue
            try:
                self._selector.unregister(end)
            except (KeyError, ValueError):
                pass
            self._reset(end)

    def _accept(self, *, register: bool) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        with self._lock:
            mode = self._mode
        if mode == "cut":
            self.refused += 1
            self._reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self.refused += 1
            self._reset(client)
            return
        for end in (client, upstream):
            end.setblocking(False)
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client
            self._clients.add(client)
        self.accepted += 1
        if register:
            self._selector.register(client, selectors.EVENT_READ)
            self._selector.register(upstream, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            other = self._pairs.get(sock)
        if other is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(sock)
            return
        if not data:
            self._drop(sock)
            return
        try:
            other.setblocking(True)
            other.sendall(data)
            other.setblocking(False)
        except OSError:
            self._drop(sock)

    def _serve(self) -> None:
        watching = True  # are the connections' sockets registered (not while stalled)?
        while not self._stopping:
            with self._lock:
                mode = self._mode
                applied = self._applied
                self._applied = None
                socks = list(self._pairs)
                reset_rng, self._reset_wanted = self._reset_wanted, None
                clients = sorted(self._clients, key=lambda c: c.fileno())
            if reset_rng is not None and clients:
                self._drop(reset_rng.choice(clients))
                with self._lock:
                    self._reset_done = True
                socks = list(self._pairs)
            if mode == "cut":
                for sock in socks:
                    self._drop(sock)
                socks = []
            if mode == "stall" and watching:
                for sock in socks:
                    self._selector.unregister(sock)
                watching = False
            elif mode != "stall" and not watching:
                for sock in socks:
                    self._selector.register(sock, selectors.EVENT_READ)
                watching = True
            if applied is not None:
                applied.set()
            for key, _ in self._selector.select(timeout=0.5):
                sock = key.fileobj
                if sock is self._wakeup_r:
                    try:
                        self._wakeup_r.recv(4096)
                    except OSError:
                        pass
                elif sock is self._listener:
                    self._accept(register=watching)
                else:
                    self._forward(sock)  # type: ignore[arg-type]
        for sock in list(self._pairs):
            self._drop(sock)
        self._selector.close()
        self._listener.close()
        self._wakeup_r.close()
        self._wakeup_w.close()
