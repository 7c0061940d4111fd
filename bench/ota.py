"""OTA benchmark: 100 devices updating at once, beside a raw TLS transfer of the same chunks.

    python bench/ota.py                              # 100 devices, images of 1 and 4 MiB (about 4 minutes)
    python bench/ota.py --devices 20 --sizes 1       # a short run
    python bench/ota.py --configs postgres           # PostgreSQL + Redis instead of the embedded default
    python bench/run.py --part ota                   # the same, through the bench runner

Figures (acceptance of the "Firmware updates that never brick" issue):

- aggregate transfer rate of the hub (MB/s, all devices together) beside a raw TLS
  transfer of the same 4 KiB chunks in the same run (goal >= 0.8x);
- the hub's RSS during the transfer (goal: flat, no growth with image size).

Method.

1. A fresh data dir (and, with `--configs postgres`, a recreated database `meshhub_otabench` and
   Redis DB 11); migrate; a superuser token with the `ota` scope; N enrollment tickets.
2. `manage.py runhub` (Daphne, the enrollment listener and the mesh gateway in one process;
   its Celery worker with beat as a child drives the rollouts every second). The RSS
   figures are of that one process, the one that streams chunks from storage.
3. N reference agents (`firmware.agent.core.agent.Agent`, one thread each in this process,
   as `python -m firmware.simulate` runs them) enroll through the real flow and connect.
4. Per image size: `make-image`, `ota sign`, `ota upload` (a healthy image of that size),
   then one rollout to every device (`waves ["100%"]`, `max_concurrent` N, one health
   beacon). The transfer time is from the first byte any device holds to the moment every
   device holds the whole image (polled every 50 ms from the agents' slots); the rollout
   time to `completed`. runhub's VmRSS is sampled every 100 ms: before the rollout, the
   maximum while the transfer runs, and after.
5. Raw TLS, same run, same machine: a bare asyncio TLS server (uvloop when installed, as
   the gateway uses; its own process, the same TLS 1.3 mutual authentication) streams the
   same image to N clients in 4 KiB chunks, at most `window` unacknowledged (the hub's,
   `ota.statemachine.DEFAULT_WINDOW`),
   each acknowledged by an 8-byte offset. Each client is a thread of this process, like
   the agents, and stores each chunk with the agent's own port functions (append + fsync
   into a slot file), then hashes the slot as the agent verifies. Only the protocol
   differs: no JSON, no base64, no frame envelope, no anti-replay, no database.

Prints `name: value unit` lines, a markdown table and `BENCH-RESULT {json}`;
docs/performance.md ("Firmware updates") records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from benchlib import LiveHub, cpu_seconds, manage, print_results, rss_kb  # noqa: E402

from firmware.agent import port as agent_port  # noqa: E402
from firmware.agent.core.agent import Agent  # noqa: E402
from firmware.agent.hardware import VirtualHardware  # noqa: E402
from firmware.agent.profiles import load_profile  # noqa: E402
from ota.statemachine import DEFAULT_CHUNK_SIZE as CHUNK  # noqa: E402  (pure: no Django)
from ota.statemachine import DEFAULT_WINDOW as WINDOW  # noqa: E402
from tests.process_helpers import free_ports  # noqa: E402

BENCH_DB = "meshhub_otabench"
BENCH_REDIS_DB = 11
MiB = 1024 * 1024


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class RssSampler:
    """VmRSS of one process every 100 ms, in a thread, with a mark per phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), rss_kb(self.pid)))
            self.stop.wait(0.1)

    def max_between(self, start: float, end: float) -> int:
        return max((kb for t, kb in self.samples if start <= t <= end), default=rss_kb(self.pid))


