"""What every bench script shares: the import path and Django settings its workers need,
progress on stderr (stdout carries the report), and the one percentile definition all
figures use, and the /proc readings and `manage.py` runs of the scripts that start hub
processes. Importing it sets up the path (bench/ is the script directory, first on
sys.path, so `from benchlib import …` works before anything else)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (REPO_ROOT, BENCH_DIR):  # BENCH_DIR ends up first, as the scripts always had it
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_results(results: dict[str, Any], json_path: str | None) -> None:
    """The `BENCH-RESULT {json}` line bench/run.py reads, and the same figures to `--json`."""
    print("BENCH-RESULT " + json.dumps(results))
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank: the smallest sample with at least pct % of the samples at or below it."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def rss_kb(pid: int) -> int:
    """VmRSS of one process, in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def manage(env: dict[str, str], *args: str) -> str:
    """`manage.py ARGS` with `env`; its stdout, or the run stops with its output."""
    done = subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def recreate_postgres_database(url: str) -> None:
    """Drop and create the benchmark database, connecting to the `postgres` maintenance DB."""
    from urllib.parse import urlsplit, urlunsplit

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


def bench_database(name: str) -> str:
    """A recreated PostgreSQL database of that name on this machine; its URL."""
    url = f"postgres://postgres@127.0.0.1:5432/{name}"
    recreate_postgres_database(url)
    return url


def wait(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def api(base: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One REST call with a token: (status, JSON body)."""
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class LiveHub:
    """A hub as an operator runs it, for the scripts that measure through the real gateway:
    a fresh data dir (and, in production mode, a recreated PostgreSQL database and a flushed
    Redis DB), `migrate`, a setup script run by `manage.py shell` (its last line of output,
    JSON, is `prepared`), `manage.py runhub` (and optionally the gateway as its own `runmesh`
    process), then reference agents enrolled through the real flow, one thread each.

        with LiveHub(data_dir, setup, production=False) as hub:
            agents = hub.enroll(hub.prepared["tickets"], lambda state_dir: Agent(...))
    """

    def __init__(
        self,
        data_dir: Path,
        setup_script: str,
        *,
        production: bool = False,
        database: str = "meshhub_bench",
        redis_db: int = 10,
        extra_env: dict[str, str] | None = None,
        gateway: str = "runhub",
        profile: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.profile = profile
        self.env = dict(os.environ)
        self.env.update({"PYTHONUNBUFFERED": "1", "MESHHUB_DATA_DIR": str(data_dir), "MESHHUB_PUBLIC_HOST": "127.0.0.1", "MESHHUB_LOG_LEVEL": "WARNING"})
        self.env.update(extra_env or {})
        if production:
            import redis

            self.env["DATABASE_URL"] = bench_database(database)
            redis.Redis(port=6379, db=redis_db).flushdb()
            self.env["REDIS_URL"] = f"redis://127.0.0.1:6379/{redis_db}"
        else:
            self.env.pop("DATABASE_URL", None)
            self.env.pop("REDIS_URL", None)
        self.setup_script = setup_script
        self.gateway_kind = gateway
        self.prepared: dict[str, Any] = {}
        self.stop_fleet = threading.Event()
        self.threads: list[threading.Thread] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LiveHub:
        from tests.process_helpers import free_ports

        log("migrating")
        manage(self.env, "migrate", "--no-input", "-v", "0")
        self.prepared = json.loads(manage(self.env, "shell", "-c", self.setup_script).strip().splitlines()[-1])
        http_port, self.enroll_port, self.mesh_port = free_ports(3)
        profile = ["-m", "cProfile", "-o", str(self.data_dir / "runhub.pstats")] if self.profile else []
        self.hub = subprocess.Popen(
            [sys.executable, *profile, str(REPO_ROOT / "manage.py"), "runhub", "--host", "127.0.0.1", "--port", str(http_port), "--device-host", "127.0.0.1",
             "--enroll-port", str(self.enroll_port), "--mesh-port", str(self.mesh_port), "--discovery-port", "0", "--concurrency", "1"],
            env=self.env, stdout=open(self.data_dir / "runhub.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(self.hub)
        self.base = f"http://127.0.0.1:{http_port}"
        self.gateway = self.hub  # the process that holds the device sessions
        try:
            if self.gateway_kind == "runmesh":
                # The scale-out layout: the devices' gateway as its own process (uvloop).
                self.enroll_port, self.mesh_port = free_ports(2)
                self.gateway = subprocess.Popen(
                    [sys.executable, str(REPO_ROOT / "manage.py"), "runmesh", "--host", "127.0.0.1", "--enroll-port", str(self.enroll_port),
                     "--mesh-port", str(self.mesh_port), "--discovery-port", "0"],
                    env=self.env, stdout=open(self.data_dir / "runmesh.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
                self.processes.append(self.gateway)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib.request.urlopen(self.base + "/healthz", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                if self.hub.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"runhub did not come up; log in {self.data_dir}/runhub.log")
                time.sleep(0.5)
            wait(lambda: listening(self.mesh_port) and listening(self.enroll_port), 60, "the gateway's listeners")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def enroll(self, tickets: list[dict[str, Any]], make_agent: Callable[[str], Any]) -> list[Any]:
        """Enroll each ticket's device through the real flow, point it at the gateway, build
        its agent with `make_agent(state_dir)`, run each in a thread and wait for sessions."""
        from firmware.agent import port as agent_port
        from firmware.agent.core import enroll as core_enroll

        log(f"enrolling {len(tickets)} devices")
        agents = []
        for ticket in tickets:
            state_dir = self.data_dir / "fleet" / ticket["node_id"]
            state_dir.mkdir(parents=True)
            core_enroll.enroll(agent_port, "127.0.0.1", self.enroll_port, ticket["node_id"], ticket["code"], None, ticket["ca_fingerprint"], str(state_dir))
            hub_json = json.loads((state_dir / "hub.json").read_text())
            hub_json.update({"mesh_host": "127.0.0.1", "mesh_port": self.mesh_port})
            (state_dir / "hub.json").write_text(json.dumps(hub_json))
            agents.append(make_agent(str(state_dir)))
        threads = [threading.Thread(target=a.run, args=(self.stop_fleet.is_set,), name=a.node_id, daemon=True) for a in agents]
        for thread in threads:
            thread.start()
        self.threads += threads
        wait(lambda: all(a.sessions >= 1 for a in agents), 120, "every agent in session")
        return agents

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return api(self.base, self.prepared["token"], method, path, body)

    def __exit__(self, *exc: object) -> None:
        self.stop_fleet.set()
        for thread in self.threads:
            thread.join(15)
        for process in reversed(self.processes):  # the gateway first, then runhub
            process.send_signal(signal.SIGINT if (self.profile and process is self.hub) else signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
