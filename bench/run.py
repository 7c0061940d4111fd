"""meshhub benchmark: command and audit-append throughput, certificate issuance, the mesh gateway beside Mosquitto, Modbus polling, and the operator pages at scale.

    python bench/run.py                 # or: make bench (everything, about 17 minutes)
    python bench/run.py --part audit    # commands and audit appends only
    python bench/run.py --part pki      # certificates only
    python bench/run.py --part gateway  # the mesh gateway and Mosquitto only (about 5 minutes)
    python bench/run.py --part modbus   # the industrial bridge beside a raw pymodbus loop only (about 5 minutes)
    python bench/run.py --part ota      # 100 devices updating at once beside raw TLS (about 4 minutes)
    python bench/run.py --part pages    # the operator pages at 10,000 devices, and one browser under 1,000 reports/s (about 9 minutes)
    python bench/run.py --only sqlite   # one database only (the pure signing part still runs)

Five parts, every worker in its own process (Django reads its settings once per process):

- audit: `bench/commands_audit.py` once per database;
- pki: `bench/pki_issue.py --mode pure` once (no database: CSR parsing, signing, CRL
  builds), then `bench/pki_issue.py --mode service` once per database (the enrollment
  service, CRL regeneration and revocation);
- gateway: `bench/gateway.py` (the Mosquitto peer's script, then `manage.py runmesh` under
  load from `bench/gateway_client.py`: handshakes, idle memory, state reports, command
  round trips, state ack latency with and without a slow state subscriber; SQLite
  embedded, PostgreSQL with Redis). Its report is printed after the others;
- modbus: `bench/modbus.py` (a pymodbus server process of its own, then per database a worker
  timing `industrial.polling.poll_bridge()` beside a raw pymodbus client loop reading the same
  registers: tags/s, poll latency, CPU). Its report is printed after the gateway's;
- pages: `bench/pages.py` (`manage.py seedfleet` into a database of its own, then the devices
  list and a device page over HTTP from the hub's server, then headless Chromium on a device
  page while state reports stream through the gateway). Its report is printed last.

SQLite runs with DATABASE_URL unset and a fresh MESHHUB_DATA_DIR, PostgreSQL against a
database that is dropped and recreated before every worker. Redis is not used (REDIS_URL
unset: in-memory channel layer). Prints `name: value unit` lines, then markdown tables;
docs/performance.md records a run.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import recreate_postgres_database  # bench/ is the script directory, first on sys.path; pages.py imports it from here

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
AUDIT_WORKER = BENCH_DIR / "commands_audit.py"
PKI_WORKER = BENCH_DIR / "pki_issue.py"
GATEWAY_BENCH = BENCH_DIR / "gateway.py"
MODBUS_BENCH = BENCH_DIR / "modbus.py"
PAGES_BENCH = BENCH_DIR / "pages.py"
OTA_BENCH = BENCH_DIR / "ota.py"
PAGES_CONFIGS = {None: None, "sqlite": "sqlite", "postgres": "postgres+redis"}
GATEWAY_CONFIGS = {
    None: None,  # bench/gateway.py's default configurations
    "sqlite": "sqlite,sqlite@asyncio:handshakes",
    "postgres": "postgres+redis",
}
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


def run_worker(label: str, env: dict[str, str], worker: Path, worker_args: list[str]) -> dict[str, Any]:
    print(f"=== {label} ===", file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(worker), *worker_args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
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


def pure_figures(result: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(name, value, unit) for the database-free certificate figures, in print order."""
    signing = result["signing"]
    rows: list[tuple[str, float, str]] = [
        ("parse_csr + sign_device_csr", signing["parse_and_sign"]["per_s"], "certificates/s"),
        ("parse_csr + sign_device_csr p50", signing["parse_and_sign"]["p50_ms"], "ms"),
        ("parse_csr", signing["parse_csr"]["per_s"], "CSRs/s"),
        ("csr signature check", signing["csr_verify"]["per_s"], "CSRs/s"),
        ("sign_device_csr", signing["sign"]["per_s"], "certificates/s"),
        ("sign_device_csr p50", signing["sign"]["p50_ms"], "ms"),
    ]
    for crl in result["crl"]:
        rows.append((f"build_crl {crl['entries']:,} entries p50", crl["p50_ms"], "ms"))
    return rows


