"""Certificates issued per second from CSRs: pure signing, CRL builds, and the enrollment service.

Run by `bench/run.py`, in one of two modes, each in its own process:

- `--mode pure`: no database, no Django. `devices.pki.parse_csr` + `sign_device_csr` on
  pre-generated P-256 CSRs (CN = node id), CSR signature verification alone, and
  `devices.pki.build_crl` with many revoked entries.
- `--mode service`: one database, picked by the environment as in `bench/commands_audit.py`
  (DATABASE_URL set or not, MESHHUB_DATA_DIR). `devices.identity.create_enrollment()` for N
  devices (untimed), then `complete_enrollment()` for each (timed); an audit writer on
  another thread while a few enrollments run (how long other writers wait); then the CRL
  rebuilt from the database (`refresh_crls()`) with many revoked rows, and
  `revoke_certificate()` of the enrolled certificates on top of them.

Progress goes to stderr; the results are one line on stdout starting with RESULT_MARKER,
followed by JSON.

    python bench/pki_issue.py --mode pure
    MESHHUB_DATA_DIR=$(mktemp -d) python bench/pki_issue.py --mode service            # SQLite
    DATABASE_URL=postgres://... MESHHUB_DATA_DIR=$(mktemp -d) python bench/pki_issue.py --mode service
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import log  # bench/ is the script directory, first on sys.path; it also sets up the import path

RESULT_MARKER = "BENCH-RESULT "
PURE_WARMUP = 100
SERVICE_WARMUP = 2
STALL_ENROLLMENTS = 5
STALL_PAUSE_S = 0.005
CRL_REPEATS = 5


def rate(latencies: list[float], elapsed: float) -> dict[str, float]:
    """Rate over the wall time plus per-call p50 and max, in milliseconds."""
    n = len(latencies)
    return {
        "n": n,
        "seconds": elapsed,
        "per_s": n / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "max_ms": max(latencies) * 1000,
    }


def timed_each(items: list[Any], call: Callable[[Any], object], latencies: list[float] | None = None) -> dict[str, float]:
    """One timed call per item; `latencies` (if given) collects every call's duration too."""
    mine: list[float] = []
    start = time.perf_counter()
    for item in items:
        t0 = time.perf_counter()
        call(item)
        mine.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    if latencies is not None:
        latencies.extend(mine)
    return rate(mine, elapsed)


def make_csrs(node_ids: list[str]) -> list[str]:
    """One fresh P-256 key and CSR (CN = node id) per node, as a device makes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pems = []
    for node_id in node_ids:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])).sign(key, hashes.SHA256())
        pems.append(csr.public_bytes(serialization.Encoding.PEM).decode())
    return pems


# --- pure: devices.pki only -----------------------------------------------------------------


def timed_rounds(items: list[Any], call: Callable[[Any], object], rounds: int) -> dict[str, float]:
    """`rounds` passes over `items`: the median pass's rate (this machine is shared), p50 over every call."""
    passes = []
    latencies: list[float] = []
    for _ in range(rounds):
        one = timed_each(items, call, latencies)
        passes.append(one["per_s"])
    result = rate(latencies, sum(len(items) / r for r in passes))
    result["per_s"] = statistics.median(passes)
    result["rounds"] = rounds
    result["round_per_s"] = passes  # type: ignore[assignment]
    return result


def bench_signing(n: int, rounds: int) -> dict[str, Any]:
    from cryptography import x509

    from devices import pki

    validity = dt.timedelta(days=365)
    node_ids = [f"sensor-{i}" for i in range(n)]
    t0 = time.perf_counter()
    csrs = make_csrs(node_ids)
    generate_s = time.perf_counter() - t0
    ca_key, ca_cert = pki.create_ca("meshhub bench CA")
    pairs = list(zip(csrs, node_ids, strict=True))

    def issue(item: tuple[str, str]) -> x509.Certificate:
        pem, node_id = item
        return pki.sign_device_csr(ca_key, ca_cert, pki.parse_csr(pem), node_id, validity)

    for item in pairs[:PURE_WARMUP]:
        cert = issue(item)
        assert cert.subject.rfc4514_string() == f"CN={item[1]}"
        assert cert.issuer == ca_cert.subject

    results: dict[str, Any] = {"csrs": n, "generate_s": generate_s}
    log(f"[pure] parse_csr + sign_device_csr x {n} x {rounds} rounds")
    results["parse_and_sign"] = timed_rounds(pairs, issue, rounds)

    log(f"[pure] parse_csr alone, csr load, csr signature check x {n} x {rounds} rounds")
    results["parse_csr"] = timed_rounds(csrs, pki.parse_csr, rounds)
    results["csr_load"] = timed_rounds(csrs, lambda pem: x509.load_pem_x509_csr(pem.encode()), rounds)
    loaded = [x509.load_pem_x509_csr(pem.encode()) for pem in csrs]

    def check(csr: x509.CertificateSigningRequest) -> object:
        assert csr.is_signature_valid
        return None

    results["csr_verify"] = timed_rounds(loaded, check, rounds)

    log(f"[pure] sign_device_csr alone x {n} x {rounds} rounds")
    parsed = list(zip([pki.parse_csr(pem) for pem in csrs], node_ids, strict=True))
    results["sign"] = timed_rounds(parsed, lambda item: pki.sign_device_csr(ca_key, ca_cert, item[0], item[1], validity), rounds)
    return results


