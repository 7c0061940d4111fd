"""Telemetry retention at scale: how fast a run moves old samples into rollups, and how long
the gateway's ingest waits on it meanwhile (the "no long locks" promise), per database.

Per configuration (SQLite embedded; PostgreSQL when DATABASE_URL-style access to
127.0.0.1:5432 works): a fresh database, `seedfleet --devices N --days D` (D days back
from now, so all but the raw window is due), then in one process
  1. the ingest baseline: a writer applies a state batch (one report of --reports-per-batch
     devices, as the gateway batches them) every 50 ms for --baseline-s seconds, timing each
     batch's commit;
  2. the same writer while `retention.apply` runs to the end in another thread.
Printed: rows moved, wall time, rows/s, batches, the longest batch, and the writer's p50 /
p99 / max commit time without and with retention running.

    .venv/bin/python bench/retention.py [--devices 2000] [--days 14] [--interval 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from benchlib import REPO_ROOT, log, percentile

CONFIGS = {
    "sqlite": {},
    "postgresql": {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/meshhub_bench_retention"},
}


def manage(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *argv], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def recreate_postgres(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    for sql in (f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-q", "-c", sql], check=True, capture_output=True)


def measure_in_process(args: argparse.Namespace) -> dict[str, Any]:
    """Runs in a child with the configuration's environment: writer + retention."""
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from devices import retention, state
    from devices.models import Capability, TelemetrySample

    numeric = list(
        Capability.objects.filter(value_type__in=["float", "int"], device__node_id__startswith="seed-").values_list("device__node_id", "name")[
            : args.reports_per_batch
        ]
    )
    stop = threading.Event()
    timings: list[float] = []

    def writer() -> None:
        n = 0
        try:
            while not stop.is_set():
                now = timezone.now()
                reports = [state.StateReport(node_id, {name: 20.0 + (n % 100) / 10}, now) for node_id, name in numeric]
                began = time.perf_counter()
                state.apply_reports(reports)
                timings.append(time.perf_counter() - began)
                n += 1
                time.sleep(0.05)
        finally:
            connection.close()

    def figures(values: list[float]) -> dict[str, float]:
        return {"batches": len(values), "p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000, "max_ms": max(values) * 1000}

    before = TelemetrySample.objects.count()
    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(args.baseline_s)
    baseline = figures(timings)
    timings.clear()
    policy = retention.Policy.from_settings()
    report = retention.apply(retention.Policy(policy.raw_days, policy.hourly_days, policy.daily_days, policy.batch, budget_s=24 * 3600))
    during = figures(timings) if timings else {}
    stop.set()
    thread.join()
    return {"samples_before": before, "report": report.as_dict(), "ingest_baseline": baseline, "ingest_during_retention": during}


def run_config(name: str, extra: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix=f"bench-retention-{name}-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(extra, MESHHUB_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="hub.settings", MESHHUB_TELEMETRY_RETENTION_BATCH=str(args.batch))
    try:
        if "DATABASE_URL" in extra:
            recreate_postgres(extra["DATABASE_URL"])
        log(f"=== {name}: migrate, seedfleet --devices {args.devices} --days {args.days:g} --interval {args.interval} ===")
        manage(["migrate", "--no-input", "-v", "0"], env)
        seed = json.loads(
            manage(["seedfleet", "--devices", str(args.devices), "--days", f"{args.days:g}", "--interval", str(args.interval), "--json"], env).splitlines()[-1]
        )
        log(f"  seeded {seed['samples']:,} samples in {seed['total_s']:.1f} s")
        child = subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:]], env=env, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
        if child.returncode:
            raise SystemExit(f"{name} measurement failed:\n{child.stderr[-3000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result["seed"] = seed
        return result
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--days", type=float, default=14, help="history per capability; all but the last 7 days (the default raw window) is rolled up")
    parser.add_argument("--interval", type=int, default=300, help="seconds between seeded samples")
    parser.add_argument("--batch", type=int, default=5000, help="MESHHUB_TELEMETRY_RETENTION_BATCH")
    parser.add_argument("--reports-per-batch", type=int, default=200, help="reports in each of the writer's state batches")
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument("--only", choices=sorted(CONFIGS))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_in_process(args)))
        return
    results = {name: run_config(name, extra, args) for name, extra in CONFIGS.items() if not args.only or args.only == name}
    machine = f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.json:
        print(json.dumps({"machine": machine, "args": vars(args), "results": results}, indent=2))
        return
    print(f"bench/retention.py {' '.join(sys.argv[1:])}  ({machine})")
    for name, r in results.items():
        rep = r["report"]
        moved = rep["raw_rolled_up"] + rep["raw_text_deleted"]
        print(
            f"{name}: {r['samples_before']:,} samples, {moved:,} moved in {rep['seconds']:.1f} s = {moved / max(rep['seconds'], 1e-9):,.0f} rows/s, "
            f"{rep['batches']} batches of {args.batch}, longest {rep['longest_batch_s'] * 1000:.0f} ms"
        )
        for label, key in (("without retention", "ingest_baseline"), ("during retention", "ingest_during_retention")):
            f = r[key]
            if f:
                print(
                    f"  ingest of {args.reports_per_batch} reports {label}: {f['batches']} batches, p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, max {f['max_ms']:.1f} ms"
                )


if __name__ == "__main__":
    main()
