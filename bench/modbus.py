"""Industrial bridge benchmark: Modbus TCP tags per second, side by side with a raw pymodbus loop.

    python bench/modbus.py                                  # or: python bench/run.py --part modbus
    python bench/modbus.py --configs sqlite --shapes 2x100 --polls 3 --duration 1   # a smoke run (about 10 s)
    python bench/modbus.py --configs sqlite --shapes 1x2000 --profile               # plus a cProfile of poll_bridge

Figures (acceptance items of the "Industrial bridge" issue): tags per second of
`industrial.polling.poll_bridge()` (goal >= 0.8x a raw pymodbus client loop reading the same
registers, and >= 15,000 tags/s with enough points), per-poll latency p50/p95, CPU seconds.

Method. The Modbus server is `tests/modbus_server.py`'s `ModbusTestServer` (pymodbus 3.16,
asyncio) in a process of its own (`modbus.py server`), so its CPU is neither ours nor in our
process; its utime+stime over every window is reported beside ours. Per configuration
(`sqlite` = embedded, a fresh MESHHUB_DATA_DIR; `postgres` = a recreated database) one worker
process (`modbus.py measure`, Django) migrates, imports the bridges with
`industrial.config.import_document()` and measures, one shape after another:

- shape `BxP` = B bridges of P points each, every bridge one PLC connection (its own
  `ModbusTcpClient`, as in a Celery worker), point types cycling u16, i16, u32, f32 at
  consecutive holding-register addresses (1.5 registers per point on average), deadband 0;
  `plan_reads()` makes ceil(registers/125)-ish requests per poll;
- raw pymodbus: per bridge a plain `ModbusTcpClient` (same timeout and retries as the bridge)
  reading exactly the blocks `plan_reads()` planned, `read_holding_registers(start,
  count=n, device_id=1)` and nothing else; then again with every point converted by
  `client.convert_from_registers()`. Tags/s = points covered per second;
- meshhub, values changed every poll (worst case: every tag goes to telemetry): before every
  round the bench rewrites every register with new valid values (FC16 from a separate client,
  NOT timed), then `poll_bridge()` for each bridge, timed one by one; every point is decoded,
  reported through `devices.state.apply_reports` (a TelemetrySample per point, the Device's
  reported state) and its quality row bulk-updated. The rows written are checked;
- meshhub, values unchanged (the deadband suppresses every report: read + decode + quality
  path only): the same polls back-to-back with the registers left alone.

Tags/s = points decoded good / sum of the poll_bridge() wall times (one process, one poll
at a time: what one Celery worker process does); CPU = time.process_time() of the worker over
the same polls. A measurement is at most --polls rounds and starts no new round once its timed
polls took --duration seconds (at least 3 rounds); the raw loops run at least --polls rounds
and on for 3 s (or --duration if shorter), their rounds being some 10 ms. Prints `name: value unit` lines, the goals and a markdown table; `--json FILE`
keeps everything. docs/performance.md ("Industrial bridge") records a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, log, percentile  # bench/ is the script directory, first on sys.path; it also sets up the import path

RESULT_MARKER = "BENCH-RESULT "
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/meshhub_bench_modbus"
CONFIGS = ("sqlite", "postgres")
DEFAULT_CONFIGS = "sqlite,postgres"
DEFAULT_SHAPES = "1x2000,10x200"
POINT_TYPES = ("u16", "i16", "u32", "f32")  # cycled over consecutive addresses
WIDTHS = {"u16": 1, "i16": 1, "u32": 2, "f32": 2}
RATIO_GOAL = 0.8  # x the raw pymodbus loop
TAGS_GOAL = 15_000  # tags/s
MODES = {
    "changed": "all values changed every poll (worst case: every tag written to telemetry)",
    "unchanged": "values unchanged (deadband suppresses writes; read + decode + quality path only)",
}
UNIT_ID = 1
MIN_ROUNDS = 3  # per measurement, whatever --duration says
RAW_WINDOW_S = 3.0  # the raw loops are fast: they run --polls rounds, and on until this window (or --duration if shorter) has passed
TIMEOUT_S = 1.0  # the import defaults, used by the bridges and the raw clients alike
RETRIES = 1


def parse_shape(spec: str) -> tuple[int, int]:
    bridges, points = spec.lower().split("x")
    return int(bridges), int(points)


def shape_registers(points: int) -> int:
    return sum(WIDTHS[POINT_TYPES[i % len(POINT_TYPES)]] for i in range(points))


def proc_cpu_s(pid: int) -> float:
    """utime + stime of another process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ================================================================ the Modbus server process