SETUP_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from audit.services import Actor
from devices import identity
from hub.models import ApiToken
user = get_user_model().objects.create_superuser("bench", password="bench-Pass-123")
_, token = ApiToken.issue(user, ["read-status", "ota"])
tickets = [identity.create_enrollment(Actor.system("bench"), f"ota-{i:03d}", device_type="thermostat", ttl_s=3600).as_dict() for i in range(COUNT)]
print(json.dumps({"token": token, "tickets": tickets}))
"""


# --- the hub -----------------------------------------------------------------------------------


def hub_run(args: argparse.Namespace, sizes: list[int], data_dir: Path) -> dict[str, Any]:
    live = LiveHub(
        data_dir,
        SETUP_SCRIPT.replace("COUNT", str(args.devices)),
        production=args.production,
        database=BENCH_DB,
        redis_db=BENCH_REDIS_DB,
        extra_env={"MESHHUB_ENROLL_ATTEMPTS_PER_MINUTE": str(max(10, args.devices * 2)), "MESHHUB_OTA_DRIVE_S": "1"},
        gateway=args.gateway,
        profile=args.profile,
    )
    env = live.env
    results: dict[str, Any] = {"sizes": {}}
    with live:
        gateway = live.gateway  # the process that holds the device sessions and streams the chunks
        sampler = RssSampler(gateway.pid)

        def thermostat(state_dir: str) -> Agent:
            profile = load_profile("thermostat")
            return Agent(agent_port, state_dir, profile, VirtualHardware(profile, seed=Path(state_dir).name), report_s=60.0, beacon_s=0.5, retry_delay_s=1.0)

        agents = live.enroll(live.prepared["tickets"], thermostat)
        time.sleep(2)  # the boot frames and first reports settle
        for n, size in enumerate(sizes):
            version = f"1.{n + 1}.0"
            image, manifest = data_dir / f"{version}.img", data_dir / f"{version}.json"
            subprocess.run([sys.executable, "-m", "firmware.simulate", "make-image", "--version", version, "--behaviour", "healthy", "--size", str(size), "--out", str(image)],
                           cwd=REPO_ROOT, check=True, capture_output=True)  # fmt: skip
            manage(env, "ota", "sign", "--image", str(image), "--version", version, "--device-type", "thermostat", "--out", str(manifest))
            release = json.loads(manage(env, "ota", "upload", "--manifest", str(manifest), "--image", str(image), "--json"))
            time.sleep(1)
            before = rss_kb(gateway.pid)
            status, created = live.api(
                "POST",
                "/api/v1/ota/rollouts/",
                {"release": release["id"], "targets": {"all": True}, "waves": ["100%"], "max_concurrent": args.devices, "health_beacons": 1, "deadline_s": 900},
            )
            if status != 201:
                raise SystemExit(f"rollout refused: {status} {created}")
            started = time.monotonic()
            log(f"rollout {created['id']}: {args.devices} devices x {size / MiB:g} MiB")
            cpu = (cpu_seconds(gateway.pid), time.process_time())
            first_byte, all_held = transfer_window(agents, size, version)
            hub_cpu, client_cpu = cpu_seconds(gateway.pid) - cpu[0], time.process_time() - cpu[1]
            state = wait_rollout(live, created["id"])
            done = time.monotonic()
            after = rss_kb(gateway.pid)
            peak = sampler.max_between(first_byte, all_held)
            seconds = all_held - first_byte
            figures = {
                "image_bytes": size,
                "transfer_s": round(seconds, 2),
                "aggregate_mb_s": round(args.devices * size / seconds / 1e6, 2),
                "hub_cpu_s": round(hub_cpu, 2),
                "clients_cpu_s": round(client_cpu, 2),
                "rollout_s": round(done - started, 2),
                "rollout_state": state["state"],
                "succeeded": state["counts"].get("succeeded", 0),
                "rss_before_mb": round(before / 1024, 1),
                "rss_max_during_mb": round(peak / 1024, 1),
                "rss_growth_mb": round((peak - before) / 1024, 1),
                "rss_after_mb": round(after / 1024, 1),
            }
            results["sizes"][str(size)] = figures
            log(f"  {figures}")
        sampler.stop.set()
    if args.profile and (data_dir / "runhub.pstats").exists():
        import io
        import pstats

        text = io.StringIO()
        stats = pstats.Stats(str(data_dir / "runhub.pstats"), stream=text)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)
        results["profile"] = text.getvalue()
    return results


def transfer_window(agents: list[Agent], size: int, version: str) -> tuple[float, float]:
    """(first byte held by any device, every device holding the whole image), from the
    agents' slots: a device that finished installs and reboots into `version`."""
    first: float | None = None
    deadline = time.monotonic() + 600
    while True:
        held = []
        for agent in agents:
            transfer = agent.fw.transfer
            if agent.fw.version == version or agent.fw.pending:
                held.append(size)
            elif transfer is not None:
                held.append(transfer.held())
            else:
                held.append(0)
        now = time.monotonic()
        if first is None and any(held):
            first = now
        if all(h >= size for h in held):
            assert first is not None
            return first, now
        if now > deadline:
            behind = [(a.node_id, h, a.fw.version, a.fw.slot, a.fw.pending, a.sessions) for a, h in zip(agents, held, strict=True) if h < size]
            raise SystemExit(f"the transfer did not finish in 10 minutes; behind: {behind[:10]}")
        time.sleep(0.05)


