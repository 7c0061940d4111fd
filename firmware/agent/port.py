"""CPython port layer: keys and CSRs, TLS with CA pinning, the state directory.

A MicroPython port provides the same functions with its own crypto and ssl modules; the
protocol core in `core/` only calls these.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import ssl
import time
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

CONNECT_TIMEOUT_S = 10.0


class PinError(Exception):
    """The hub did not prove it holds a certificate from the pinned CA: nothing was sent."""


def uuid4() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return int(time.time() * 1000)


def new_key_and_csr(node_id: str) -> tuple[str, str]:
    """A fresh P-256 key, generated here and never sent anywhere, and a CSR for it."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)])).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def _fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _peer_chain(sock: ssl.SSLSocket) -> list[bytes]:
    """The certificates the server sent, leaf first (public API from Python 3.13)."""
    getter = getattr(sock, "get_unverified_chain", None)
    chain = getter() if getter is not None else sock._sslobj.get_unverified_chain()  # type: ignore[union-attr]
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain or []]  # type: ignore[attr-defined]


def _server_subject(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def verify_server(chain_der: list[bytes], fingerprint: str, host: str) -> x509.Certificate:
    """Find the pinned CA among what the server sent and check the leaf against it:
    signature, validity, serverAuth and the name we dialed. Returns the CA."""
    fingerprint = fingerprint.lower()
    if not fingerprint.startswith("sha256:"):
        fingerprint = "sha256:" + fingerprint.replace(":", "")
    if not chain_der:
        raise PinError("the hub sent no certificate")
    ca_der = next((der for der in chain_der if _fingerprint(der) == fingerprint), None)
    if ca_der is None:
        raise PinError(f"hub CA fingerprint mismatch: expected {fingerprint}, the hub offered {', '.join(_fingerprint(d) for d in chain_der[1:]) or 'no CA'}")
    ca = x509.load_der_x509_certificate(ca_der)
    leaf = x509.load_der_x509_certificate(chain_der[0])
    verifier = verification.PolicyBuilder().store(verification.Store([ca])).build_server_verifier(_server_subject(host))
    try:
        verifier.verify(leaf, [])
    except verification.VerificationError as exc:
        raise PinError(f"the hub's certificate does not verify against the pinned CA for {host}: {exc}") from None
    return ca


def connect_pinned(host: str, port: int, fingerprint: str) -> Any:
    """TLS to the enrollment port, trusting nothing but the CA with `fingerprint`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # checked below against the pinned CA, not the system store
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    try:
        sock = context.wrap_socket(raw, server_hostname=host)
        verify_server(_peer_chain(sock), fingerprint, host)
    except BaseException:
        raw.close()
        raise
    return sock.makefile("rwb")


def check_enrolled(body: dict[str, Any], fingerprint: str, key_pem: str) -> str | None:
    """Is what the hub sent usable: our key, a client cert chaining to the pinned CA?"""
    try:
        cas = [x509.load_pem_x509_certificate(pem.encode()) for pem in body["ca_chain"]]
        cert = x509.load_pem_x509_certificate(body["cert"].encode())
        for field in ("mesh_host", "mesh_port", "hub_signing_key", "release_key"):
            if field not in body:
                return f"answer lacks {field}"
    except (KeyError, TypeError, ValueError) as exc:
        return f"answer is malformed: {exc}"
    if not any(_fingerprint(ca.public_bytes(serialization.Encoding.DER)) == fingerprint.lower() for ca in cas):
        return "ca_chain does not contain the pinned CA"
    try:
        verification.PolicyBuilder().store(verification.Store(cas)).build_client_verifier().verify(cert, [])
    except verification.VerificationError as exc:
        return f"certificate does not verify as a client certificate: {exc}"
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        return "certificate is not for this device's key"
    return None


def _write_private(path: str, data: str) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(data)
    os.replace(tmp, path)


def save_identity(state_dir: str, node_id: str, key_pem: str, body: dict[str, Any], fingerprint: str) -> None:
    """key.pem, cert.pem, ca.pem and hub.json, all 0600 in a 0700 directory."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)
    _write_private(os.path.join(state_dir, "key.pem"), key_pem)
    _write_private(os.path.join(state_dir, "cert.pem"), body["cert"])
    _write_private(os.path.join(state_dir, "ca.pem"), "".join(body["ca_chain"]))
    hub = {
        "node_id": node_id,
        "ca_fingerprint": fingerprint.lower(),
        "mesh_host": body["mesh_host"],
        "mesh_port": body["mesh_port"],
        "hub_signing_key": body["hub_signing_key"],
        "release_key": body["release_key"],
        "release_keys": body.get("release_keys") or [body["release_key"]],
        "enrolled_at_ms": now_ms(),
    }
    _write_private(os.path.join(state_dir, "hub.json"), json.dumps(hub, indent=2))


def random_b64(n: int) -> str:
    import base64

    return base64.b64encode(os.urandom(n)).decode()


def random() -> float:
    import random as _random

    return _random.random()


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def load_hub(state_dir: str) -> dict[str, Any]:
    with open(os.path.join(state_dir, "hub.json")) as handle:
        hub: dict[str, Any] = json.load(handle)
    return hub


class MtlsConnection:
    """A TLS socket with the device certificate; recv returns None on timeout, b"" on close."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.settimeout(CONNECT_TIMEOUT_S)
        self.sock.sendall(data)

    def recv(self, timeout_s: float) -> bytes | None:
        self.sock.settimeout(timeout_s)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def connect_mtls(state_dir: str, host: str | None = None, port: int | None = None) -> MtlsConnection:
    """Mutual TLS to the mesh port learnt at enrollment, trusting only the hub's CAs."""
    hub = load_hub(state_dir)
    host = host or hub["mesh_host"]
    port = port or int(hub["mesh_port"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=os.path.join(state_dir, "ca.pem"))
    context.load_cert_chain(os.path.join(state_dir, "cert.pem"), os.path.join(state_dir, "key.pem"))
    raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    try:
        sock = context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    return MtlsConnection(sock)


def load_done(state_dir: str) -> dict[str, Any]:
    """Command ids this device already executed (survives restarts: at most once)."""
    try:
        with open(os.path.join(state_dir, "commands.json")) as handle:
            done: dict[str, Any] = {k: tuple(v) for k, v in json.load(handle).items()}
            return done
    except (OSError, ValueError):
        return {}


def save_done(state_dir: str, done: dict[str, Any]) -> None:
    _write_private(os.path.join(state_dir, "commands.json"), json.dumps({k: list(v) for k, v in done.items()}))


def udp_exchange(host: str, port: int, payload: bytes, timeout_s: float) -> bytes | None:
    """Send one datagram (broadcast allowed) and wait for one answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.settimeout(timeout_s)
        sock.sendto(payload, (host, port))
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            return None
        return data


def verify_ed25519(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    import base64

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64)).verify(base64.b64decode(signature_b64), message)
        return True
    except (InvalidSignature, ValueError):
        return False


def wipe(state_dir: str, everything: bool) -> None:
    """provision.reset forgets the identity; factory_reset forgets everything."""
    names = os.listdir(state_dir) if everything else ["key.pem", "cert.pem", "ca.pem", "hub.json"]
    for name in names:
        path = os.path.join(state_dir, name)
        if os.path.isfile(path):
            os.remove(path)


def install_renewed(state_dir: str, key_pem: str, body: dict[str, Any], fingerprint: str) -> str | None:
    """Check a renewed certificate like an enrollment answer, then switch key and cert files."""
    hub = load_hub(state_dir)
    problem = check_enrolled({**hub, **body, "hub_signing_key": hub["hub_signing_key"], "release_key": hub["release_key"]}, fingerprint, key_pem)
    if problem:
        return problem
    _write_private(os.path.join(state_dir, "key.pem"), key_pem)
    _write_private(os.path.join(state_dir, "cert.pem"), body["cert"])
    _write_private(os.path.join(state_dir, "ca.pem"), "".join(body["ca_chain"]))
    return None


# --- firmware slots and the boot guard's state ------------------------------------------
# On a real device these are flash partitions and an NVS record; here, files in the state
# directory: slots/a.img and slots/b.img, boot.json, ota.json (a transfer's progress).


def _slot_path(state_dir: str, slot: str) -> str:
    if slot not in ("a", "b"):
        raise ValueError(f"no slot {slot!r}")
    os.makedirs(os.path.join(state_dir, "slots"), mode=0o700, exist_ok=True)
    return os.path.join(state_dir, "slots", f"{slot}.img")


def slot_size(state_dir: str, slot: str) -> int:
    try:
        return os.path.getsize(_slot_path(state_dir, slot))
    except OSError:
        return 0


def slot_append(state_dir: str, slot: str, data: bytes) -> None:
    with open(_slot_path(state_dir, slot), "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def slot_truncate(state_dir: str, slot: str, size: int) -> None:
    path = _slot_path(state_dir, slot)
    with open(path, "ab") as handle:
        handle.truncate(size)


def slot_sha256(state_dir: str, slot: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(_slot_path(state_dir, slot), "rb") as handle:
            while chunk := handle.read(1 << 16):
                digest.update(chunk)
    except OSError:
        pass
    return digest.hexdigest()


def slot_head(state_dir: str, slot: str, size: int) -> bytes:
    try:
        with open(_slot_path(state_dir, slot), "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _load_json(state_dir: str, name: str) -> Any:
    try:
        with open(os.path.join(state_dir, name)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _save_json(state_dir: str, name: str, value: Any) -> None:
    """Written whole to a temporary file and renamed: a power cut leaves the old or the new."""
    path = os.path.join(state_dir, name)
    _write_private(path + ".tmp", json.dumps(value))
    os.replace(path + ".tmp", path)


def load_boot(state_dir: str) -> dict[str, Any] | None:
    state: dict[str, Any] | None = _load_json(state_dir, "boot.json")
    return state


def save_boot(state_dir: str, state: dict[str, Any]) -> None:
    _save_json(state_dir, "boot.json", state)


def load_transfer(state_dir: str) -> dict[str, Any] | None:
    meta: dict[str, Any] | None = _load_json(state_dir, "ota.json")
    return meta


def save_transfer(state_dir: str, meta: dict[str, Any] | None) -> None:
    if meta is None:
        try:
            os.remove(os.path.join(state_dir, "ota.json"))
        except OSError:
            pass
        return
    _save_json(state_dir, "ota.json", meta)


def key_id(public_key_b64: str) -> str:
    import base64

    return hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:16]


def b64decode(text: str) -> bytes:
    import base64

    return base64.b64decode(text, validate=True)


def sign_device(state_dir: str, payload: bytes) -> str:
    """ECDSA P-256 SHA-256 with the device key (key.pem), DER, base64: `ota.complete`."""
    import base64

    with open(os.path.join(state_dir, "key.pem"), "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


class SkewedPort:
    """This port on a device whose clock is `offset_ms` off (negative: slow). Everything
    but `now_ms` is the port's own; for tests and simulations of badly set clocks."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def __getattr__(self, name: str) -> Any:
        return globals()[name]

    def now_ms(self) -> int:
        return now_ms() + self.offset_ms
