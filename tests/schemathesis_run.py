"""Fuzz the REST API from its own OpenAPI schema: no input may produce a 5xx.

Run by `make schemathesis` (part of `make test`): for each deployment mode it starts a
throwaway hub (own data dir; for PostgreSQL its own database), seeds a small fleet and an
all-scope token, and runs the schemathesis CLI against /api/schema/ with bounded examples
and a fixed seed. Exits non-zero if any run finds a server error.

    python tests/schemathesis_run.py [embedded|production ...]
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DB = "meshhub_schemathesis"
REDIS_URL = "redis://127.0.0.1:6379/14"
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30")

SEED = """
from django.contrib.auth import get_user_model
from tests.factories import GroupFactory, dimmer, relay, thermostat
get_user_model().objects.create_superuser("root", password=None)
group = GroupFactory(name="lights")
group.members.add(relay("relay-1"), dimmer("dimmer-1"))
thermostat("sensor-1", reported={"temperature": 20.5})
"""


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reset_postgres_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PG_DB}"')


def wait_healthy(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"hub exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("hub did not become healthy in time")


def run_mode(mode: str, log: Any) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["MESHHUB_DATA_DIR"] = tempfile.mkdtemp(prefix=f"meshhub-st-{mode}-")
    env["MESHHUB_LOG_LEVEL"] = "ERROR"
    if mode == "production":
        reset_postgres_database()
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
        env["REDIS_URL"] = REDIS_URL
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "shell", "-c", SEED)
    token = json.loads(manage(env, "createapitoken", "--user", "root", "--scopes", "read-status,command,reset,ota,admin", "--json"))["token"]

    port = free_port()
    argv = [
        sys.executable,
        "manage.py",
        "runhub",
        "--no-worker",
        "--port",
        str(port),
        "--device-host",
        "127.0.0.1",
        "--enroll-port",
        str(free_port()),
        "--mesh-port",
        str(free_port()),
        "--discovery-port",
        "0",
    ]
    hub = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_healthy(port, hub)
        print(f"=== schemathesis ({mode}) against http://127.0.0.1:{port}/api/schema/ ===", file=log, flush=True)
        st = Path(sys.executable).parent / "st"
        return subprocess.run(
            [
                str(st), "run", f"http://127.0.0.1:{port}/api/schema/",
                "--header", f"Authorization: Token {token}",
                "--checks", "not_a_server_error",
                "--max-examples", MAX_EXAMPLES,
                "--seed", "20261125",
                "--phases", "examples,coverage,fuzzing",
                "--workers", "1",
                "--generation-database", "none",
                "--request-timeout", "20",
                "--no-color",
            ],
            cwd=env["MESHHUB_DATA_DIR"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode  # fmt: skip
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hub.kill()


def run_mode_logged(mode: str) -> tuple[int, str]:
    with tempfile.TemporaryFile("w+") as log:
        try:
            code = run_mode(mode, log)
        except SystemExit as stop:  # a setup step failed: say so with the mode's output
            print(stop, file=log)
            code = 1
        log.seek(0)
        return code, log.read()


def main() -> int:
    """Both modes at once (each its own hub, data dir, database and Redis DB; two cores
    halve the suite's longest step), then each mode's output in turn."""
    modes = sys.argv[1:] or ["embedded", "production"]
    with ThreadPoolExecutor(max_workers=len(modes)) as pool:
        results = dict(zip(modes, pool.map(run_mode_logged, modes), strict=True))
    for mode in modes:
        print(results[mode][1], end="", flush=True)
    failed = [mode for mode in modes if results[mode][0] != 0]
    if failed:
        print(f"schemathesis found server errors in: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