def wait_rollout(live: LiveHub, rollout_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status, body = live.api("GET", f"/api/v1/ota/rollouts/{rollout_id}/")
        if status == 200 and body["state"] not in ("running", "draft"):
            return dict(body)
        time.sleep(0.5)
    raise SystemExit(f"rollout {rollout_id} still running after 10 minutes")


# --- raw TLS -----------------------------------------------------------------------------------


def make_tls(directory: Path) -> None:
    """A CA, a server and a client certificate (P-256, as the hub's): mutual TLS as devices use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, serial in (("server", 2), ("client", 3)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(serial).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        )  # fmt: skip
        if name == "server":
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def raw_server(port: int, tls_dir: str, image: str) -> None:
    """The raw TLS peer (its own process): each connection gets the image in 4 KiB chunks,
    WINDOW ahead of the client's 8-byte acknowledgements, read from the file per chunk."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(f"{tls_dir}/server.pem", f"{tls_dir}/server.key")
    context.load_verify_locations(f"{tls_dir}/ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    size = os.path.getsize(image)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with open(image, "rb") as source:
            sent = acked = 0
            while acked < size:
                while sent < size and sent - acked < WINDOW * CHUNK:
                    source.seek(sent)
                    data = source.read(CHUNK)
                    writer.write(struct.pack(">I", len(data)) + data)
                    sent += len(data)
                await writer.drain()
                acked = struct.unpack(">Q", await reader.readexactly(8))[0]
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context, backlog=512)
        print("listening", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def raw_client(port: int, tls_dir: Path, state_dir: str, size: int, times: list[float]) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(str(tls_dir / "ca.pem"))
    context.load_cert_chain(str(tls_dir / "client.pem"), str(tls_dir / "client.key"))
    os.makedirs(state_dir, exist_ok=True)
    agent_port.slot_truncate(state_dir, "b", 0)
    import socket

    with context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost") as sock:
        stream = sock.makefile("rb")
        held = 0
        while held < size:
            length = struct.unpack(">I", stream.read(4))[0]
            data = stream.read(length)
            if held == 0:
                times.append(time.monotonic())
            agent_port.slot_append(state_dir, "b", data)  # the agent's own storage call: append + fsync
            held += len(data)
            sock.sendall(struct.pack(">Q", held))
    digest = agent_port.slot_sha256(state_dir, "b")  # as the agent verifies the slot
    times.append(time.monotonic())
    return digest


def raw_run(devices: int, sizes: list[int], data_dir: Path) -> dict[str, Any]:
    tls_dir = data_dir / "raw-tls"
    tls_dir.mkdir()
    make_tls(tls_dir)
    results: dict[str, Any] = {}
    for size in sizes:
        image = data_dir / f"raw-{size}.img"
        image.write_bytes(os.urandom(size))
        expected = hashlib.sha256(image.read_bytes()).hexdigest()
        (port,) = free_ports(1)
        server = subprocess.Popen(
            [sys.executable, __file__, "--raw-server", str(port), str(tls_dir), str(image)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "listening"
            times: list[list[float]] = [[] for _ in range(devices)]
            digests: list[str] = [""] * devices

            def one(i: int, size: int, port: int, times: list[list[float]], digests: list[str]) -> None:
                digests[i] = raw_client(port, tls_dir, str(data_dir / "raw" / f"d{i:03d}"), size, times[i])

            threads = [threading.Thread(target=one, args=(i, size, port, times, digests), daemon=True) for i in range(devices)]
            cpu = (cpu_seconds(server.pid), time.process_time())
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(1800)
            server_cpu, client_cpu = cpu_seconds(server.pid) - cpu[0], time.process_time() - cpu[1]
            if any(d != expected for d in digests):
                raise SystemExit("a raw client's slot does not hash to the image")
            first = min(t[0] for t in times)
            last = max(t[1] for t in times)
            results[str(size)] = {
                "transfer_s": round(last - first, 2),
                "aggregate_mb_s": round(devices * size / (last - first) / 1e6, 2),
                "server_cpu_s": round(server_cpu, 2),
                "clients_cpu_s": round(client_cpu, 2),
            }
            log(f"raw TLS {devices} x {size / MiB:g} MiB: {results[str(size)]}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
        shutil.rmtree(data_dir / "raw", ignore_errors=True)
    return results


# --- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--raw-server"]:
        raw_server(int(argv[1]), argv[2], argv[3])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--sizes", default="1,4", help="image sizes in MiB, comma-separated (each its own rollout)")
    parser.add_argument(
        "--configs", choices=["sqlite", "postgres"], default="sqlite", help="postgres: PostgreSQL + Redis (a recreated meshhub_otabench, Redis DB 11)"
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--profile", action="store_true", help="run runhub under cProfile and print its top functions (the figures carry its overhead)")
    parser.add_argument(
        "--gateway",
        choices=["runhub", "runmesh"],
        default="runhub",
        help="runmesh: the devices connect to a gateway process of its own (uvloop), as when scaled out",
    )
    parser.add_argument("--no-raw", action="store_true", help="skip the raw TLS transfer (when profiling)")
    args = parser.parse_args(argv)
    args.production = args.configs == "postgres"
    sizes = [int(float(s) * MiB) for s in args.sizes.split(",")]
    data_dir = Path(tempfile.mkdtemp(prefix="meshhub-otabench-"))
    log(f"data dir {data_dir}")
    raw = {str(size): {"transfer_s": 0, "aggregate_mb_s": 0} for size in sizes} if args.no_raw else raw_run(args.devices, sizes, data_dir)
    hub = hub_run(args, sizes, data_dir)
    if hub.get("profile"):
        print(hub["profile"])
    results = {"devices": args.devices, "mode": "production" if args.production else "embedded", "raw": raw, "hub": hub["sizes"]}
    for size in sizes:
        key = str(size)
        h, r = results["hub"][key], raw[key]
        h["ratio_to_raw"] = round(h["aggregate_mb_s"] / r["aggregate_mb_s"], 2) if r["aggregate_mb_s"] else None
        label = f"{size / MiB:g}MiB"
        print(f"raw_tls_{label}_aggregate: {r['aggregate_mb_s']} MB/s")
        print(f"hub_{label}_aggregate: {h['aggregate_mb_s']} MB/s")
        print(f"hub_{label}_ratio_to_raw: {h['ratio_to_raw']} x (goal >= 0.8)")
        print(f"hub_{label}_rss_before: {h['rss_before_mb']} MB")
        print(f"hub_{label}_rss_max_during_transfer: {h['rss_max_during_mb']} MB")
        print(f"hub_{label}_rollout: {h['rollout_s']} s ({h['succeeded']} of {args.devices} succeeded, {h['rollout_state']})")
    print()
    print("| image | raw TLS MB/s | hub MB/s | ratio | hub RSS before / max during / after (MB) | rollout |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        h, r = results["hub"][str(size)], raw[str(size)]
        print(
            f"| {size / MiB:g} MiB | {r['aggregate_mb_s']} | {h['aggregate_mb_s']} | {h['ratio_to_raw']}x | "
            f"{h['rss_before_mb']} / {h['rss_max_during_mb']} / {h['rss_after_mb']} | {h['rollout_s']} s, {h['succeeded']}/{args.devices} |"
        )
    print_results(results, args.json)
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
