"""`python -m firmware.simulate`: a fleet of reference agents in one process.

Each simulated device is a real agent with its own state directory and its own TLS
connection. Devices without an identity enroll through the real flow first, with codes
from `manage.py createenrollment --json` (a JSON list in `--enrollments FILE`), so the
hub cannot tell them from hardware. No Django here.

    python -m firmware.simulate --devices 10 --enrollments codes.json --state-root ./fleet
    python -m firmware.simulate make-image --version 1.2.0 --behaviour healthy --size 65536 --out fw.img
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
from typing import Any

from firmware.agent import port
from firmware.agent.core import enroll as core_enroll
from firmware.agent.core import image as core_image
from firmware.agent.core.agent import Agent
from firmware.agent.core.framing import FrameError
from firmware.agent.hardware import VirtualHardware
from firmware.agent.profiles import PROFILES, load_profile

PROFILE_CYCLE = ["thermostat", "relay", "dimmer", "door", "meter"]


def profile_for(index: int, device_type: str | None) -> str:
    return device_type if device_type in PROFILES else PROFILE_CYCLE[index % len(PROFILE_CYCLE)]


PROFILE_FILE = "simulated_profile"  # beside the identity: what this simulated device is


def chosen_profile(state_dir: str, index: int, ticket: dict[str, Any] | None, forced: str | None) -> str:
    """The profile a simulated device runs: --profile, else the one it ran before (a
    restarted fleet lists its devices by name, so a position-based guess turned
    demo-dimmer-1 into a thermostat and the hub replaced its capabilities), else its
    enrollment's device type, else the next one in turn. Remembered for the next start."""
    path = os.path.join(state_dir, PROFILE_FILE)
    if forced:
        return forced
    try:
        with open(path) as handle:
            remembered = handle.read().strip()
    except OSError:
        remembered = ""
    if remembered in PROFILES:
        return remembered
    name = profile_for(index, (ticket or {}).get("device_type"))
    with open(path, "w") as handle:
        handle.write(name + "\n")
    return name


def has_identity(state_dir: str) -> bool:
    return all(os.path.exists(os.path.join(state_dir, name)) for name in ("key.pem", "cert.pem", "ca.pem", "hub.json"))


def enroll_with_retry(ticket: dict[str, Any], state_dir: str, stop: threading.Event, host: str | None, enroll_port: int | None) -> bool:
    """Enroll, waiting for the hub to come up; a refusal from the hub is final."""
    delay = 0.5
    while not stop.is_set():
        try:
            core_enroll.enroll(
                port,
                host or ticket["enroll_host"],
                enroll_port or ticket["enroll_port"],
                ticket["node_id"],
                ticket["code"],
                ticket.get("pin"),
                ticket["ca_fingerprint"],
                state_dir,
            )
            return True
        except core_enroll.EnrollError as exc:
            print(f"{ticket['node_id']}: enrollment refused: {exc.code}: {exc.reason}", file=sys.stderr, flush=True)
            return False
        except (OSError, FrameError):
            stop.wait(delay)
            delay = min(delay * 2, 5.0)
    return False


def run_device(index: int, state_dir: str, ticket: dict[str, Any] | None, args: argparse.Namespace, stop: threading.Event, agents: list[Agent]) -> None:
    if not has_identity(state_dir):
        if ticket is None:
            print(f"{state_dir}: no identity and no enrollment code for it", file=sys.stderr, flush=True)
            return
        if not enroll_with_retry(ticket, state_dir, stop, args.enroll_host, args.enroll_port):
            return
    profile = load_profile(chosen_profile(state_dir, index, ticket, args.profile))
    agent = Agent(port, state_dir, profile, VirtualHardware(profile, seed=index), report_s=args.report_s)
    agents.append(agent)
    agent.run(stop.is_set)


def make_image(argv: list[str]) -> int:
    """`make-image`: a simulated firmware image (firmware/agent/core/image.py) of exactly
    --size bytes. The padding is pseudo-random from the version and behaviour, so two
    images differ in hash even at one size, and is written in pieces (any size, flat memory)."""
    parser = argparse.ArgumentParser(prog="python -m firmware.simulate make-image", description="write a simulated firmware image")
    parser.add_argument("--version", required=True)
    parser.add_argument("--behaviour", required=True, choices=core_image.BEHAVIOURS)
    parser.add_argument("--size", type=int, required=True, help="total bytes, header included")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        header = core_image.header_line(args.version, args.behaviour)
    except core_image.ImageError as exc:
        parser.error(str(exc))
    if args.size < len(header):
        parser.error(f"--size must be at least {len(header)} bytes (the header)")
    rng = random.Random(f"{args.version}/{args.behaviour}/{args.size}")
    left = args.size - len(header)
    with open(args.out, "wb") as out:
        out.write(header)
        while left:
            piece = min(left, 1 << 16)
            out.write(rng.randbytes(piece))
            left -= piece
    print(f"wrote {args.out}: {args.size:,} bytes, version {args.version}, behaviour {args.behaviour}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["make-image"]:
        return make_image(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m firmware.simulate", description="run a fleet of simulated meshhub devices (or: make-image --help)")
    parser.add_argument("--devices", type=int, required=True, help="how many devices")
    parser.add_argument("--state-root", default="./fleet", help="one state directory per device under here")
    parser.add_argument("--enrollments", help="JSON list of createenrollment --json objects, for devices not enrolled yet")
    parser.add_argument("--enroll-host", help="override the enrollment host the codes name")
    parser.add_argument("--enroll-port", type=int, help="override the enrollment port the codes name")
    parser.add_argument("--profile", help="one profile for all (default: thermostat, relay, dimmer, door, meter in turn)")
    parser.add_argument("--report-s", type=float, default=5.0)
    args = parser.parse_args(argv)

    tickets: list[dict[str, Any]] = []
    if args.enrollments:
        with open(args.enrollments) as handle:
            tickets = json.load(handle)
    by_node = {t["node_id"]: t for t in tickets}
    os.makedirs(args.state_root, mode=0o700, exist_ok=True)
    existing = sorted(d for d in os.listdir(args.state_root) if has_identity(os.path.join(args.state_root, d)))
    names = (existing + [t["node_id"] for t in tickets if t["node_id"] not in existing])[: args.devices]
    if len(names) < args.devices:
        print(f"only {len(names)} devices have an identity or a code; give more codes with --enrollments", file=sys.stderr)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agents: list[Agent] = []
    threads = [
        threading.Thread(target=run_device, args=(i, os.path.join(args.state_root, name), by_node.get(name), args, stop, agents), name=name, daemon=True)
        for i, name in enumerate(names)
    ]
    for thread in threads:
        thread.start()
    print(f"simulating {len(threads)} devices from {args.state_root}", flush=True)
    while not stop.is_set():
        stop.wait(30)
        if agents:
            online = sum(1 for a in agents if a.token)
            print(f"fleet: {online}/{len(threads)} in session, {sum(a.acked_reports for a in agents)} reports acknowledged", flush=True)
    for thread in threads:
        thread.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
