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

3. latency (`--latency N`, 0 to skip): state report to command through the real gateway,
   p50/p99 (goal p99 < 100 ms). `manage.py runhub` (the embedded default, or PostgreSQL +
   Redis with `--configs postgres`) and reference agents enrolled through the real flow:
   a thermostat, a relay, and `--background` thermostats reporting every second, each read
   by a rule of its own (the evaluator's load). Two rules saved through the API: above
   30 °C switch the relay on, below 20 °C off. N times the thermostat's temperature is
   flipped across a threshold; the latency runs from the moment the agent writes the first
   state frame carrying the new value to its TLS socket to the moment the relay's agent
   executes the command (one clock: both agents are threads of this process). In between:
   TLS, the gateway's ingest and commit, the rule evaluator on the state subscribers'
   thread, `send_command()`, its commit and dispatch to the relay's session, TLS.

Prints `name: value unit` lines and `BENCH-RESULT {json}`.
"""

from __future__ import annotations

import argparse
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
LATENCY_DB, LATENCY_REDIS_DB = "meshhub_autolatency", 9

LATENCY_SETUP = """
import json
from django.contrib.auth import get_user_model
from audit.services import Actor
from devices import identity
from hub.models import ApiToken
user = get_user_model().objects.create_superuser("bench", password="bench-Pass-123")
_, token = ApiToken.issue(user, ["read-status", "command"])
names = [("lat-thermo", "thermostat"), ("lat-relay", "relay")] + [(f"bg-{i:04d}", "thermostat") for i in range(BACKGROUND)]
tickets = [identity.create_enrollment(Actor.system("bench"), node, device_type=kind, ttl_s=3600).as_dict() for node, kind in names]
print(json.dumps({"token": token, "tickets": tickets}))
"""


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


def latency_run(args: argparse.Namespace) -> dict[str, Any]:
    """Report-to-command latency through the real gateway (see the module's docstring)."""
    import threading

    from benchlib import LiveHub, log, percentile

    from firmware.agent import port as agent_port
    from firmware.agent.core.agent import Agent
    from firmware.agent.hardware import VirtualHardware
    from firmware.agent.profiles import load_profile

    class Steady(VirtualHardware):  # type: ignore[misc]
        """Values move only when the bench sets them."""

        def tick(self, dt: float) -> dict[str, Any]:
            return dict(self.values)

    class Timed(Agent):  # type: ignore[misc]
        """The reference agent, noting when it writes a state frame and when it executes a command."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.sent: dict[float, float] = {}  # temperature -> first time a state frame carried it
            self.executed_at: list[tuple[float, Any]] = []

        def send(self, conn: Any, kind: str, body: Any) -> Any:
            if kind == "state" and "temperature" in body.get("values", {}):
                self.sent.setdefault(body["values"]["temperature"], time.perf_counter())
            return super().send(conn, kind, body)

        def execute(self, body: Any) -> Any:
            self.executed_at.append((time.perf_counter(), body.get("value")))
            return super().execute(body)

    data_dir = Path(tempfile.mkdtemp(prefix="meshhub-autolatency-"))
    setup = LATENCY_SETUP.replace("BACKGROUND", str(args.background))
    live = LiveHub(
        data_dir,
        setup,
        production=args.configs == "postgres",
        database=LATENCY_DB,
        redis_db=LATENCY_REDIS_DB,
        extra_env={"MESHHUB_ENROLL_ATTEMPTS_PER_MINUTE": str(max(10, (args.background + 2) * 2))},
    )
    latencies: list[float] = []
    with live:

        def agent(state_dir: str) -> Agent:
            node = Path(state_dir).name
            kind = "relay" if node == "lat-relay" else "thermostat"
            profile = load_profile(kind)
            if node.startswith("bg-"):
                return Agent(agent_port, state_dir, profile, VirtualHardware(profile, seed=node), report_s=1.0, retry_delay_s=1.0)
            return Timed(agent_port, state_dir, profile, Steady(profile), report_s=0.05, retry_delay_s=1.0)

        agents = {a.node_id: a for a in live.enroll(live.prepared["tickets"], agent)}
        thermo, relay = agents["lat-thermo"], agents["lat-relay"]
        on = {"device": "lat-relay", "capability": "on", "action": "set"}
        for name, op, value, switch in (("hot", "gt", 30, True), ("cold", "lt", 20, False)):
            when = {"device": "lat-thermo", "capability": "temperature", "op": op, "value": value}
            status, body = live.api("POST", "/api/v1/rules/", {"name": name, "when": when, "then": [{**on, "value": switch}]})
            if status != 201:
                raise SystemExit(f"rule refused: {status} {body}")
        for i in range(args.background):
            when = {"device": f"bg-{i:04d}", "capability": "temperature", "op": "gt", "value": 40}
            status, body = live.api("POST", "/api/v1/rules/", {"name": f"bg-{i:04d}", "when": when, "then": [{**on, "value": True}]})
            if status != 201:
                raise SystemExit(f"rule refused: {status} {body}")
        time.sleep(2)  # the rules' index is reloaded within a second
        log(f"{args.latency} flips of the thermostat across a threshold")
        lock = threading.Lock()
        for n in range(args.latency):
            switch = n % 2 == 0
            reading = round((31.0 if switch else 19.0) + n / 10000, 4)  # a value of its own: its first frame is unambiguous
            executed = len(relay.executed_at)
            with lock:
                thermo.hardware.values["temperature"] = reading
            deadline = time.monotonic() + 10
            while len(relay.executed_at) == executed or relay.executed_at[-1][1] is not switch:
                if time.monotonic() > deadline:
                    raise SystemExit(f"flip {n}: no command reached the relay in 10 s; log in {data_dir}/runhub.log")
                time.sleep(0.0005)
            latencies.append((relay.executed_at[-1][0] - thermo.sent[reading]) * 1000)
    latencies.sort()
    return {
        "samples": len(latencies),
        "background_devices": args.background,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--reports", type=int, default=200000, help="engine part")
    parser.add_argument("--batches", type=int, default=40, help="live part: state batches")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--configs", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--latency", type=int, default=200, help="report-to-command samples through the real gateway (0: skip)")
    parser.add_argument("--background", type=int, default=100, help="latency part: thermostats reporting every second, a rule each")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    os.environ["MESHHUB_DATA_DIR"] = tempfile.mkdtemp(prefix="meshhub-autobench-")
    os.environ.pop("REDIS_URL", None)
    if args.configs == "postgres":
        from benchlib import bench_database

        os.environ["DATABASE_URL"] = bench_database(BENCH_DB)
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
    if args.latency:
        results["latency"] = latency_run(args)
        lat = results["latency"]
        print(f"report_to_command_p50: {lat['p50_ms']} ms ({lat['samples']} samples, {lat['background_devices']} devices reporting beside)")
        print(f"report_to_command_p99: {lat['p99_ms']} ms (goal < 100)")
        print(f"report_to_command_max: {lat['max_ms']} ms")
    from benchlib import print_results

    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
