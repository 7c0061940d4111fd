"""The agent's pure core under real MicroPython: the same scenario (firmware/micropython/
scenario.py) in CPython and in MicroPython's WebAssembly port (npm, pinned in
firmware/micropython/package.json, run with Node.js), and both must return the same.

Covered: framing (encode/decode, reassembly from any chunking, malformed frames), the
anti-replay window (replayed and reordered seq, reused and forgotten nonces, expired ttl,
clock skew, session tokens), the boot guard and A/B slot state (failures counting to safe
mode, trial revert, confirm, operator rollback), offers checked against signed manifests
(every refusal reason), canonical JSON, the UTC parser, semver order, transfers, image
headers, the signed-frame payload, and that every core module imports.

Not covered: Ed25519 itself. MicroPython has none; the port supplies it. Under MicroPython
the scenario gets a table of verdicts that CPython computed beforehand with cryptography
for the exact (key, message, signature) triples it was asked about, so MicroPython must
ask about byte-identical messages to get the same answers (a triple CPython never saw does
not verify and is reported).

`make install-dev` runs `npm ci --prefix firmware/micropython`. Without node_modules the
test is skipped, except under CI (env CI set), where it fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from firmware.agent import port
from firmware.micropython import scenario
from hub.mesh.protocol import signing_payload as hub_signing_payload
from ota import manifest as hub_manifest

HERE = Path(__file__).resolve().parent.parent / "firmware" / "micropython"
RUNNER = HERE / "run.mjs"
PACKAGE = HERE / "node_modules" / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"

# Fixed keys: Ed25519 signatures are deterministic, so the inputs are the same every run.
RELEASE_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
HUB_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
NOW_MS = 1796212800000  # 2026-12-03T12:00:00Z on the hub's clock


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_b64(key: ed25519.Ed25519PrivateKey) -> str:
    return b64(key.public_key().public_bytes_raw())


def manifest(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "thermostat-fw",
        "version": "1.2.0",
        "build_id": "",
        "sha256": "ab" * 32,
        "size": 5000,
        "device_types": ["thermostat", "relay"],
        "security_counter": 4,
        "created_at": "2026-12-01T00:00:00Z",
        "expires_at": "2027-12-01T00:00:00Z",
        "min_agent_version": "0.3.0",
        "migrations": [],
    }
    raw.update(changes)
    return raw


def signed_offer(raw: dict[str, Any], key: ed25519.Ed25519PrivateKey = RELEASE_KEY, **body_changes: Any) -> dict[str, Any]:
    """Signed over the hub's canonical bytes (ota/manifest.py), as `ota sign` does."""
    key_id = hub_manifest.key_id(key.public_key())
    document = {"manifest": raw, "signature": b64(key.sign(hub_manifest.canonical(raw))), "key_id": key_id}
    body = {"deployment": 7, "sha256": raw["sha256"], "size": raw["size"], "document": document, "chunk_size": 1024}
    body.update(body_changes)
    return body


def offer_cases() -> list[dict[str, Any]]:
    good = signed_offer(manifest())
    tampered = json.loads(json.dumps(good))
    tampered["document"]["manifest"]["security_counter"] = 99
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("valid", good, {}),
        ("valid, non-ASCII and control characters in signed fields", signed_offer(manifest(build_id="Grüße € \U0001f600 \x7f\b\f", migrations=["ü"])), {}),
        ("valid, the other device type", good, {"device_type": "relay"}),
        ("valid, counter equal", good, {"counter": 4}),
        ("valid, prerelease agent above the minimum", good, {"agent": "0.3.1-rc.1"}),
        ("untrusted key", signed_offer(manifest(), OTHER_KEY), {}),
        ("tampered manifest", tampered, {}),
        ("no document", {**good, "document": None}, {}),
        ("manifest not a dict", {**good, "document": {**good["document"], "manifest": []}}, {}),
        ("float in the manifest", signed_offer(manifest(), document_float=True), {}),
        ("signature missing", {**good, "document": {**good["document"], "signature": None}}, {}),
        ("offer sha256 differs", {**good, "sha256": "0" * 64}, {}),
        ("offer size differs", {**good, "size": 10}, {}),
        ("size 0", signed_offer(manifest(size=0)), {}),
        ("size too large", signed_offer(manifest(size=64 * 1024 * 1024 + 1)), {}),
        ("wrong device type", good, {"device_type": "meter"}),
        ("agent too old", signed_offer(manifest(min_agent_version="9.0.0")), {}),
        ("agent is the prerelease of the minimum", signed_offer(manifest(min_agent_version="0.4.0")), {"agent": "0.4.0-rc.1"}),
        ("security counter lower", good, {"counter": 5}),
        ("security counter not an int", signed_offer(manifest(security_counter="5")), {}),
        ("expired", good, {"hub_now_ms": 1827705600000}),
        ("expires this very millisecond", good, {"hub_now_ms": 1827705600000 - 0}),
        ("a millisecond before expiry", good, {"hub_now_ms": 1827705600000 - 1}),
        ("no valid expiry", signed_offer(manifest(expires_at="2027-12-01")), {}),
    ]
    out = []
    for label, body, kwargs in cases:
        if body.pop("document_float", None):
            body["document"]["manifest"]["size_mb"] = 0.5
        out.append({"label": label, "body": body, "device_type": "thermostat", "counter": 3, "hub_now_ms": NOW_MS, "agent": "0.4.0"} | kwargs)
    return out


