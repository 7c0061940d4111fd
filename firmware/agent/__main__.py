"""`python -m firmware.agent enroll …`: the reference agent's command line."""

from __future__ import annotations

import argparse
import sys

from firmware.agent import port
from firmware.agent.core import enroll as core_enroll
from firmware.agent.core.framing import FrameError

EXIT_REFUSED = 2
EXIT_PIN = 3
EXIT_NETWORK = 4


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
    args = parser.parse_args(argv)

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
