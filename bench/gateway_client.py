"""Load client for the mesh gateway benchmark (`bench/gateway.py`): mTLS device sessions
on asyncio + uvloop + stdlib ssl, shaped like the Mosquitto peer's `mqtt_bench.py`.

No Django here: the client only reads the device keys and certificates that
`bench/gateway.py setup` wrote (`<dir>/ca.crt`, `<dir>/dev00000.crt|key`, ...) and talks
the mesh protocol v1 over 127.0.0.1 (4-byte big-endian length + JSON envelope).

Subcommands (each prints one `BENCH-RESULT {json}` line on stdout, progress on stderr):

- `handshakes`: loops of new TCP + full TLS handshake with a client certificate +
  read `welcome` + close, no resumption, for `--duration` seconds in `--procs` processes
  started together on a barrier; the gateway's CPU (utime+stime of `--pid`, all threads)
  is read over exactly that window. Before that a client without a certificate must
  be refused.
- `state`: `--conns` sessions per process, each keeping `--window` `state` frames in
  flight, a new one sent for every answer; counts acks (an ack means committed) in the
  window, then waits for every outstanding frame to be answered. With `--latency`, also
  each report's ack latency (from writing its `state` frame to reading its `ack`, matched
  by `ref`) for the reports sent after the first `--latency-skip` seconds: p50/p95/p99/max.
- `sessions`: `--warmup` sessions opened and closed, then `--sessions` sessions (TLS +
  welcome + hello + session) opened and held; the gateway's (VmRSS after - before) /
  sessions; prints `READY {json}`, then answers every `command` with `ack` then `result`
  at once (and pings every heartbeat) until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import random
import resource
import signal
import ssl
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from benchlib import log, percentile  # bench/ is the script directory, first on sys.path

try:
    import uvloop
except ImportError:  # plain asyncio still works, just slower
    uvloop = None  # type: ignore[assignment]

HOST = "127.0.0.1"
HEADER = struct.Struct(">I")
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULT_MARKER = "BENCH-RESULT "
HANDSHAKE_RETRY_S = 0.3  # sessions: a TLS handshake not done by then is retried
MAX_ATTEMPTS = 40
THERMOSTAT_CAPABILITIES = [
    {"name": "temperature", "kind": "sensor", "value_type": "float", "unit": "°C"},
    {"name": "setpoint", "kind": "actuator", "value_type": "float", "unit": "°C", "min": 5, "max": 35, "writable": True},
    {"name": "mode", "kind": "property", "value_type": "enum", "enum_values": ["off", "heat", "auto"], "writable": True},
]  # firmware.agent.profiles.PROFILES["thermostat"]["capabilities"]; the client imports nothing from the project


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- /proc readings
def proc_cpu_s(pid: int, children: bool = False) -> float:
    """utime + stime of every thread of `pid` (+ cutime + cstime of its reaped children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def tree_cpu_s(pid: int) -> float:
    """A server and its direct children (PostgreSQL's postmaster and backends): live
    children's CPU plus what exited children left in the parent's cutime/cstime."""
    total = proc_cpu_s(pid, children=True)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def thread_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime per thread (task) of `pid`."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def aux_cpu(aux: dict[str, int]) -> dict[str, float]:
    return {name: tree_cpu_s(pid) for name, pid in aux.items()}


# ---------------------------------------------------------------- one device connection
class Device(asyncio.Protocol):
    """A mesh session from the device side: frames in (`next_frame()` or `on_frame`), frames out (`send()`)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.inbox: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[BaseException | None] = loop.create_future()
        self.on_frame: Callable[[dict[str, Any]], None] | None = None
        self.seq = 0
        self.token: str | None = None
        self.node_id = ""
        self.last_id = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's SSL transport is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (length,) = HEADER.unpack_from(buf, pos)
            if end - pos - 4 < length:
                break
            frame = json.loads(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
            if self.on_frame is not None:
                self.on_frame(frame)
            else:
                self.inbox.append(frame)
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_frame(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.inbox:
            if self.closed.done():
                raise ConnectionError(f"closed by the gateway: {self.closed.result()!r}")
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, max(0.01, deadline - time.monotonic()))
        return self.inbox.popleft()

    def encode(self, kind: str, body: dict[str, Any]) -> bytes:
        self.seq += 1
        self.last_id = f"b{self.seq}"
        message: dict[str, Any] = {
            "v": 1,
            "type": kind,
            "id": self.last_id,
            "seq": self.seq,
            "issued_at": now_ms(),
            "ttl_ms": 30_000,
            "nonce": base64.b64encode(os.urandom(16)).decode(),
            "body": body,
        }
        if self.token:
            message["session"] = self.token
        payload = json.dumps(message, separators=(",", ":")).encode()
        return HEADER.pack(len(payload)) + payload

    def send(self, kind: str, body: dict[str, Any]) -> str:
        """Write one frame; returns its envelope id (what an `ack` names as `ref`)."""
        assert self.transport is not None
        self.transport.write(self.encode(kind, body))
        return self.last_id

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def contexts(directory: str, indices: list[int]) -> list[tuple[str, ssl.SSLContext]]:
    """(node_id, client SSLContext) per device; no session reuse (nothing passes `session=`)."""
    out = []
    ca = os.path.join(directory, "ca.crt")
    for i in indices:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        ctx.load_cert_chain(os.path.join(directory, f"dev{i:05d}.crt"), os.path.join(directory, f"dev{i:05d}.key"))
        out.append((f"bench-{i:05d}", ctx))
    return out


async def connect(ctx: ssl.SSLContext, port: int, timeout: float, handshake_timeout: float) -> tuple[asyncio.Transport, Device]:
    """TCP + mTLS handshake (given up after `handshake_timeout`) + the `welcome` frame."""
    loop = asyncio.get_running_loop()
    transport, device = await asyncio.wait_for(
        loop.create_connection(Device, HOST, port, ssl=ctx, ssl_handshake_timeout=handshake_timeout), handshake_timeout + 1
    )
    try:
        welcome = await device.next_frame(timeout)
        if welcome.get("type") != "welcome":
            raise ConnectionError(f"expected welcome, got {welcome.get('type')}: {welcome.get('body')}")
    except BaseException:
        transport.abort()
        raise
    return transport, device


def is_stall(exc: BaseException) -> bool:
    """The TLS handshake did not complete in time (the gateway never answered the ClientHello)."""
    return "handshake is taking longer" in str(exc) or isinstance(exc, TimeoutError)


async def open_session(ctx: ssl.SSLContext, port: int, timeout: float, stalls: Counter[str], hello: bool = True) -> tuple[asyncio.Transport, Device]:
    """connect() + hello (thermostat capabilities) + the `session` frame with its token.
    A stalled TLS handshake is given up after HANDSHAKE_RETRY_S and retried (counted),
    as the agent reconnects."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            transport, device = await connect(ctx, port, timeout, HANDSHAKE_RETRY_S)
            break
        except (ConnectionError, OSError, TimeoutError) as exc:
            if not is_stall(exc) or attempt == MAX_ATTEMPTS - 1:
                raise
            stalls["stalled_handshakes"] += 1
    if not hello:
        return transport, device
    try:
        device.send("hello", {"firmware_version": "bench-1", "capabilities": THERMOSTAT_CAPABILITIES})
        session = await device.next_frame(timeout)
        if session.get("type") != "session":
            raise ConnectionError(f"expected session, got {session.get('type')}: {session.get('body')}")
        device.token = session["body"]["token"]
    except BaseException:
        transport.abort()
        raise
    return transport, device


async def close_all(devices: list[tuple[asyncio.Transport, Device]], timeout: float = 5) -> None:
    for transport, _ in devices:
        transport.close()
    if devices:
        await asyncio.wait([d.closed for _, d in devices], timeout=timeout)
    for transport, device in devices:
        if not device.closed.done():
            transport.abort()


async def open_many(
    ctxs: list[tuple[str, ssl.SSLContext]], port: int, parallel: int, stalls: Counter[str], timeout: float = 30, hello: bool = True
) -> tuple[list[tuple[asyncio.Transport, Device]], int]:
    sem, opened, errors = asyncio.Semaphore(parallel), [], 0

    async def one(node_id: str, ctx: ssl.SSLContext) -> None:
        nonlocal errors
        async with sem:
            try:
                transport, device = await open_session(ctx, port, timeout, stalls, hello)
            except Exception as exc:
                errors += 1
                if errors <= 3:
                    log(f"session {node_id} failed: {exc!r}")
                return
            device.node_id = node_id
            opened.append((transport, device))

    await asyncio.gather(*(one(n, c) for n, c in ctxs))
    return opened, errors


# ---------------------------------------------------------------- phases in client processes
async def phase_handshakes(a: argparse.Namespace, k: int, start: Callable[[], Awaitable[tuple[float, float]]]) -> dict[str, Any]:
    """Loop: new TCP + full mTLS handshake + `welcome` + close. Each loop has its own
    certificates (index ≡ loop number mod loops), so no two loops hold the same node at
    once (the gateway keeps one session per node and would close the older one)."""
    loops = a.procs * a.concurrency
    per_loop = max(1, a.clients // loops)
    mine = [k * a.concurrency + w for w in range(a.concurrency)]
    ctxs = {g: contexts(a.dir, [g + loops * j for j in range(per_loop) if g + loops * j < a.clients]) for g in mine}
    deadline, cpu0 = await start()
    st: dict[str, Any] = {"n": 0, "err": 0, "stalled": 0, "reused": 0, "errors": Counter()}

    async def worker(g: int) -> None:
        own, i = ctxs[g], 0
        while time.monotonic() < deadline:
            _, ctx = own[i % len(own)]
            i += 1
            try:
                transport, device = await connect(ctx, a.port, max(0.1, deadline - time.monotonic() + 2), a.handshake_timeout)
            except Exception as exc:
                if is_stall(exc):
                    st["stalled"] += 1
                else:
                    st["err"] += 1
                    st["errors"][type(exc).__name__ + ": " + str(exc)[:80]] += 1
                    await asyncio.sleep(0.01)
                continue
            ssl_object = transport.get_extra_info("ssl_object")
            st["reused"] += int(ssl_object.session_reused)
            st["version"] = (ssl_object.version(), transport.get_extra_info("cipher")[0])
            if time.monotonic() < deadline:
                st["n"] += 1
            transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(device.closed), 2)
            except TimeoutError:
                transport.abort()

    await asyncio.gather(*(worker(g) for g in mine))
    st["cpu"] = cpu_self() - cpu0
    st["errors"] = dict(st["errors"].most_common(5))
    return st


async def phase_state(a: argparse.Namespace, k: int, start: Callable[[], Awaitable[tuple[float, float]]]) -> dict[str, Any]:
    """`conns` sessions, each keeping `window` state frames in flight (a new one per answer);
    with `--latency`, each report's ack latency too."""
    ctxs = contexts(a.dir, list(range(k * a.conns, (k + 1) * a.conns)))
    st: dict[str, Any] = {"n": 0, "acked": 0, "sent": 0, "err": 0, "errors": Counter()}
    deadline = float("inf")
    latency_from = float("inf")  # perf_counter after which sent reports count in the latency figures
    sent_at: dict[Device, dict[str, float]] = {}  # with --latency: per session, envelope id -> perf_counter at send
    latency_ms: list[float] = []
    outstanding = {"n": 0}
    drained = asyncio.get_running_loop().create_future()
    temperature = [19.5]

    def values() -> dict[str, Any]:
        temperature[0] = 15.0 + (temperature[0] + 0.1 - 15.0) % 15
        full = {"temperature": round(temperature[0], 2), "setpoint": 21.0, "mode": "auto"}
        return dict(list(full.items())[: a.values])

    last_ts: dict[Device, int] = {}

    def send(device: Device) -> None:
        # Each report its own ts, as the agent does: the hub stores one sample per (capability, ts).
        ts = last_ts[device] = max(now_ms(), last_ts.get(device, 0) + 1)
        message_id = device.send("state", {"values": values(), "ts": ts})
        if a.latency:
            sent_at[device][message_id] = time.perf_counter()
        st["sent"] += 1
        outstanding["n"] += 1

    stalls: Counter[str] = Counter()
    sessions, errors = await open_many(ctxs, a.port, 16, stalls)
    st["stalled"] = stalls["stalled_handshakes"]
    if errors:
        raise RuntimeError(f"{errors} of {len(ctxs)} state sessions failed to open")

    for _, device in sessions:

        def on_frame(frame: dict[str, Any], device: Device = device) -> None:
            kind = frame.get("type")
            if kind not in ("ack", "error"):
                return
            if a.latency:
                at = sent_at[device].pop((frame.get("body") or {}).get("ref"), None)
                if kind == "ack" and at is not None and at >= latency_from:
                    latency_ms.append((time.perf_counter() - at) * 1000)
            outstanding["n"] -= 1
            if kind == "ack":
                st["acked"] += 1
                if time.monotonic() < deadline:
                    st["n"] += 1
            else:
                st["err"] += 1
                st["errors"][str((frame.get("body") or {}).get("code"))] += 1
            if time.monotonic() < deadline:
                send(device)
            elif outstanding["n"] == 0 and not drained.done():
                drained.set_result(None)

        device.on_frame = on_frame
        sent_at[device] = {}

    deadline, cpu0 = await start()
    latency_from = time.perf_counter() + a.latency_skip
    for _, device in sessions:
        for _ in range(a.window):
            send(device)
    await asyncio.sleep(max(0, deadline - time.monotonic()))
    st["cpu"] = cpu_self() - cpu0
    st["lost"] = sum(d.closed.done() for _, d in sessions)
    if outstanding["n"] > 0:
        try:
            await asyncio.wait_for(drained, 15)
        except TimeoutError:
            pass
    st["unanswered"] = outstanding["n"]
    st["errors"] = dict(st["errors"])
    if a.latency:
        st["latency_ms"] = latency_ms
    await close_all(sessions)
    return st


def child(phase: Callable[..., Coroutine[Any, Any, dict[str, Any]]], a: argparse.Namespace, k: int, barrier: Any, q: Any) -> None:
    if uvloop:
        uvloop.install()

    async def start() -> tuple[float, float]:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait, 180)
        return time.monotonic() + a.duration, cpu_self()

    try:
        q.put(asyncio.run(phase(a, k, start)))
    except Exception as e:  # make the parent fail fast instead of hanging
        barrier.abort()
        q.put({"fatal": repr(e)})