def bench_crl(sizes: list[int]) -> list[dict[str, Any]]:
    from devices import pki

    ca_key, ca_cert = pki.create_ca("meshhub bench CA")
    now = pki.utcnow()
    out = []
    for size in sizes:
        entries = [pki.RevokedEntry(pki.random_serial(), now - dt.timedelta(minutes=i)) for i in range(size)]
        log(f"[pure] build_crl with {size} entries x {CRL_REPEATS}")
        pki.build_crl(ca_key, ca_cert, entries[:10], 1)  # warm-up
        samples = []
        pem_bytes = 0
        for number in range(CRL_REPEATS):
            t0 = time.perf_counter()
            crl = pki.build_crl(ca_key, ca_cert, entries, number + 2)
            pem = pki.crl_pem(crl)
            samples.append(time.perf_counter() - t0)
            pem_bytes = len(pem)
        assert len(crl) == size
        out.append({"entries": size, "p50_ms": statistics.median(samples) * 1000, "min_ms": min(samples) * 1000, "pem_bytes": pem_bytes})
    return out


def run_pure(args: argparse.Namespace) -> dict[str, Any]:
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "signing": bench_signing(args.csrs, args.rounds),
        "crl": bench_crl(args.crl_sizes),
    }


# --- service: devices.identity on one database ------------------------------------------------


def bench_enrollment(n: int) -> dict[str, Any]:
    from django.contrib.auth.hashers import check_password, get_hasher, make_password

    from audit.services import Actor
    from devices import identity
    from devices.models import Certificate, CertificateStatus, Device, DeviceStatus, Enrollment, EnrollmentStatus

    actor = Actor("user", "bench")
    identity.active_ca()  # created on first use: not part of any enrollment
    node_ids = [f"sensor-{i}" for i in range(n + SERVICE_WARMUP)]
    csrs = make_csrs(node_ids)

    log(f"[service] create_enrollment x {len(node_ids)} (untimed setup; one PBKDF2 hash each)")
    t0 = time.perf_counter()
    tickets = [identity.create_enrollment(actor, node_id, device_type="sensor") for node_id in node_ids]
    create_s = time.perf_counter() - t0
    jobs = [(ticket.code, csr, node_id) for ticket, csr, node_id in zip(tickets, csrs, node_ids, strict=True)]

    def enroll(job: tuple[str, str, str]) -> object:
        code, csr, node_id = job
        return identity.complete_enrollment(code, None, csr, "127.0.0.1", node_id)

    for job in jobs[:SERVICE_WARMUP]:
        enroll(job)
    log(f"[service] complete_enrollment x {n}")
    results: dict[str, Any] = {"enrollments": n, "create_enrollment_s": create_s, "create_enrollment_per_s": len(node_ids) / create_s}
    results["complete_enrollment"] = timed_each(jobs[SERVICE_WARMUP:], enroll)

    issued = Certificate.objects.filter(status=CertificateStatus.ACTIVE, device__node_id__in=node_ids).count()
    assert issued == len(node_ids), f"expected {len(node_ids)} active certificates, found {issued}"
    assert Device.objects.filter(node_id__in=node_ids, status=DeviceStatus.PROVISIONED).count() == len(node_ids)
    assert Enrollment.objects.filter(node_id__in=node_ids, status=EnrollmentStatus.USED).count() == len(node_ids)

    # The one PBKDF2 verification complete_enrollment does without a PIN, alone.
    hasher = get_hasher(identity.CODE_HASHER)
    encoded = make_password(identity.normalize_code(tickets[0].code), hasher=identity.CODE_HASHER)
    samples = []
    for _ in range(5):
        t1 = time.perf_counter()
        assert check_password(identity.normalize_code(tickets[0].code), encoded)
        samples.append(time.perf_counter() - t1)
    results["pbkdf2_check"] = {"iterations": getattr(hasher, "iterations", None), "p50_ms": statistics.median(samples) * 1000}

    stall_ids = [f"stall-{i}" for i in range(STALL_ENROLLMENTS)]
    stall_tickets = [identity.create_enrollment(actor, node_id, device_type="sensor") for node_id in stall_ids]
    stall_jobs = [(ticket.code, csr, node_id) for ticket, csr, node_id in zip(stall_tickets, make_csrs(stall_ids), stall_ids, strict=True)]
    log(f"[service] audit record() from another thread: idle, then during {STALL_ENROLLMENTS} back-to-back complete_enrollment")
    results["writer_idle"] = concurrent_appends(lambda: time.sleep(1.0))
    results["writer_during_enrollment"] = concurrent_appends(lambda: [enroll(job) for job in stall_jobs]) | {"enrollments": STALL_ENROLLMENTS}
    return results


