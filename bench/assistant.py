"""Assistant benchmark: local intent matching with 10,000 devices in the registry, and the MCP
tool-call round trip through a running hub.

    python bench/assistant.py                        # embedded (SQLite), about a minute
    python bench/assistant.py --configs postgres     # PostgreSQL + Redis

Figures (acceptance of the "Talk to the fleet" issue; goal: local intent matching p99 < 50 ms):

1. local intents: 10,000 devices (thermostats, relays and dimmers with names such as "kitchen
   relay 0042" and an alias each), 50 groups, 20 scenes, in a fresh database. The name index is
   loaded once (its load time is printed), then 2,000 sentences drawn from twelve templates
   (switching, setting with units and percentages, reading, a typo in the name, an ambiguous
   name, which devices are offline), each through `assistant.service.ask` as an operator:
   hassil matching, the name index's resolution, the value parsing and, for sentences that
   act, `send_command()` with its six levels and the audit event. p50/p99/max per kind and
   overall, and the matching alone (`assistant.local.recognize` + `names.index.resolve`).
2. MCP: `manage.py runhub` (Daphne) with 200 devices, the official MCP client over HTTP with
   an API token; 300 `tools/call` each of `get_device` and `list_devices` (limit 50) in one
   client session, and 100 `tools/list`; p50/p99 per call.

Prints `name: value unit` lines and `BENCH-RESULT {json}`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from benchlib import LiveHub, log, percentile, print_results  # noqa: E402

BENCH_DB = "meshhub_assistantbench"
MCP_DB, MCP_REDIS_DB = "meshhub_mcpbench", 8
ROOMS = ["kitchen", "hall", "office", "garage", "greenhouse", "attic", "cellar", "lab", "bedroom", "bath", "porch", "shed"]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2), "max_ms": round(max(values), 2)}


def seed(devices: int) -> list[tuple[str, str, str]]:
    """(node_id, name, kind) of `devices` devices with capabilities, groups and scenes."""
    from audit.services import Actor
    from automation import scenes
    from devices.models import Capability, CapabilityKind, Device, DeviceStatus, Group, ValueType

    kinds = ["thermostat", "relay", "dimmer"]
    rows = []
    for n in range(devices):
        kind = kinds[n % 3]
        room = ROOMS[n % len(ROOMS)]
        rows.append((f"{kind}-{n:05d}", f"{room} {kind} {n:04d}", kind))
    Device.objects.bulk_create(
        [Device(node_id=node, name=name, aliases=[f"{name.split()[0]} {kind[:4]} {i}"], device_type=kind, status=DeviceStatus.PROVISIONED, online=i % 10 != 0,
                reported={"temperature": 21.5} if kind == "thermostat" else {"on": False} if kind == "relay" else {"level": 10})
         for i, (node, name, kind) in enumerate(rows)],
        batch_size=2000,
    )  # fmt: skip
    ids = dict(Device.objects.values_list("node_id", "pk"))
    caps = []
    for node, _, kind in rows:
        d = ids[node]
        if kind == "thermostat":
            caps += [
                Capability(device_id=d, name="temperature", kind=CapabilityKind.SENSOR, value_type=ValueType.FLOAT, unit="°C"),
                Capability(
                    device_id=d, name="setpoint", kind=CapabilityKind.ACTUATOR, value_type=ValueType.FLOAT, unit="°C", min_value=5, max_value=35, writable=True
                ),
            ]
        elif kind == "relay":
            caps.append(Capability(device_id=d, name="on", kind=CapabilityKind.ACTUATOR, value_type=ValueType.BOOL, writable=True))
        else:
            caps.append(
                Capability(device_id=d, name="level", kind=CapabilityKind.ACTUATOR, value_type=ValueType.INT, min_value=0, max_value=100, writable=True)
            )
    Capability.objects.bulk_create(caps, batch_size=5000)
    for g in range(50):
        group = Group.objects.create(name=f"zone {g}")
        group.members.add(*[ids[node] for node, _, kind in rows[g * 6 : g * 6 + 6] if kind == "relay"])
    for s in range(20):
        scenes.create(Actor.system("bench"), {"name": f"scene {s}", "members": [{"device": rows[s * 3 + 1][0], "capability": "on", "value": True}]})
    return rows


def sentences(rows: list[tuple[str, str, str]], count: int, rng: random.Random) -> list[tuple[str, str]]:
    by_kind: dict[str, list[str]] = {}
    for _, name, kind in rows:
        by_kind.setdefault(kind, []).append(name)

    def typo(name: str) -> str:
        i = rng.randrange(1, len(name) - 1)
        return name[:i] + name[i + 1 :] if name[i] != " " else name

    templates = [
        ("switch", lambda: f"turn on the {rng.choice(by_kind['relay'])}"),
        ("switch", lambda: f"switch the {rng.choice(by_kind['relay'])} off"),
        ("switch", lambda: f"toggle {rng.choice(by_kind['relay'])}"),
        ("set", lambda: f"set the {rng.choice(by_kind['thermostat'])} to {rng.randint(16, 25)} degrees"),
        ("set", lambda: f"dim the {rng.choice(by_kind['dimmer'])} to {rng.randint(0, 100)}%"),
        ("read", lambda: f"what is the temperature of the {rng.choice(by_kind['thermostat'])}"),
        ("read", lambda: f"is the {rng.choice(by_kind['relay'])} on"),
        ("typo", lambda: f"turn off the {typo(rng.choice(by_kind['relay']))}"),
        ("ambiguous", lambda: f"turn on the {rng.choice(ROOMS)} relay"),
        ("offline", lambda: "which devices are offline"),
        ("scene", lambda: f"activate scene scene {rng.randrange(20)}"),
        ("group", lambda: f"turn off zone {rng.randrange(50)}"),
    ]
    return [(kind, make()) for kind, make in (rng.choice(templates) for _ in range(count))]


def local_run(devices: int, count: int) -> dict[str, Any]:
    from assistant import local, names, service
    from audit.models import ActorType
    from audit.services import Actor

    started = time.perf_counter()
    rows = seed(devices)
    log(f"seeded {devices} devices in {time.perf_counter() - started:.1f} s")
    t0 = time.perf_counter()
    names.index.refresh()
    load_ms = (time.perf_counter() - t0) * 1000
    actor = Actor(ActorType.USER, "bench", frozenset({"read-status", "command"}))
    rng = random.Random(7)
    work = sentences(rows, count, rng)
    for _, text in work[:20]:  # warm up: hassil's compiled templates, the vocabulary query
        service.ask(actor, text)
    per_kind: dict[str, list[float]] = {}
    everything: list[float] = []
    matching: list[float] = []
    statuses: dict[int, int] = {}
    for kind, text in work:
        t = time.perf_counter()
        code, _ = service.ask(actor, text)
        elapsed = (time.perf_counter() - t) * 1000
        statuses[code] = statuses.get(code, 0) + 1
        per_kind.setdefault(kind, []).append(elapsed)
        everything.append(elapsed)
        t = time.perf_counter()
        try:
            _, slots, _ = local.recognize(text)
            if "name" in slots:
                names.index.resolve(slots["name"])
        except local.NotUnderstood:
            pass
        matching.append((time.perf_counter() - t) * 1000)
    return {
        "devices": devices,
        "index_load_ms": round(load_ms, 1),
        "sentences": len(work),
        "statuses": statuses,
        "ask": summary(everything),
        "matching_only": summary(matching),
        "by_kind": {kind: summary(values) for kind, values in sorted(per_kind.items())},
    }


MCP_SETUP = """
import json
from django.contrib.auth import get_user_model
from devices.models import Device, Capability, CapabilityKind, DeviceStatus, ValueType
from hub.models import ApiToken
user = get_user_model().objects.create_user("bench", password="bench-Pass-123")
_, token = ApiToken.issue(user, ["read-status", "command"])
Device.objects.bulk_create([Device(node_id=f"relay-{i:04d}", name=f"relay {i}", device_type="relay", status=DeviceStatus.PROVISIONED) for i in range(200)])
Capability.objects.bulk_create([Capability(device=d, name="on", kind=CapabilityKind.ACTUATOR, value_type=ValueType.BOOL, writable=True) for d in Device.objects.all()])
print(json.dumps({"token": token, "tickets": []}))
"""


def mcp_run(production: bool, calls: int) -> dict[str, Any]:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    data_dir = Path(tempfile.mkdtemp(prefix="meshhub-mcpbench-"))
    with LiveHub(data_dir, MCP_SETUP, production=production, database=MCP_DB, redis_db=MCP_REDIS_DB) as hub:

        async def measure() -> dict[str, Any]:
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {hub.prepared['token']}"})
            async with Client(streamable_http_client(hub.base + "/mcp/", http_client=http)) as client:
                times: dict[str, list[float]] = {"tools/list": [], "get_device": [], "list_devices": []}
                for _ in range(5):  # warm up
                    await client.call_tool("get_device", {"node_id": "relay-0000"})
                for i in range(calls):
                    t = time.perf_counter()
                    result = await client.call_tool("get_device", {"node_id": f"relay-{i % 200:04d}"})
                    times["get_device"].append((time.perf_counter() - t) * 1000)
                    assert not result.is_error, result
                    t = time.perf_counter()
                    await client.call_tool("list_devices", {"limit": 50})
                    times["list_devices"].append((time.perf_counter() - t) * 1000)
                    if i % 3 == 0:
                        t = time.perf_counter()
                        await client.list_tools()
                        times["tools/list"].append((time.perf_counter() - t) * 1000)
                return {name: summary(values) for name, values in times.items()}

        return asyncio.run(measure())


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--mcp-calls", type=int, default=300)
    parser.add_argument("--configs", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    production = args.configs == "postgres"
    os.environ["MESHHUB_DATA_DIR"] = tempfile.mkdtemp(prefix="meshhub-assistantbench-")
    if production:
        from benchlib import bench_database

        os.environ["DATABASE_URL"] = bench_database(BENCH_DB)
    else:
        os.environ.pop("DATABASE_URL", None)
    saved_redis = os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
    import django

    django.setup()
    import logging

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per MCP request otherwise
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results: dict[str, Any] = {"config": args.configs}
    results["local"] = local_run(args.devices, args.sentences)
    lo = results["local"]
    print(f"name_index_load_{args.devices}_devices: {lo['index_load_ms']} ms (once per rename)")
    print(f"local_ask_p50: {lo['ask']['p50_ms']} ms ({lo['sentences']} sentences, {args.devices} devices; statuses {lo['statuses']})")
    print(f"local_ask_p99: {lo['ask']['p99_ms']} ms (goal < 50)")
    print(f"local_matching_only_p50/p99: {lo['matching_only']['p50_ms']} / {lo['matching_only']['p99_ms']} ms")
    for kind, figures in lo["by_kind"].items():
        print(f"local_ask_{kind}_p50/p99: {figures['p50_ms']} / {figures['p99_ms']} ms")
    if saved_redis is not None:
        os.environ["REDIS_URL"] = saved_redis
    results["mcp"] = mcp_run(production, args.mcp_calls)
    for name, figures in results["mcp"].items():
        print(f"mcp_{name.replace('/', '_')}_p50/p99: {figures['p50_ms']} / {figures['p99_ms']} ms ({figures['n']} calls)")
    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