def signed_frame_cases() -> list[dict[str, Any]]:
    node = "thermo-7"
    frames = [
        ("good reset", {"type": "reset", "id": "r-1", "issued_at": NOW_MS, "body": {"scope": "config", "why": "Grüße \U0001f600"}}),
        (
            "good ota.abort with nested body and a float",
            {"type": "ota.abort", "id": "a-1", "issued_at": NOW_MS, "body": {"deployment": 7, "z": [1, {"b": 0.5, "a": None}]}},
        ),
    ]
    cases = []
    for label, frame in frames:
        cases.append({"label": label, "node_id": node, "frame": {**frame, "sig": b64(HUB_KEY.sign(hub_signing_payload(frame, node)))}})
    good = cases[0]["frame"]
    cases.append({"label": "signed for another node", "node_id": "thermo-8", "frame": good})
    cases.append({"label": "body changed after signing", "node_id": node, "frame": {**good, "body": {"scope": "all"}}})
    cases.append({"label": "unsigned", "node_id": node, "frame": {k: v for k, v in good.items() if k != "sig"}})
    cases.append({"label": "no id", "node_id": node, "frame": {k: v for k, v in good.items() if k != "id"}})
    return cases


def inputs() -> dict[str, Any]:
    return {
        "release_keys": [public_b64(RELEASE_KEY), public_b64(HUB_KEY)],
        "hub_key": public_b64(HUB_KEY),
        "offers": offer_cases(),
        "signed_frames": signed_frame_cases(),
    }


def micropython_available() -> bool:
    if PACKAGE.exists() and shutil.which("node"):
        return True
    if os.environ.get("CI"):
        pytest.fail(f"CI: MicroPython's WebAssembly port is missing ({PACKAGE}); run `npm ci --prefix firmware/micropython` (make install-dev)")
    pytest.skip("MicroPython's WebAssembly port is not installed: make install-dev (npm ci --prefix firmware/micropython)")
    return False


@pytest.fixture(scope="module")
def both() -> dict[str, Any]:
    """The scenario's result in CPython (real Ed25519) and in MicroPython (CPython's verdicts)."""
    micropython_available()
    given = inputs()
    verdicts: dict[tuple[str, str, str], bool] = {}

    def verify_ed25519(key_b64: str, message: bytes, signature_b64: str) -> bool:
        verdict: bool = port.verify_ed25519(key_b64, message, signature_b64)
        verdicts[(key_b64, message.decode(), signature_b64)] = verdict
        return verdict

    cpython = json.loads(json.dumps(scenario.run(json.loads(json.dumps(given)), verify_ed25519)))
    table = [[*triple, verdict] for triple, verdict in verdicts.items()]
    done = subprocess.run(
        ["node", str(RUNNER)], input=json.dumps({"inputs": given, "verdicts": table}), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"MicroPython run failed:\n{done.stderr}"
    micropython = json.loads(done.stdout)
    return {"cpython": cpython, "micropython": micropython["result"], "misses": micropython["verify_misses"], "version": micropython["implementation"]}


def test_it_is_micropython_that_ran(both: dict[str, Any]) -> None:
    assert both["version"][:2] == [1, 27]


def test_every_core_module_imports_under_micropython(both: dict[str, Any]) -> None:
    assert set(both["micropython"]["imports"].values()) == {"ok"}, both["micropython"]["imports"]


@pytest.mark.parametrize("section", ["framing", "replay", "bootguard", "update", "image", "signing", "key_ids", "imports"])
def test_micropython_and_cpython_agree(both: dict[str, Any], section: str) -> None:
    cpython, micropython = both["cpython"][section], both["micropython"][section]
    if isinstance(cpython, dict):
        for name in cpython:
            assert micropython.get(name) == cpython[name], f"{section}/{name} differs"
    assert micropython == cpython


def test_micropython_asked_to_verify_exactly_what_cpython_did(both: dict[str, Any]) -> None:
    """A miss means MicroPython built other bytes to verify (canonical JSON, signing payload)."""
    assert both["misses"] == []


def test_the_scenario_reaches_the_cases_it_names(both: dict[str, Any]) -> None:
    """Guard against a scenario that agrees because it tests nothing."""
    result = both["cpython"]
    codes = {step[1] for step in result["replay"]}
    assert {"ok", "replayed_seq", "nonce_reused", "expired", "clock_skew", "bad_frame", "bad_session"} <= codes
    actions = [step[1] for step in result["bootguard"] if step[0].startswith("boot ") and step[0].endswith(" fails")][:4]
    assert actions == [["retry", 0], ["retry", 30], ["retry", 30], ["safe_mode", 0]]
    offers = {label: verdict[0] for label, *verdict in result["update"]["offers"]}
    assert offers["valid"] == offers["valid, non-ASCII and control characters in signed fields"] == "ok"
    assert {"untrusted_key", "bad_signature", "hash_mismatch", "incompatible", "rollback", "expired"} <= set(offers.values())
    assert [verdict for _, _, verdict in result["signing"][:2]] == [None, None]
    assert all(verdict for _, _, verdict in result["signing"][2:])