def service_figures(result: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(name, value, unit) for one database's certificate-service figures, in print order."""
    enrollment = result["enrollment"]
    crl = result["crl"]
    stall = enrollment["writer_during_enrollment"]
    return [
        ("complete_enrollment", enrollment["complete_enrollment"]["per_s"], "enrollments/s"),
        ("complete_enrollment p50", enrollment["complete_enrollment"]["p50_ms"], "ms"),
        ("complete_enrollment max", enrollment["complete_enrollment"]["max_ms"], "ms"),
        ("PBKDF2 check_password alone p50", enrollment["pbkdf2_check"]["p50_ms"], "ms"),
        ("other thread's record() while idle, max", enrollment["writer_idle"]["max_ms"], "ms"),
        (f"other thread's record() during {stall['enrollments']} enrollments, max", stall["max_ms"], "ms"),
        (f"other thread's record() during {stall['enrollments']} enrollments, appends", stall["appends"], "events"),
        (f"refresh_crls {crl['revoked']:,} revoked p50", crl["refresh_crls_p50_ms"], "ms"),
        (f"revoke_certificate on {crl['revoked']:,} revoked", crl["revoke_certificate"]["per_s"], "revocations/s"),
        (f"revoke_certificate on {crl['revoked']:,} revoked p50", crl["revoke_certificate"]["p50_ms"], "ms"),
    ]


def fmt(value: float, unit: str) -> str:
    """Milliseconds and small rates (a few enrollments/s) with two decimals, everything else whole."""
    return f"{value:,.2f}" if unit.startswith("ms") or (unit.endswith("/s") and value < 100) else f"{value:,.0f}"


def markdown_table(results: dict[str, dict[str, Any]], figures: Callable[[dict[str, Any]], list[tuple[str, float, str]]] = figures) -> str:
    labels = list(results)
    per_db = {label: figures(result) for label, result in results.items()}
    first = per_db[labels[0]]
    lines = ["| figure | unit | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for index, (name, _, unit) in enumerate(first):
        cells = [fmt(per_db[label][index][1], unit) for label in labels]
        lines.append(f"| {name} | {unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def database_env(tmp: str, name: str, postgres_url: str | None) -> dict[str, str]:
    """A fresh data directory (and, for PostgreSQL, a freshly recreated database) for one worker."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=tmp))
    env = base_env(str(data_dir))
    if postgres_url is not None:
        recreate_postgres_database(postgres_url)
        env["DATABASE_URL"] = postgres_url
    return env


def print_audit(results: dict[str, dict[str, Any]]) -> None:
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


def print_pki(pure: dict[str, Any] | None, service: dict[str, dict[str, Any]]) -> None:
    if pure is not None:
        signing = pure["signing"]
        print()
        print(
            f"Certificates, no database (run took {pure['wall_s']:.1f} s; {signing['csrs']:,} P-256 CSRs, median of "
            f"{signing['parse_and_sign']['rounds']} passes, single thread; cryptography {pure['cryptography']}, {pure['openssl']}):"
        )
        for name, value, unit in pure_figures(pure):
            print(f"  {name}: {fmt(value, unit)} {unit}")
    for label, result in service.items():
        enrollment = result["enrollment"]
        print()
        print(
            f"Certificates, {label} (run took {result['wall_s']:.1f} s; {enrollment['enrollments']} enrollments, "
            f"PBKDF2-SHA256 {enrollment['pbkdf2_check']['iterations']:,} iterations):"
        )
        for name, value, unit in service_figures(result):
            print(f"  {name}: {fmt(value, unit)} {unit}")
    if pure is not None:
        print()
        lines = ["| figure | unit | no database |", "|---|---|---:|"]
        lines += [f"| {name} | {unit} | {fmt(value, unit)} |" for name, value, unit in pure_figures(pure)]
        print("\n".join(lines))
    if service:
        print()
        print(markdown_table(service, service_figures))


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Command and audit-append throughput and certificate issuance on SQLite and PostgreSQL, the mesh gateway beside Mosquitto, Modbus polling beside raw pymodbus, and the operator pages at scale."
    )
    parser.add_argument("--only", choices=["sqlite", "postgres"], help="run one database only")
    parser.add_argument(
        "--part",
        choices=["audit", "pki", "gateway", "modbus", "pages", "ota"],
        help="run one part only: commands and audit appends, certificates, the mesh gateway beside Mosquitto, Modbus polling beside raw pymodbus, or the operator pages at scale",
    )
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_POSTGRES_URL), help="dropped and recreated before each worker")
    parser.add_argument("--csrs", type=int, default=2000, help="pki: CSRs parsed and signed without a database (default 2000)")
    parser.add_argument("--enrollments", type=int, default=30, help="pki: complete_enrollment() calls per database (default 30)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("worker_args", nargs="*", help="passed to commands_audit.py after --, e.g. -- --commands 500")
    args = parser.parse_args()

    machine = machine_info()
    databases = [(label, name) for label, name in (("SQLite", "sqlite"), ("PostgreSQL", "postgres")) if args.only in (None, name)]
    descriptions = {"SQLite": "SQLite (embedded)", "PostgreSQL": "PostgreSQL (production)"}
    results: dict[str, dict[str, Any]] = {}
    pure: dict[str, Any] | None = None
    service: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="meshhub-bench-") as tmp:
        if args.part in (None, "audit"):
            for label, name in databases:
                env = database_env(tmp, name, args.postgres_url if name == "postgres" else None)
                results[label] = run_worker(descriptions[label], env, AUDIT_WORKER, args.worker_args)
        if args.part in (None, "pki"):
            pure = run_worker(
                "certificates, no database", base_env(tempfile.mkdtemp(prefix="pure-", dir=tmp)), PKI_WORKER, ["--mode", "pure", "--csrs", str(args.csrs)]
            )
            for label, name in databases:
                env = database_env(tmp, f"pki-{name}", args.postgres_url if name == "postgres" else None)
                service[label] = run_worker(
                    f"certificates, {descriptions[label]}", env, PKI_WORKER, ["--mode", "service", "--enrollments", str(args.enrollments)]
                )

    if args.part not in ("gateway", "modbus", "pages", "ota"):  # the gateway, modbus and pages reports print their own machine block
        print("machine:")
        print(f"  date: {machine['date_utc']}")
        print(f"  nproc: {machine['nproc']}")
        print(f"  cpu: {machine['cpu_model']}")
        print(f"  memory: {machine['memory']}")
        print(f"  kernel: {machine['kernel']}")
        print(f"  python: {machine['python']}")
        for label in descriptions:
            db = (results.get(label) or service.get(label) or {}).get("database")
            if db:
                extra = ", ".join(f"{k}={v}" for k, v in db.items() if k not in {"vendor", "version"})
                print(f"  {label}: {db['version']} ({extra})")
    if results:
        print_audit(results)
    if pure is not None or service:
        print_pki(pure, service)

    gateway: dict[str, Any] | None = None
    if args.part in (None, "gateway"):
        gateway = run_part("mesh gateway and Mosquitto", GATEWAY_BENCH, GATEWAY_CONFIGS[args.only])

    modbus: dict[str, Any] | None = None
    if args.part in (None, "modbus"):
        modbus = run_part("industrial bridge beside raw pymodbus", MODBUS_BENCH, args.only)

    pages: dict[str, Any] | None = None
    if args.part in (None, "pages"):
        pages = run_part("operator pages at scale", PAGES_BENCH, PAGES_CONFIGS[args.only])

    ota: dict[str, Any] | None = None
    if args.part in (None, "ota"):
        ota = run_part("firmware updates beside raw TLS", OTA_BENCH, args.only or "sqlite")

    if args.json:
        payload = {
            "machine": machine, "results": results, "pki": {"pure": pure, "service": service},
            "gateway": gateway, "modbus": modbus, "pages": pages, "ota": ota,
        }  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


def run_part(title: str, script: Path, configs: str | None) -> dict[str, Any]:
    """One bench script in its own process (it starts its servers, workers and clients itself;
    each uses a PostgreSQL database and Redis DB of its own, named in its docstring); its
    report goes to stdout, its figures come back through --json."""
    print(f"=== {title} ({script.relative_to(REPO_ROOT)}) ===", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=f"meshhub-bench-{script.stem}-") as tmp:
        raw = Path(tmp) / f"{script.stem}.json"
        argv = [sys.executable, str(script), "--json", str(raw)]
        if configs:
            argv += ["--configs", configs]
        proc = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False)
        print()
        print(proc.stdout.rstrip())
        if proc.returncode != 0:
            raise SystemExit(f"{script.relative_to(REPO_ROOT)} exited with {proc.returncode}")
        result: dict[str, Any] = json.loads(raw.read_text())
        return result


if __name__ == "__main__":
    sys.exit(main())
