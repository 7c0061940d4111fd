"""One database's half of the benchmark: command and audit-append throughput.

Run by `bench/run.py` once per database, in its own process because Django reads its
settings once: the environment (DATABASE_URL set or not, MESHHUB_DATA_DIR) picks the
database. Progress goes to stderr; the results are one line on stdout starting with
RESULT_MARKER, followed by JSON.

    MESHHUB_DATA_DIR=$(mktemp -d) python bench/commands_audit.py            # SQLite
    DATABASE_URL=postgres://... MESHHUB_DATA_DIR=$(mktemp -d) python bench/commands_audit.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from benchlib import log, percentile  # bench/ is the script directory, first on sys.path; it also sets up the import path

RESULT_MARKER = "BENCH-RESULT "
WARMUP = 20
NODE_ID = "bench-thermostat-1"
CAPABILITY = "setpoint"


def percentile_ms(samples: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of durations in seconds, in milliseconds."""
    return percentile(samples, pct) * 1000


def timed_calls(n: int, call: Callable[[int], object]) -> dict[str, float]:
    """Call `call(i)` n times after WARMUP untimed calls; rate plus per-call latency."""
    for i in range(WARMUP):
        call(i)
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    return {
        "n": n,
        "seconds": elapsed,
        "per_s": n / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile_ms(latencies, 99),
    }


def database_info() -> dict[str, Any]:
    import sqlite3

    from django.db import connection

    info: dict[str, Any] = {"vendor": connection.vendor}
    if connection.vendor == "sqlite":
        info["version"] = sqlite3.sqlite_version
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            info["journal_mode"] = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            info["synchronous"] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")
    else:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            info["version"] = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            info["synchronous_commit"] = cursor.fetchone()[0]
    return info


def make_device() -> None:
    """A provisioned device with the thermostat profile (as tests/factories.py builds it)."""
    from devices.models import Capability, CapabilityKind, Device, DeviceStatus, ValueType

    device = Device.objects.create(node_id=NODE_ID, name="Bench Thermostat", device_type="thermostat", status=DeviceStatus.PROVISIONED)
    Capability.objects.create(device=device, name="temperature", kind=CapabilityKind.SENSOR, value_type=ValueType.FLOAT, unit="°C")
    Capability.objects.create(
        device=device, name=CAPABILITY, kind=CapabilityKind.ACTUATOR, value_type=ValueType.FLOAT, unit="°C", min_value=5, max_value=35, writable=True
    )


def bench_send_command(n: int) -> dict[str, float]:
    from audit.services import Actor
    from devices.models import Command, CommandAction
    from devices.services import send_command

    actor = Actor("user", "bench")

    def call(i: int) -> object:
        return send_command(actor, NODE_ID, CommandAction.SET, CAPABILITY, 5.0 + (i % 300) / 10)

    before = Command.objects.count()
    result = timed_calls(n, call)
    written = Command.objects.count() - before
    assert written == n + WARMUP, f"expected {n + WARMUP} command rows, found {written}"
    return result


def bench_record(n: int) -> dict[str, float]:
    from audit.models import Decision
    from audit.services import Actor, record

    actor = Actor("device", NODE_ID)

    def call(i: int) -> object:
        return record(actor, "bench.record", Decision.ALLOW, scope="telemetry", target_type="device", target_id=NODE_ID, details={"i": i, "value": 21.5})

    return timed_calls(n, call)


def bench_record_many(total: int, batch: int) -> dict[str, float]:
    """`total` events in batches of `batch`; building the Entry objects is timed too (callers pay for it)."""
    from audit.models import Decision
    from audit.services import Actor, Entry, record_many

    actor = Actor("device", NODE_ID)

    def entries(count: int, offset: int) -> list[Entry]:
        return [Entry(actor, "bench.record_many", Decision.ALLOW, "telemetry", "device", NODE_ID, "", {"i": offset + k, "value": 21.5}) for k in range(count)]

    record_many(entries(batch, 0))  # warm-up
    rounds = total // batch
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(rounds):
        t0 = time.perf_counter()
        record_many(entries(batch, i * batch))
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    events = batch * rounds
    return {
        "n": events,
        "batch": batch,
        "seconds": elapsed,
        "per_s": events / elapsed,
        "batch_p50_ms": statistics.median(latencies) * 1000,
        "batch_p99_ms": percentile_ms(latencies, 99),
    }


def bench_concurrent_record(threads: int, per_thread: int) -> dict[str, Any]:
    """`threads` threads, each with its own connection, append `per_thread` events with record()."""
    from django.db import connections

    from audit.models import Decision
    from audit.services import Actor, record

    barrier = threading.Barrier(threads + 1)
    errors: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        actor = Actor("device", f"bench-node-{index}")
        try:
            record(actor, "bench.warmup", Decision.ALLOW, target_type="device", target_id=actor.id)  # opens this thread's connection
            barrier.wait()
            for i in range(per_thread):
                record(actor, "bench.concurrent", Decision.ALLOW, scope="telemetry", target_type="device", target_id=actor.id, details={"i": i})
        except Exception as exc:
            with lock:
                errors.append(f"thread {index}: {exc!r}")
            barrier.abort()
        finally:
            connections.close_all()

    pool = [threading.Thread(target=worker, args=(i,), name=f"bench-{i}") for i in range(threads)]
    for thread in pool:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError("concurrent appends failed: " + "; ".join(errors))
    events = threads * per_thread
    return {"n": events, "threads": threads, "seconds": elapsed, "per_s": events / elapsed}


def bench_verify() -> dict[str, Any]:
    from audit.models import AuditChainHead, AuditEvent
    from audit.services import verify

    expected = AuditEvent.objects.count()
    start = time.perf_counter()
    result = verify()
    elapsed = time.perf_counter() - start
    assert result.ok, f"audit chain broken: {result.broken}"
    assert result.checked == expected, f"verify checked {result.checked} events, the table holds {expected}"
    head = AuditChainHead.objects.get(id=1)
    assert head.seq == expected, f"chain head at seq {head.seq}, the table holds {expected}"
    return {"n": result.checked, "seconds": elapsed, "per_s": result.checked / elapsed, "ok": result.ok}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2000, help="send_command() calls (default 2000)")
    parser.add_argument("--records", type=int, default=2000, help="single record() appends (default 2000)")
    parser.add_argument("--batched", type=int, default=20000, help="events per record_many() batch size (default 20000)")
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 500], help="comma-separated (default 100,500)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent appenders (default 8)")
    parser.add_argument("--per-thread", type=int, default=500, help="record() calls per thread (default 500)")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    label = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    log(f"[{label}] migrating")
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    results: dict[str, Any] = {"database": database_info(), "migrate_s": time.perf_counter() - t0}
    make_device()

    log(f"[{label}] send_command x {args.commands}")
    results["send_command"] = bench_send_command(args.commands)
    log(f"[{label}] record x {args.records}")
    results["record"] = bench_record(args.records)
    results["record_many"] = []
    for size in args.batch_sizes:
        log(f"[{label}] record_many {args.batched} events in batches of {size}")
        results["record_many"].append(bench_record_many(args.batched, size))
    log(f"[{label}] {args.threads} threads x {args.per_thread} record()")
    results["concurrent_record"] = bench_concurrent_record(args.threads, args.per_thread)
    log(f"[{label}] verify")
    results["verify"] = bench_verify()
    print(RESULT_MARKER + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