def run_procs(phase: Callable[..., Coroutine[Any, Any, dict[str, Any]]], a: argparse.Namespace) -> dict[str, Any]:
    """Start a.procs client processes, align them on a barrier, time the gateway CPU over the window."""
    barrier, q = mp.Barrier(a.procs + 1), mp.Queue()  # type: ignore[var-annotated]
    procs = [mp.Process(target=child, args=(phase, a, k, barrier, q)) for k in range(a.procs)]
    for p in procs:
        p.start()
    try:
        barrier.wait(180)
    except threading.BrokenBarrierError:
        raise SystemExit(f"client failed: {q.get(timeout=5)}")
    aux0, threads0 = aux_cpu(a.aux), thread_cpu_s(a.pid)
    c0, t0 = proc_cpu_s(a.pid), time.monotonic()
    time.sleep(a.duration)
    c1, t1 = proc_cpu_s(a.pid), time.monotonic()
    aux1, threads1 = aux_cpu(a.aux), thread_cpu_s(a.pid)
    res = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(10)
    fatal = [r["fatal"] for r in res if "fatal" in r]
    if fatal:
        raise SystemExit(f"client failed: {fatal}")
    tot: dict[str, Any] = {key: sum(r.get(key, 0) for r in res) for key in ("n", "err", "stalled", "cpu", "reused", "acked", "sent", "lost", "unanswered")}
    errors: Counter[str] = Counter()
    for r in res:
        errors.update(r.get("errors", {}))
    tot["errors"] = dict(errors)
    tot["version"] = next((r["version"] for r in res if "version" in r), None)
    tot["gateway_cpu_s"] = c1 - c0
    tot["window_s"] = t1 - t0
    tot["aux_cpu_s"] = {name: aux1[name] - aux0[name] for name in aux0}
    deltas = {tid: cpu - threads0.get(tid, 0.0) for tid, cpu in threads1.items()}
    tot["gateway_main_thread_cpu_s"] = deltas.pop(a.pid, 0.0)
    tot["gateway_other_threads_cpu_s"] = sum(deltas.values())
    tot["gateway_busiest_other_thread_cpu_s"] = max(deltas.values(), default=0.0)
    tot["gateway_threads"] = len(threads1)
    if any("latency_ms" in r for r in res):
        tot["ack_latency_ms"] = latency_summary([x for r in res for x in r.get("latency_ms", [])])
        tot["ack_latency_skip_s"] = a.latency_skip
    return tot


def latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "min": min(values),
        "mean": sum(values) / len(values),
    }


async def no_cert_refused(a: argparse.Namespace) -> bool:
    """Sanity check that the gateway really requires a client certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.path.join(a.dir, "ca.crt"))
    try:
        transport, _ = await connect(ctx, a.port, 5, 5)
    except Exception:
        return True
    transport.abort()
    return False


async def snapshot(a: argparse.Namespace, n: int) -> None:
    """Ask a gateway started with bench/tracemalloc_hook for snapshot n; wait until it is written."""
    os.kill(a.pid, signal.SIGUSR1)
    path = os.path.join(a.snapshots, f"snap-{n}.pickle")
    deadline = time.monotonic() + 120
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)


async def sessions(a: argparse.Namespace) -> dict[str, Any]:
    """Open `--sessions` sessions and hold them. With `--pid`: first `--warmup` sessions
    opened and closed (one-time costs: database connection, threads, lazy imports), then
    the gateway's VmRSS before opening and `--settle` s after. Prints `READY {json}`,
    then answers every `command` with `ack` + `result` at once and pings every
    `--heartbeat` s (spread), until stdin closes."""
    ctxs = contexts(a.dir, list(range(a.sessions)))
    loop = asyncio.get_running_loop()
    stalls: Counter[str] = Counter()
    ready: dict[str, Any] = {}
    if a.pid:
        warm, warm_errors = await open_many(ctxs[: a.warmup], a.port, 16, stalls, hello=not a.no_hello)
        await close_all(warm)
        await asyncio.sleep(1.5)
        ready.update(warmup=len(warm), warmup_errors=warm_errors, rss_before_kb=rss_kb(a.pid))
        if a.snapshots:
            await snapshot(a, 0)
    stalls.clear()
    t0 = time.monotonic()
    held, errors = await open_many(ctxs, a.port, 64, stalls, timeout=120, hello=not a.no_hello)
    opened = time.monotonic() - t0
    ready.update(sessions=len(held), errors=errors, opened_s=opened, stalled_handshakes=stalls["stalled_handshakes"])
    if a.pid:
        await asyncio.sleep(a.settle)
        ready["rss_after_kb"] = rss_kb(a.pid)
        ready["kb_per_session"] = (ready["rss_after_kb"] - ready["rss_before_kb"]) / max(len(held), 1)
        ready["threads"] = len(os.listdir(f"/proc/{a.pid}/task"))
        if a.snapshots:
            await snapshot(a, 1)

    st: dict[str, Any] = {"commands": 0, "duplicates": 0, "errors": Counter(), "pongs": 0, "pings": 0}
    seen: set[str] = set()
    received: dict[str, int] = {}

    def ping(device: Device) -> None:
        if device.closed.done():
            return
        device.send("ping", {})
        st["pings"] += 1
        loop.call_later(a.heartbeat, ping, device)

    for _, device in held:

        def on_frame(frame: dict[str, Any], device: Device = device) -> None:
            kind = frame.get("type")
            if kind == "command":
                command_id = frame.get("id")
                body = frame.get("body") or {}
                device.send("ack", {"id": command_id})
                device.send("result", {"id": command_id, "status": "ok", "value": body.get("value")})
                st["commands"] += 1
                if str(command_id) in seen:
                    st["duplicates"] += 1
                seen.add(str(command_id))
                received[str(command_id)] = now_ms()
            elif kind == "pong":
                st["pongs"] += 1
            elif kind == "error":
                st["errors"][str((frame.get("body") or {}).get("code"))] += 1

        device.on_frame = on_frame
        loop.call_later(random.uniform(0.2, 1.0) * a.heartbeat, ping, device)

    print("READY " + json.dumps(ready), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    st["lost"] = sum(d.closed.done() for _, d in held)
    await close_all(held)
    st.update(errors=dict(st["errors"]), received_ms=received)
    return st


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["handshakes", "state", "sessions"])
    ap.add_argument("--dir", required=True, help="device keys and certificates from `bench/gateway.py setup`")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, help="gateway pid (for /proc CPU and RSS)")
    ap.add_argument("--aux", action="append", default=[], help="name=pid of another server whose CPU (with its children) is read over the window")
    ap.add_argument("--clients", type=int, default=1000, help="device certificates available")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=48, help="handshake loops per process")
    ap.add_argument("--handshake-timeout", type=float, default=1.0, help="handshakes: give a TLS handshake up after this many seconds (counted as stalled)")
    ap.add_argument("--conns", type=int, default=50, help="state sessions per process")
    ap.add_argument("--window", type=int, default=16, help="state frames in flight per session")
    ap.add_argument("--values", type=int, default=3, choices=[1, 2, 3], help="values per state report (the thermostat agent sends 3)")
    ap.add_argument("--latency", action="store_true", help="state: also measure each report's ack latency (send -> ack, matched by ref)")
    ap.add_argument(
        "--latency-skip", type=float, default=1.0, help="state --latency: reports sent in the first seconds of the window are not in the latency figures"
    )
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--no-hello", action="store_true", help="sessions: hold the connection after `welcome` (for the bare TLS floor server)")
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--heartbeat", type=float, default=30.0)
    ap.add_argument("--snapshots", help="sessions: directory where a gateway with bench/tracemalloc_hook writes its snapshots on SIGUSR1")
    a = ap.parse_args()
    a.aux = {name: int(pid) for name, pid in (item.split("=", 1) for item in a.aux)}

    if a.cmd == "handshakes":
        if uvloop:
            uvloop.install()
        if not asyncio.run(no_cert_refused(a)):
            raise SystemExit("the gateway accepted a client without a certificate: not mutual TLS")
        result = run_procs(phase_handshakes, a)
        result["no_cert_refused"] = True
    elif a.cmd == "state":
        result = run_procs(phase_state, a)
    else:
        if uvloop:
            uvloop.install()
        result = asyncio.run(sessions(a))
    print(RESULT_MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