def concurrent_appends(foreground: Callable[[], object]) -> dict[str, Any]:
    """Another thread (its own connection) appends one audit event every STALL_PAUSE_S while
    `foreground` runs: how long other writers wait while it holds locks."""
    from django.db import connections

    from audit.models import Decision
    from audit.services import Actor, record

    actor = Actor("device", "bench-writer")
    latencies: list[float] = []
    errors: list[str] = []
    started = threading.Event()
    stop = threading.Event()

    def writer() -> None:
        try:
            record(actor, "bench.writer", Decision.ALLOW, scope="telemetry")  # opens this thread's connection
            started.set()
            while not stop.is_set():
                t0 = time.perf_counter()
                record(actor, "bench.writer", Decision.ALLOW, scope="telemetry")
                latencies.append(time.perf_counter() - t0)
                time.sleep(STALL_PAUSE_S)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            started.set()
            connections.close_all()

    thread = threading.Thread(target=writer, name="bench-writer")
    thread.start()
    started.wait()
    t0 = time.perf_counter()
    foreground()
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    if errors:
        raise RuntimeError("concurrent writer failed: " + "; ".join(errors))
    return {
        "seconds": elapsed,
        "appends": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "max_ms": max(latencies) * 1000 if latencies else None,
    }


def bench_service_crl(revoked: int, to_revoke: int) -> dict[str, Any]:
    """`revoked` revoked rows (bulk-inserted), then refresh_crls() and revoke_certificate() on top."""
    from cryptography import x509
    from django.utils import timezone

    from audit.services import Actor
    from devices import identity, pki
    from devices.models import Certificate, CertificateStatus, Device, DeviceStatus

    ca = identity.active_ca()
    device = Device.objects.create(node_id="bench-revoked", name="bench-revoked", device_type="sensor", status=DeviceStatus.REVOKED)
    now = timezone.now()
    rows = []
    for i in range(revoked):
        serial = format(pki.random_serial(), "x")
        rows.append(
            Certificate(
                ca=ca,
                device=device,
                serial=serial,
                fingerprint="sha256:" + secrets.token_hex(32),
                pem="",
                not_before=now - dt.timedelta(days=30),
                not_after=now + dt.timedelta(days=335),
                status=CertificateStatus.REVOKED,
                revoked_at=now - dt.timedelta(minutes=i),
                revocation_reason="bench",
            )
        )
    Certificate.objects.bulk_create(rows, batch_size=500)

    log(f"[service] refresh_crls with {revoked} revoked rows x {CRL_REPEATS}")
    identity.refresh_crls()  # warm-up
    samples = []
    for _ in range(CRL_REPEATS):
        t0 = time.perf_counter()
        identity.refresh_crls()
        samples.append(time.perf_counter() - t0)
    ca.refresh_from_db()
    listed = len(x509.load_pem_x509_crl(ca.crl_pem.encode()))
    assert listed == revoked, f"CRL lists {listed} entries, expected {revoked}"
    results: dict[str, Any] = {"revoked": revoked, "refresh_crls_p50_ms": statistics.median(samples) * 1000}

    actor = Actor("user", "bench")
    active = list(Certificate.objects.filter(status=CertificateStatus.ACTIVE).order_by("pk")[:to_revoke])
    log(f"[service] revoke_certificate x {len(active)} on top of {revoked} revoked rows")
    results["revoke_certificate"] = timed_each(active, lambda cert: identity.revoke_certificate(actor, cert, "bench: key compromise drill"))
    ca.refresh_from_db()
    listed = len(x509.load_pem_x509_crl(ca.crl_pem.encode()))
    assert listed == revoked + len(active), f"CRL lists {listed} entries, expected {revoked + len(active)}"
    return results


def run_service(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from commands_audit import database_info

    label = "PostgreSQL" if connection.vendor == "postgresql" else "SQLite"
    log(f"[{label}] migrating")
    call_command("migrate", verbosity=0, interactive=False)
    results: dict[str, Any] = {"database": database_info()}
    results["enrollment"] = bench_enrollment(args.enrollments)
    results["crl"] = bench_service_crl(args.crl_rows, args.enrollments)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["pure", "service"], required=True)
    parser.add_argument("--csrs", type=int, default=2000, help="pure: CSRs to parse and sign (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="pure: passes over the CSRs; the median pass is reported (default 3)")
    parser.add_argument(
        "--crl-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000], help="pure: revoked entries per CRL (default 1000,10000)"
    )
    parser.add_argument("--enrollments", type=int, default=30, help="service: complete_enrollment() calls (default 30)")
    parser.add_argument("--crl-rows", type=int, default=1000, help="service: revoked rows behind refresh_crls() (default 1000)")
    args = parser.parse_args()
    results = run_pure(args) if args.mode == "pure" else run_service(args)
    print(RESULT_MARKER + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