def worker_server(argv: list[str]) -> None:
    """A ModbusTestServer on 127.0.0.1; prints `PORT n`, serves until stdin closes."""
    parser = argparse.ArgumentParser(prog="modbus.py server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--holding", type=int, required=True, help="holding registers from address 0")
    args = parser.parse_args(argv)
    from tests.modbus_server import ModbusTestServer

    server = ModbusTestServer(coils=16, discrete_inputs=16, holding=args.holding, input_registers=16, port=args.port)
    server.start()
    print(f"PORT {server.port}", flush=True)
    try:
        sys.stdin.read()  # the parent closes our stdin to stop us
    finally:
        server.stop()


@contextlib.contextmanager
def modbus_server(holding: int) -> Iterator[tuple[int, int]]:
    """(port, pid) of a server process of its own, stopped afterwards."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "server", "--holding", str(holding)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"the Modbus server process did not start (said {line!r})")
        yield int(line.split()[1]), proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ================================================================ the Django worker


def point_specs(points: int, base: int, prefix: str) -> list[dict[str, Any]]:
    specs = []
    address = base
    for i in range(points):
        data_type = POINT_TYPES[i % len(POINT_TYPES)]
        specs.append({"capability": f"{prefix}{i:04d}", "register": "holding", "address": address, "data_type": data_type})
        address += WIDTHS[data_type]
    return specs


def register_image(points: list[Any], round_no: int) -> dict[int, int]:
    """address -> register value: every point a new, valid value for round `round_no` (distinct from the last round's)."""
    image: dict[int, int] = {}
    for i, point in enumerate(points):
        if point.data_type in ("u16", "i16"):
            words = [(round_no * 7919 + i) % 65536]
        elif point.data_type == "u32":
            value = (round_no * 1_000_003 + i) % 2**32
            words = [value >> 16, value & 0xFFFF]
        else:  # f32, big/big
            hi, lo = struct.unpack(">HH", struct.pack(">f", round_no + i / 1000))
            words = [hi, lo]
        for offset, word in enumerate(words):
            image[point.address + offset] = word
    return image


def write_image(client: Any, image: dict[int, int]) -> None:
    """FC16 in runs of at most 120 contiguous registers."""
    addresses = sorted(image)
    run: list[int] = []
    for address in addresses:
        if run and (address != run[-1] + 1 or len(run) == 120):
            client.write_registers(run[0], [image[a] for a in run], device_id=UNIT_ID)
            run = []
        run.append(address)
    if run:
        client.write_registers(run[0], [image[a] for a in run], device_id=UNIT_ID)


def stats_ms(durations: list[float]) -> dict[str, float]:
    ms = [d * 1000 for d in durations]
    return {"p50_ms": statistics.median(ms), "p95_ms": percentile(ms, 95), "max_ms": max(ms), "mean_ms": statistics.fmean(ms)}


def worker_measure(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="modbus.py measure")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--shapes", required=True)
    parser.add_argument("--polls", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--profile", type=int, default=0, help="then this many polls of the first shape (values changed) under cProfile")
    args = parser.parse_args(argv)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from gateway import database_info
    from pymodbus.client import ModbusTcpClient

    from audit.services import Actor
    from devices.models import TelemetrySample
    from industrial import config, polling
    from industrial.client import drop_client
    from industrial.models import ModbusBridge

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    result: dict[str, Any] = {"migrate_s": time.perf_counter() - t0, "database": database_info(connection), "shapes": {}}
    datatypes = {
        "u16": ModbusTcpClient.DATATYPE.UINT16,
        "i16": ModbusTcpClient.DATATYPE.INT16,
        "u32": ModbusTcpClient.DATATYPE.UINT32,
        "f32": ModbusTcpClient.DATATYPE.FLOAT32,
    }
    writer = ModbusTcpClient("127.0.0.1", port=args.port, timeout=5)
    if not writer.connect():
        raise SystemExit("the bench's writer cannot connect to the Modbus server")
    round_no = 0
    profile_target: list[int] = []

    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        n_bridges, n_points = parse_shape(shape)
        regs = shape_registers(n_points)
        doc = {
            "bridges": [
                {
                    "node_id": f"bench-plc-{shape}-{b:02d}",
                    "name": f"bench {shape} #{b}",
                    "host": "127.0.0.1",
                    "port": args.port,
                    "unit_id": UNIT_ID,
                    "timeout_s": TIMEOUT_S,
                    "retries": RETRIES,
                    "points": point_specs(n_points, b * regs, "t"),
                }
                for b in range(n_bridges)
            ]
        }
        t0 = time.perf_counter()
        config.import_document(Actor("system", "bench"), doc)
        import_s = time.perf_counter() - t0
        bridges = list(ModbusBridge.objects.filter(device__node_id__startswith=f"bench-plc-{shape}-").select_related("device").order_by("device__node_id"))
        plans = {b.pk: polling.plan_reads(list(b.points.all())) for b in bridges}
        all_points = [p for b in bridges for block in plans[b.pk] for p in block.points]
        total_points = len(all_points)
        requests_per_round = sum(len(blocks) for blocks in plans.values())
        log(f"  shape {shape}: {total_points:,} points, {n_bridges * regs:,} registers, {requests_per_round} requests per round (import {import_s:.1f} s)")
        shape_result: dict[str, Any] = {
            "bridges": n_bridges,
            "points_per_bridge": n_points,
            "points": total_points,
            "registers": n_bridges * regs,
            "requests_per_round": requests_per_round,
            "import_s": import_s,
        }

        # Warm-up: the first poll connects each bridge's client and reports everything once.
        round_no += 1
        write_image(writer, register_image(all_points, round_no))
        for b in bridges:
            warm = polling.poll_bridge(b.pk)
            if warm.skipped or warm.read_ok != len(warm.reported) or warm.read_ok != n_points:
                raise SystemExit(f"warm-up poll of {b.device.node_id}: {warm.as_dict()!r:.500}")

        # Raw pymodbus: the same blocks, read only; then read + convert_from_registers.
        raw_clients = {b.pk: ModbusTcpClient(b.host, port=b.port, timeout=b.timeout_s, retries=b.retries) for b in bridges}
        for client in raw_clients.values():
            if not client.connect():
                raise SystemExit("the raw client cannot connect")
        for convert in (False, True):
            for b in bridges:  # one untimed round
                for block in plans[b.pk]:
                    raw_clients[b.pk].read_holding_registers(block.start, count=block.count, device_id=UNIT_ID)
            server0, cpu0, wall0 = proc_cpu_s(args.server_pid), time.process_time(), time.perf_counter()
            decoded = rounds = 0
            while rounds < MIN_ROUNDS or rounds < args.polls or time.perf_counter() - wall0 < min(args.duration, RAW_WINDOW_S):
                rounds += 1
                for b in bridges:
                    client = raw_clients[b.pk]
                    for block in plans[b.pk]:
                        reply = client.read_holding_registers(block.start, count=block.count, device_id=UNIT_ID)
                        if reply.isError():
                            raise SystemExit(f"raw read failed: {reply}")
                        if convert:
                            words = reply.registers
                            for p in block.points:
                                begin = p.address - block.start
                                client.convert_from_registers(words[begin : begin + WIDTHS[p.data_type]], datatypes[p.data_type])
                                decoded += 1
                        else:
                            decoded += len(block.points)
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            server_cpu = proc_cpu_s(args.server_pid) - server0
            shape_result["raw_convert" if convert else "raw"] = {
                "rounds": rounds,
                "tags": decoded,
                "wall_s": wall,
                "cpu_s": cpu,
                "server_cpu_s": server_cpu,
                "tags_per_s": decoded / wall,
                "round_ms": wall / rounds * 1000,
            }
        for client in raw_clients.values():
            client.close()

        # meshhub: poll_bridge(), values changed before every round, then unchanged.
        for mode in ("changed", "unchanged"):
            durations: list[float] = []
            cpu_total = server_total = 0.0
            good = reported = requests = 0
            samples_before = TelemetrySample.objects.count()
            if mode == "unchanged":  # settle: one untimed poll reports the last values written
                for b in bridges:
                    polling.poll_bridge(b.pk)
            rounds = 0
            while rounds < args.polls and (rounds < MIN_ROUNDS or sum(durations) < args.duration):
                rounds += 1
                if mode == "changed":
                    round_no += 1
                    write_image(writer, register_image(all_points, round_no))  # not timed
                for b in bridges:
                    server0, cpu0, wall0 = proc_cpu_s(args.server_pid), time.process_time(), time.perf_counter()
                    poll = polling.poll_bridge(b.pk)
                    durations.append(time.perf_counter() - wall0)
                    cpu_total += time.process_time() - cpu0
                    server_total += proc_cpu_s(args.server_pid) - server0
                    if poll.skipped or poll.bad or poll.stale:
                        raise SystemExit(f"poll of {b.device.node_id}: {poll.as_dict()!r:.500}")
                    good += poll.read_ok
                    reported += len(poll.reported)
                    requests += poll.requests
            samples = TelemetrySample.objects.count() - samples_before
            wall = sum(durations)
            expected_reports = good if mode == "changed" else 0
            if reported != expected_reports or samples != expected_reports:
                raise SystemExit(f"{shape} {mode}: {reported} values reported and {samples} samples written, expected {expected_reports}")
            shape_result[mode] = {
                "rounds": rounds,
                "polls": len(durations),
                "tags": good,
                "reported": reported,
                "samples_written": samples,
                "requests": requests,
                "wall_s": wall,
                "cpu_s": cpu_total,
                "server_cpu_s": server_total,
                "tags_per_s": good / wall,
                "tags_per_cpu_s": good / cpu_total if cpu_total else math.inf,
                **stats_ms(durations),
            }
        result["shapes"][shape] = shape_result
        if not profile_target:
            profile_target = [b.pk for b in bridges]
        log(
            f"    raw {shape_result['raw']['tags_per_s']:,.0f} tags/s, raw+convert {shape_result['raw_convert']['tags_per_s']:,.0f}, "
            f"meshhub changed {shape_result['changed']['tags_per_s']:,.0f}, unchanged {shape_result['unchanged']['tags_per_s']:,.0f}"
        )

    if args.profile and profile_target:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        points = [p for pk in profile_target for block in polling.plan_reads(list(ModbusBridge.objects.get(pk=pk).points.all())) for p in block.points]
        for _ in range(args.profile):
            round_no += 1
            write_image(writer, register_image(points, round_no))
            profiler.enable()
            for pk in profile_target:
                polling.poll_bridge(pk)
            profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        polls = args.profile * len(profile_target)

        def cumulative(suffix: str, function: str) -> float | None:
            found = [entry[3] for (file, _, name), entry in stats.stats.items() if name == function and file.endswith(suffix)]  # type: ignore[attr-defined]
            return max(found) if found else None

        total = cumulative("industrial/polling.py", "poll_bridge") or 1.0
        out.write(f"where poll_bridge's time goes ({polls} polls under the profiler, cumulative, per poll and share of poll_bridge):\n")
        for (suffix, function), label in PROFILE_BREAKDOWN:
            seconds = cumulative(suffix, function)
            if seconds is not None:
                out.write(f"  {label}: {seconds / polls * 1000:,.1f} ms per poll ({seconds / total:.0%})\n")
        stats.sort_stats("tottime").print_stats(20)
        stats.sort_stats("cumulative").print_stats(25)
        lines = [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]
        result["profile"] = "\n".join(line.replace(SITE_PACKAGES, "").replace(STDLIB, "").replace(str(REPO_ROOT) + "/", "") for line in lines)
    writer.close()
    for pk in profile_target:
        drop_client(pk)
    print(RESULT_MARKER + json.dumps(result))


PROFILE_BREAKDOWN = [
    (("industrial/polling.py", "poll_bridge"), "poll_bridge"),
    (("industrial/polling.py", "_take_lease"), "_take_lease (the lease UPDATE)"),
    (("industrial/client.py", "read"), "PlcClient.read (pymodbus request + reply)"),
    (("industrial/polling.py", "decode_point"), "decode_point (codec.decode + check_range)"),
    (("industrial/polling.py", "_store"), "_store (everything after the reads)"),
    (("industrial/polling.py", "outside_deadband"), "outside_deadband"),
    (("devices/state.py", "apply_reports"), "devices.state.apply_reports"),
    (("django/db/models/query.py", "bulk_create"), "QuerySet.bulk_create (the TelemetrySample rows)"),
    (("django/db/models/query.py", "bulk_update"), "QuerySet.bulk_update (the ModbusPoint rows)"),
    (("devices/state.py", "set_presence"), "devices.state.set_presence"),
]
STDLIB = sysconfig.get_paths()["stdlib"] + "/"
SITE_PACKAGES = str(Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages") + "/"

WORKERS = {"server": worker_server, "measure": worker_measure}


# ================================================================ orchestration and report


def run_config(name: str, args: argparse.Namespace, tmp: str, port: int, server_pid: int) -> dict[str, Any]:
    from run import database_env

    log(f"=== {name} ===")
    env = database_env(tmp, f"modbus-{name}", args.postgres_url if name == "postgres" else None)
    argv = [sys.executable, str(Path(__file__).resolve()), "measure", "--port", str(port), "--server-pid", str(server_pid)]
    argv += ["--shapes", ",".join(args.shapes), "--polls", str(args.polls), "--duration", str(args.duration)]
    if args.profile:
        argv += ["--profile", str(args.profile_polls)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            result["wall_s"] = time.perf_counter() - t0
            return result
    sys.stderr.write(proc.stdout)
    raise SystemExit(f"{name}: worker exited with {proc.returncode} and printed no result")


LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def shape_label(r: dict[str, Any]) -> str:
    return f"{r['bridges']}×{r['points_per_bridge']:,} points" if r["bridges"] > 1 else f"1 bridge × {r['points_per_bridge']:,} points"


def print_report(machine: dict[str, Any], results: dict[str, dict[str, Any]], command: str) -> None:
    print("machine:")
    print(f"  command: {command}")
    for key in ("date_utc", "nproc", "cpu_model", "memory", "kernel", "python"):
        print(f"  {key}: {machine.get(key)}")
    print(f"  loadavg at start: {' '.join(machine.get('loadavg', []))}")
    print(f"  git: {machine.get('git')}")
    print(f"  pymodbus: {machine.get('pymodbus')}")
    print(
        f"  points: types cycling {', '.join(POINT_TYPES)} at consecutive holding registers, deadband 0; "
        f"server: ModbusTestServer (pymodbus) in its own process on 127.0.0.1"
    )
    for config, result in results.items():
        db = result["database"]
        extra = ", ".join(f"{k}={v}" for k, v in db.items() if k not in {"vendor", "version"})
        print()
        print(f"{LABELS[config]} {db['version']} ({extra}; run took {result['wall_s']:.1f} s, migrate {result['migrate_s']:.1f} s):")
        for shape, r in result["shapes"].items():
            print(
                f"  shape {shape} ({shape_label(r)}, {r['registers']:,} registers, {r['requests_per_round']} requests per round, import {r['import_s']:.1f} s):"
            )
            for key, label in (("raw", "raw pymodbus read"), ("raw_convert", "raw pymodbus read + convert_from_registers")):
                x = r[key]
                print(f"    {label}: {x['tags_per_s']:,.0f} tags/s")
                print(f"    {label} round: {x['round_ms']:,.2f} ms ({x['rounds']} rounds)")
                print(f"    {label} bench CPU: {x['cpu_s']:.2f} s over {x['wall_s']:.2f} s; server CPU: {x['server_cpu_s']:.2f} s")
            for mode in ("changed", "unchanged"):
                x = r[mode]
                print(f"    meshhub, {MODES[mode]}:")
                print(f"      poll_bridge: {x['tags_per_s']:,.0f} tags/s")
                print(f"      ratio to raw read: {ratio_text(x['tags_per_s'] / r['raw']['tags_per_s'])} x")
                print(f"      ratio to raw read + convert: {ratio_text(x['tags_per_s'] / r['raw_convert']['tags_per_s'])} x")
                print(f"      poll p50: {x['p50_ms']:,.2f} ms")
                print(f"      poll p95: {x['p95_ms']:,.2f} ms")
                print(f"      poll max: {x['max_ms']:,.2f} ms")
                print(f"      tags per bench CPU-second: {x['tags_per_cpu_s']:,.0f} tags/CPU-s")
                print(f"      bench CPU: {x['cpu_s']:.2f} s over {x['wall_s']:.2f} s of polls; server CPU: {x['server_cpu_s']:.2f} s")
                print(
                    f"      polls: {x['polls']} in {x['rounds']} rounds ({x['tags']:,} tags, {x['reported']:,} reported, {x['samples_written']:,} TelemetrySamples written)"
                )
    print()
    print("goals (meshhub poll_bridge vs the raw pymodbus read loop; >= 15,000 tags/s):")
    for config, result in results.items():
        for shape, r in result["shapes"].items():
            for mode in ("changed", "unchanged"):
                x = r[mode]
                ratio = x["tags_per_s"] / r["raw"]["tags_per_s"]
                print(
                    f"  {LABELS[config]}, {shape}, values {mode}: ratio {ratio_text(ratio)} x -> >= {RATIO_GOAL} x {'met' if ratio >= RATIO_GOAL else 'NOT met'}; "
                    f"{x['tags_per_s']:,.0f} tags/s -> >= {TAGS_GOAL:,} {'met' if x['tags_per_s'] >= TAGS_GOAL else 'NOT met'}"
                )
    print()
    print("| figure | raw pymodbus | raw pymodbus + convert | meshhub | ratio (to raw) |")
    print("|---|---:|---:|---:|---:|")
    for config, result in results.items():
        for r in result["shapes"].values():
            raw, conv = r["raw"]["tags_per_s"], r["raw_convert"]["tags_per_s"]
            for mode, what in (("changed", "values changed every poll"), ("unchanged", "values unchanged")):
                x = r[mode]
                print(
                    f"| tags/s, {LABELS[config]}, {shape_label(r)}, {what} | {raw:,.0f} | {conv:,.0f} | {x['tags_per_s']:,.0f} | {ratio_text(x['tags_per_s'] / raw)} x |"
                )
            for mode, what in (("changed", "values changed"), ("unchanged", "values unchanged")):
                x = r[mode]
                raw_round = r["raw"]["round_ms"] / r["bridges"]
                print(
                    f"| poll p50 / p95 ms, {LABELS[config]}, {shape_label(r)}, {what} | {raw_round:,.1f} (mean) | — | {x['p50_ms']:,.1f} / {x['p95_ms']:,.1f} | — |"
                )
    for config, result in results.items():
        if result.get("profile"):
            print()
            print(f"cProfile of poll_bridge, {LABELS[config]}, first shape, values changed every poll (the profiler's overhead inflates the times):")
            print(result["profile"])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        WORKERS[sys.argv[1]](sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, from {', '.join(CONFIGS)} (default {DEFAULT_CONFIGS})")
    parser.add_argument(
        "--shapes", default=DEFAULT_SHAPES, help=f"bridges x points per bridge, comma-separated (default {DEFAULT_SHAPES}; at most 2,000 points per bridge)"
    )
    parser.add_argument("--polls", type=int, default=30, help="at most this many timed rounds per measurement, every bridge polled once per round (default 30)")
    parser.add_argument(
        "--duration",
        type=float,
        default=20.0,
        help=f"and no new round once a measurement's timed polls took this many seconds (default 20; at least {MIN_ROUNDS} rounds)",
    )
    parser.add_argument("--profile", action="store_true", help="then run a few polls of the first shape under cProfile and print the top functions")
    parser.add_argument("--profile-polls", type=int, default=5, help="rounds under cProfile (default 5)")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_MODBUS_DATABASE_URL", DEFAULT_POSTGRES_URL), help="dropped and recreated per run")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for config in configs:
        if config not in CONFIGS:
            parser.error(f"unknown config {config!r}")
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    try:
        shapes = [parse_shape(s) for s in args.shapes]
    except ValueError:
        parser.error("--shapes: e.g. 1x2000,10x200")
    if any(not 1 <= points <= 2000 or bridges < 1 for bridges, points in shapes):
        parser.error("--shapes: 1..2,000 points per bridge (industrial.config.MAX_POINTS)")
    if args.polls < 1:
        parser.error("--polls: at least 1")
    holding = max(bridges * shape_registers(points) for bridges, points in shapes)
    if holding > 65536:
        parser.error(f"--shapes: {holding:,} registers do not fit one Modbus table")

    import pymodbus
    from gateway import git_state
    from run import machine_info

    machine = machine_info()
    machine["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    machine["git"] = git_state()
    machine["pymodbus"] = pymodbus.__version__
    command = " ".join(["python", "bench/modbus.py", *sys.argv[1:]])
    results: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="meshhub-modbus-bench-") as tmp, modbus_server(holding) as (port, server_pid):
        for config in configs:
            results[config] = run_config(config, args, tmp, port, server_pid)
    machine["total_wall_s"] = time.perf_counter() - t0
    print_report(machine, results, command)
    print()
    print(f"total_runtime_s: {machine['total_wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "command": command, "results": results}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
