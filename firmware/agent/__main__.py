"""`python -m firmware.agent enroll …`: the reference agent's command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from firmware.agent import port
from firmware.agent.core import enroll as core_enroll
from firmware.agent.core.framing import FrameError

EXIT_REFUSED = 2
EXIT_PIN = 3
EXIT_NETWORK = 4


def run_agent(state_dir: str, profile_name: str, report_s: float, options: dict[str, Any] | None = None) -> int:
    import signal
    import threading

    from firmware.agent.core.agent import Agent
    from firmware.agent.hardware import VirtualHardware
    from firmware.agent.profiles import ProfileError, load_profile

    try:
        profile = load_profile(profile_name)
    except ProfileError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        agent = Agent(
            port, state_dir, profile, VirtualHardware(profile), report_s=report_s, log=lambda *a: print(*a, file=sys.stderr, flush=True), **(options or {})
        )
    except (OSError, KeyError, ValueError) as exc:
        print(f"no usable identity in {state_dir} (enroll first): {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    agent.run(stop.is_set)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware.agent", description="meshhub reference device agent")
    sub = parser.add_subparsers(dest="command", required=True)
    enroll = sub.add_parser("enroll", help="join a hub with a one-time code")
    enroll.add_argument("--host", required=True)
    enroll.add_argument("--port", type=int, required=True)
    enroll.add_argument("--node-id", required=True)
    enroll.add_argument("--code", required=True)
    enroll.add_argument("--pin", default=None)
    enroll.add_argument("--fingerprint", required=True, help="the hub CA's sha256: fingerprint, as createenrollment prints it")
    enroll.add_argument("--state-dir", required=True)
    find = sub.add_parser("discover", help="find the hub on the LAN (UDP)")
    find.add_argument("--host", default="255.255.255.255", help="where to send the probe (default: broadcast)")
    find.add_argument("--port", type=int, default=8885)
    find.add_argument("--timeout", type=float, default=2.0)
    run = sub.add_parser("run", help="connect to the hub and report until stopped")
    run.add_argument("--state-dir", required=True)
    run.add_argument("--profile", default="thermostat", help="thermostat, relay, dimmer, door, meter, or a JSON file")
    run.add_argument("--report-s", type=float, default=5.0, help="seconds between state reports")
    run.add_argument("--clear-bootguard", action="store_true", help="leave safe mode (the seed's local button)")
    run.add_argument("--retry-delay-s", type=float, default=30.0, help="the boot guard's wait before the 2nd and 3rd retry")
    run.add_argument("--beacon-s", type=float, default=5.0, help="seconds between health beacons while a new image is on trial")
    run.add_argument("--boot-faults", type=int, default=0, help="make the next N boots fail (to try the boot guard)")
    args = parser.parse_args(argv)

    if args.command == "run":
        options = {"clear_bootguard": args.clear_bootguard, "retry_delay_s": args.retry_delay_s, "beacon_s": args.beacon_s, "boot_faults": args.boot_faults}
        return run_agent(args.state_dir, args.profile, args.report_s, options)
    if args.command == "discover":
        from firmware.agent.core.discovery import discover

        found = discover(port, args.host, args.port, args.timeout)
        if found is None:
            print("no hub answered", file=sys.stderr)
            return EXIT_NETWORK
        print(json.dumps(found))
        return 0

    if args.command == "enroll":
        try:
            body = core_enroll.enroll(port, args.host, args.port, args.node_id, args.code, args.pin, args.fingerprint, args.state_dir)
        except core_enroll.EnrollError as exc:
            print(f"enrollment refused: {exc.code}: {exc.reason}", file=sys.stderr)
            return EXIT_REFUSED
        except port.PinError as exc:
            print(f"refusing the hub: {exc}", file=sys.stderr)
            return EXIT_PIN
        except (OSError, FrameError) as exc:
            print(f"could not enroll with {args.host}:{args.port}: {exc}", file=sys.stderr)
            return EXIT_NETWORK
        print(f"enrolled as {args.node_id}; mesh {body['mesh_host']}:{body['mesh_port']}; identity in {args.state_dir}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
