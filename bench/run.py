"""meshhub benchmark: command and audit-append throughput on SQLite and PostgreSQL.

    python bench/run.py            # or: make bench

Each database runs `bench/commands_audit.py` in its own process (Django reads its
settings once per process): SQLite with DATABASE_URL unset and a fresh MESHHUB_DATA_DIR,
PostgreSQL against a database that is dropped and recreated first. Redis is not used
(REDIS_URL unset: in-memory channel layer). Prints `name: value unit` lines, then a
markdown table; docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORKER = BENCH_DIR / "commands_audit.py"
RESULT_MARKER = "BENCH-RESULT "
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/meshhub_bench"
BATCHING_GOAL_PER_S = 5000


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": mem_total,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite_library": sqlite3.sqlite_version,
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def recreate_postgres_database(url: str) -> None:
    """Drop and create the benchmark database, connecting to the `postgres` maintenance DB."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or name in {"postgres", "template0", "template1"}:
        raise SystemExit(f"refusing to drop database {name!r}: give the benchmark its own database")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def run_worker(label: str, env: dict[str, str], worker_args: list[str]) -> dict[str, Any]:
    print(f"=== {label} ===", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(WORKER), *worker_args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
            result["wall_s"] = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"{label}: worker exited with {proc.returncode}")
            return result
    sys.stderr.write(proc.stdout)
    raise SystemExit(f"{label}: worker exited with {proc.returncode} and printed no result")


def base_env(data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env["MESHHUB_DATA_DIR"] = data_dir
    env["MESHHUB_LOG_LEVEL"] = "WARNING"  # the JSON log goes to stdout; keep it quiet
    env["MESHHUB_DEBUG"] = "0"  # DEBUG would keep every query in memory
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def figures(result: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(name, value, unit) for every figure of one database's run, in print order."""
    rows: list[tuple[str, float, str]] = [
        ("send_command", result["send_command"]["per_s"], "commands/s"),
        ("send_command p50", result["send_command"]["p50_ms"], "ms"),
        ("send_command p99", result["send_command"]["p99_ms"], "ms"),
        ("record", result["record"]["per_s"], "events/s"),
        ("record p50", result["record"]["p50_ms"], "ms"),
        ("record p99", result["record"]["p99_ms"], "ms"),
    ]
    for batched in result["record_many"]:
        rows.append((f"record_many batch={batched['batch']}", batched["per_s"], "events/s"))
        rows.append((f"record_many batch={batched['batch']} p50", batched["batch_p50_ms"], "ms/batch"))
    concurrent = result["concurrent_record"]
    rows.append((f"record concurrent {concurrent['threads']} threads", concurrent["per_s"], "events/s"))
    rows.append(("verify", result["verify"]["per_s"], "events/s"))
    return rows


def fmt(value: float, unit: str) -> str:
    return f"{value:,.2f}" if unit.startswith("ms") else f"{value:,.0f}"


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    labels = list(results)
    per_db = {label: figures(result) for label, result in results.items()}
    first = per_db[labels[0]]
    lines = ["| figure | unit | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for index, (name, _, unit) in enumerate(first):
        cells = [fmt(per_db[label][index][1], unit) for label in labels]
        lines.append(f"| {name} | {unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description="Command and audit-append throughput on SQLite and PostgreSQL.")
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="run one database only")
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_POSTGRES_URL), help="dropped and recreated at start")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("worker_args", nargs="*", help="passed to commands_audit.py after --, e.g. -- --commands 500")
    args = parser.parse_args()

    machine = machine_info()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="meshhub-bench-") as tmp:
        if args.only in (None, "sqlite"):
            data_dir = Path(tmp, "sqlite")
            data_dir.mkdir()
            results["SQLite"] = run_worker("SQLite (embedded)", base_env(str(data_dir)), args.worker_args)
        if args.only in (None, "postgres"):
            recreate_postgres_database(args.postgres_url)
            data_dir = Path(tmp, "postgres")
            data_dir.mkdir()
            env = base_env(str(data_dir))
            env["DATABASE_URL"] = args.postgres_url
            results["PostgreSQL"] = run_worker("PostgreSQL (production)", env, args.worker_args)

    print("machine:")
    print(f"  date: {machine['date_utc']}")
    print(f"  nproc: {machine['nproc']}")
    print(f"  cpu: {machine['cpu_model']}")
    print(f"  memory: {machine['memory']}")
    print(f"  kernel: {machine['kernel']}")
    print(f"  python: {machine['python']}")
    for label, result in results.items():
        db = result["database"]
        extra = ", ".join(f"{k}={v}" for k, v in db.items() if k not in {"vendor", "version"})
        print(f"  {label}: {db['version']} ({extra})")
    for label, result in results.items():
        print()
        print(f"{label} (run took {result['wall_s']:.1f} s; {result['verify']['n']:,} audit events in the chain):")
        for name, value, unit in figures(result):
            print(f"  {name}: {fmt(value, unit)} {unit}")
        print(f"  verify ok: {result['verify']['ok']}")

    print()
    print(markdown_table(results))
    print()
    for label, result in results.items():
        for batched in result["record_many"]:
            rate = batched["per_s"]
            verdict = "met" if rate >= BATCHING_GOAL_PER_S else "NOT met"
            print(f"goal >= {BATCHING_GOAL_PER_S:,} audit appends/s with batching, {label} batch={batched['batch']}: {verdict} ({rate:,.0f} events/s)")

    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
