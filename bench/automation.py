"""Automation benchmark: rule evaluations per second with 1,000 rules over 10,000 devices.

    python bench/automation.py                         # embedded (SQLite), about 2 minutes
    python bench/automation.py --configs postgres      # PostgreSQL (a recreated meshhub_autobench)

Figures (acceptance of the "Automation…" issue; goal >= 50,000 evaluations/s):

1. engine: `automation.engine.evaluate` alone, 1,000 parsed rules, each report of a random
   device evaluated by the rules that read it (the in-memory index), 200,000 reports;
   evaluations/s of one core.
2. live path: the same fleet and rules in the database (10,000 thermostats, 1,000 rules
   saved through `automation.rules.create`, i.e. validated), state batches of 500 reports
   committed by `devices.state.apply_reports` and handed to `automation.evaluator.on_state`,
   the function the state subscribers' thread runs: evaluations/s (each one locks its rule,
   evaluates, writes its state; firings write their run and commands) and the time per batch.

Not measured here yet: report-to-command latency through the real gateway.
Prints `name: value unit` lines and `BENCH-RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
BENCH_DB = "meshhub_autobench"


def rule_document(i: int, rng: random.Random, devices: int) -> dict[str, Any]:
    sensor, target = rng.randrange(devices), rng.randrange(devices)
    when: dict[str, Any] = {"device": f"thermo-{sensor:05d}", "capability": "temperature", "op": "gt", "value": round(rng.uniform(24, 30), 1)}
    if i % 3 == 0:
        when["for_s"] = 10
    if i % 2 == 0:
        when["hysteresis"] = 1
    return {
        "name": f"rule-{i:04d}",
        "cooldown_s": 60,
        "when": {"all": [when]} if i % 4 else when,
        "then": [{"device": f"thermo-{target:05d}", "capability": "setpoint", "action": "set", "value": 20}],
    }


def engine_rate(rules: int, devices: int, reports: int) -> dict[str, Any]:
    from automation import engine

    rng = random.Random(1)
    parsed = [engine.parse_rule(rule_document(i, rng, devices)) for i in range(rules)]
    index: dict[str, list[int]] = {}
    for n, rule in enumerate(parsed):
        for leaf in rule.leaves():
            index.setdefault(leaf.device, []).append(n)
    states = [engine.RuleState() for _ in parsed]
    values: dict[tuple[str, str], Any] = {}
    rng = random.Random(2)
    # Drawn before the clock starts: the figure is the engine's, not the random generator's.
    stream = [(f"thermo-{rng.randrange(devices):05d}", round(rng.uniform(20, 32), 1)) for _ in range(reports)]
    evaluations = fired = 0
    started = time.perf_counter()
    for k, (node, reading) in enumerate(stream):
        previous = values  # read only by changed ops, which these rules do not use
        values[(node, "temperature")] = reading
        for n in index.get(node, ()):
            result = engine.evaluate(parsed[n], states[n], values, previous, float(k), 12 * 60)
            states[n] = result.state
            evaluations += 1
            fired += result.fires
    seconds = time.perf_counter() - started
    return {"reports": reports, "evaluations": evaluations, "fired": fired, "seconds": round(seconds, 2), "evaluations_per_s": round(evaluations / seconds)}


def live_rate(rules: int, devices: int, batches: int, batch_size: int) -> dict[str, Any]:
    from django.utils import timezone

    from audit.services import Actor
    from automation import evaluator
    from automation import rules as rule_service
    from automation.models import RuleRun
    from devices import state
    from devices.models import Capability, CapabilityKind, Device, DeviceStatus, ValueType

    nodes = [f"thermo-{n:05d}" for n in range(devices)]
    Device.objects.bulk_create([Device(node_id=node, device_type="thermostat", status=DeviceStatus.PROVISIONED) for node in nodes], batch_size=2000)
    ids = dict(Device.objects.values_list("node_id", "pk"))
    caps = []
    for node in nodes:
        caps.append(Capability(device_id=ids[node], name="temperature", kind=CapabilityKind.SENSOR, value_type=ValueType.FLOAT, unit="°C"))
        caps.append(
            Capability(device_id=ids[node], name="setpoint", kind=CapabilityKind.ACTUATOR, value_type=ValueType.FLOAT, min_value=5, max_value=35, writable=True)
        )
    Capability.objects.bulk_create(caps, batch_size=5000)
    actor = Actor("user", "bench", scopes=frozenset({"command", "read-status"}))
    rng = random.Random(1)
    saving = time.perf_counter()
    for i in range(rules):
        rule_service.create(actor, rule_document(i, rng, devices))
    save_s = time.perf_counter() - saving
    rng = random.Random(2)
    now = timezone.now()
    evaluations = 0
    batch_times: list[float] = []
    # Each thermostat's temperature walks from somewhere between 18 and 28 °C in steps of at
    # most 0.5 °C (what a room does between two reports): rules fire when a room crosses
    # its threshold (24 to 30 °C), some at once.
    temperature = {node: rng.uniform(18, 28) for node in nodes}

    def walk(node: str) -> float:
        temperature[node] = min(35.0, max(15.0, temperature[node] + rng.uniform(-0.5, 0.5)))
        return round(temperature[node], 1)

    started = time.perf_counter()
    for b in range(batches):
        ts = now + timedelta(seconds=b)
        reports = [state.StateReport(node, {"temperature": walk(node)}, ts) for node in (nodes[rng.randrange(devices)] for _ in range(batch_size))]
        state.apply_reports(reports, now=ts)
        t0 = time.perf_counter()
        evaluations += sum(len(evaluator.rules_reading({(r.node_id, "temperature")})) for r in reports)
        evaluator.on_state(reports)
        batch_times.append(time.perf_counter() - t0)
    seconds = sum(batch_times)
    batch_times.sort()
    return {
        "rules_saved_per_s": round(rules / save_s, 1),
        "reports": batches * batch_size,
        "evaluations": evaluations,
        "fired": RuleRun.objects.filter(outcome="fired").count(),
        "evaluation_seconds": round(seconds, 2),
        "evaluations_per_s": round(evaluations / seconds) if seconds else None,
        "reports_per_s": round(batches * batch_size / seconds) if seconds else None,
        "batch_p50_ms": round(batch_times[len(batch_times) // 2] * 1000, 1),
        "batch_max_ms": round(batch_times[-1] * 1000, 1),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--reports", type=int, default=200000, help="engine part")
    parser.add_argument("--batches", type=int, default=40, help="live part: state batches")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--configs", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    os.environ["MESHHUB_DATA_DIR"] = tempfile.mkdtemp(prefix="meshhub-autobench-")
    os.environ.pop("REDIS_URL", None)
    if args.configs == "postgres":
        import psycopg

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"
    else:
        os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = {"config": args.configs, "rules": args.rules, "devices": args.devices}
    results["engine"] = engine_rate(args.rules, args.devices, args.reports)
    print(f"engine_evaluations_per_s: {results['engine']['evaluations_per_s']} /s (goal >= 50000)")
    results["live"] = live_rate(args.rules, args.devices, args.batches, args.batch_size)
    live = results["live"]
    print(f"live_evaluations_per_s: {live['evaluations_per_s']} /s (goal >= 50000)")
    print(f"live_reports_per_s: {live['reports_per_s']} /s ({live['fired']} firings)")
    print(f"live_batch_of_{args.batch_size}_p50: {live['batch_p50_ms']} ms")
    print(f"live_batch_of_{args.batch_size}_max: {live['batch_max_ms']} ms")
    print(f"rules_saved_per_s: {live['rules_saved_per_s']} /s")
    print("BENCH-RESULT " + json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
