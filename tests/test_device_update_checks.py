"""The device's own checks and bookkeeping, alone (firmware/agent/core): a hub that offers
a bad image still cannot have it installed, and no sequence of boots leaves the device
without a valid image to run. Real keys and signatures (ota/manifest.py signs, the port
verifies); the pure parts against CPython's own json and datetime."""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from firmware.agent import port
from firmware.agent.core import bootguard, update
from ota import manifest as hub_manifest

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
RELEASE_KEY = ed25519.Ed25519PrivateKey.generate()
RELEASE_KEY_B64 = base64.b64encode(RELEASE_KEY.public_key().public_bytes_raw()).decode()
IMAGE = b'{"meshhub_sim": 1, "version": "1.2.0", "behaviour": "healthy"}\n' + b"x" * 5000


def offer(key: ed25519.Ed25519PrivateKey = RELEASE_KEY, **changes: Any) -> dict[str, Any]:
    raw = {
        "name": "thermostat-fw",
        "version": "1.2.0",
        "build_id": "",
        "sha256": hashlib.sha256(IMAGE).hexdigest(),
        "size": len(IMAGE),
        "device_types": ["thermostat"],
        "security_counter": 4,
        "created_at": "2026-12-01T00:00:00Z",
        "expires_at": "2027-12-01T00:00:00Z",
        "min_agent_version": "0.3.0",
        "migrations": [],
    }
    raw.update({k: v for k, v in changes.items() if k in raw})
    document = hub_manifest.sign(hub_manifest.Manifest.from_dict(raw), key).document()
    body = {"deployment": 7, "sha256": raw["sha256"], "size": raw["size"], "document": document, "chunk_size": 1024}
    body.update({k: v for k, v in changes.items() if k in ("offer_sha256", "offer_size")})
    if "offer_sha256" in body:
        body["sha256"] = body.pop("offer_sha256")
    if "offer_size" in body:
        body["size"] = body.pop("offer_size")
    return body


def check(body: dict[str, Any], device_type: str = "thermostat", counter: int = 3, now: datetime = NOW, agent: str = update.AGENT_VERSION) -> dict[str, Any]:
    manifest: dict[str, Any] = update.check_offer(port, body, [RELEASE_KEY_B64], device_type, counter, int(now.timestamp() * 1000), agent)
    return manifest


def test_a_valid_offer_passes_and_yields_its_manifest() -> None:
    assert check(offer())["version"] == "1.2.0"


@pytest.mark.parametrize(
    ("body", "kwargs", "code", "words"),
    [
        (lambda: offer(key=ed25519.Ed25519PrivateKey.generate()), {}, "untrusted_key", "is not a release key this device holds"),
        (
            lambda: {**offer(), "document": {**offer()["document"], "manifest": {**offer()["document"]["manifest"], "security_counter": 99}}},
            {},
            "bad_signature",
            "does not verify",
        ),
        (lambda: offer(offer_sha256="0" * 64), {}, "hash_mismatch", "not the manifest's"),
        (lambda: offer(offer_size=10), {}, "hash_mismatch", "not the manifest's"),
        (lambda: offer(), {"device_type": "relay"}, "incompatible", "the release is for thermostat, this device is a relay"),
        (lambda: offer(min_agent_version="9.0.0"), {}, "incompatible", "needs agent 9.0.0 or later"),
        (lambda: offer(), {"counter": 5}, "rollback", "security counter 4 is lower than the running image's 5"),
        (lambda: offer(), {"now": datetime(2028, 1, 1, tzinfo=UTC)}, "expired", "expired at 2027-12-01T00:00:00Z"),
        (lambda: {**offer(), "document": None}, {}, "bad_signature", "no signed manifest"),
    ],
)
def test_the_device_refuses_a_bad_offer_on_its_own(body: Any, kwargs: dict[str, Any], code: str, words: str) -> None:
    with pytest.raises(update.Rejected) as refused:
        check(body(), **kwargs)
    assert refused.value.code == code and words in refused.value.reason


@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)),
        lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(alphabet="abcxyz_", min_size=1, max_size=6), children, max_size=4)),
        max_leaves=20,
    )
)
def test_the_devices_canonical_json_is_the_hubs(value: Any) -> None:
    """What the device rebuilds is byte for byte what the hub signed (ota/manifest.py)."""
    assert update.canonical(value).encode() == hub_manifest.canonical(value)


@given(st.recursive(st.text(max_size=12), lambda children: st.dictionaries(st.text(max_size=6), children, max_size=4), max_leaves=10))
def test_the_devices_canonical_json_escapes_any_text_as_the_hub_does(value: Any) -> None:
    """Non-ASCII, control characters and astral code points: the core escapes strings itself
    (MicroPython's json writes them otherwise, tests/test_micropython_core.py)."""
    assert update.canonical(value).encode() == hub_manifest.canonical(value)


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)))
def test_the_devices_utc_time_parser_agrees_with_datetime(when: datetime) -> None:
    when = when.replace(tzinfo=UTC)
    text = hub_manifest.format_timestamp(when)
    assert update.epoch_ms(text) == calendar.timegm(when.utctimetuple()) * 1000 + when.microsecond // 1000


@pytest.mark.parametrize(
    ("low", "high"), [("1.0.0-rc.1", "1.0.0"), ("1.0.0", "1.0.1"), ("1.9.0", "1.10.0"), ("1.0.0-alpha", "1.0.0-alpha.1"), ("1.0.0-2", "1.0.0-10")]
)
def test_the_devices_version_order_is_semver(low: str, high: str) -> None:
    assert update.version_key(low) < update.version_key(high)


def test_a_transfer_writes_in_order_resumes_within_what_the_hub_recorded_and_checks_the_hash(tmp_path: Path) -> None:
    meta = {"deployment": 7, "sha256": hashlib.sha256(IMAGE).hexdigest(), "size": len(IMAGE), "chunk_size": 1024}
    transfer = update.Transfer(port, str(tmp_path), "b", meta)
    assert transfer.resume_from(0) == 0
    assert transfer.write(0, IMAGE[:1024]) == 1024
    assert transfer.write(3072, IMAGE[3072:4096]) == 1024, "a chunk out of order is not written"
    assert transfer.write(1024, IMAGE[1024:2048]) == 2048
    # A new session: the hub recorded 1,024 acknowledged bytes; the device drops the rest.
    assert transfer.resume_from(1024) == 1024 and transfer.held() == 1024
    for offset in range(1024, len(IMAGE), 1024):
        transfer.write(offset, IMAGE[offset : offset + 1024])
    assert transfer.complete() and transfer.verify() == (True, meta["sha256"], "")
    assert transfer.write(len(IMAGE), b"more") == len(IMAGE), "never past the offered size"
    corrupt = update.Transfer(port, str(tmp_path), "a", {**meta, "sha256": "0" * 64})
    corrupt.write(0, IMAGE)
    ok, _, reason = corrupt.verify()
    assert not ok and "sha256" in reason


def test_a_failed_trial_boot_reverts_and_a_boot_loop_enters_safe_mode() -> None:
    state = bootguard.initial("1.0.0")
    bootguard.install(state, "1.2.0", 4, 7, confirm_by_ms=1000)
    assert bootguard.begin(state) == "b"
    assert bootguard.failed(state, "crashed", 0, 30.0) == ("retry", 0)
    assert (state["active"], state["pending"], state["boot_reason"]) == ("a", None, "rollback")
    assert state["rollback"] == {"from_version": "1.2.0", "reason": "crashed"}
    t = 0
    outcomes = []
    for _ in range(4):
        bootguard.begin(state)
        outcomes.append(bootguard.failed(state, "crashed", t, 30.0))
        t += 1000
    assert outcomes == [("retry", 30.0), ("retry", 30.0), ("safe_mode", 0), ("safe_mode", 0)]  # the trial's failure counts too
    assert state["safe_mode"] and state["diagnostic"]["failures_in_10_min"] > 3
    bootguard.clear(state)
    assert not state["safe_mode"] and state["consecutive_fails"] == 0 and state["failures"] == []


def test_failures_spread_over_more_than_ten_minutes_do_not_enter_safe_mode() -> None:
    state = bootguard.initial("1.0.0")
    for i in range(6):
        bootguard.begin(state)
        bootguard.failed(state, "brownout", i * 4 * 60_000, 30.0)
        bootguard.begin(state)
        bootguard.succeeded(state)
    assert not state["safe_mode"]


boot_events = st.lists(st.sampled_from(["install", "fail", "ok", "confirm", "rollback", "clear"]), max_size=40)


@given(boot_events)
def test_no_sequence_of_boots_leaves_the_device_without_a_valid_image(events: list[str]) -> None:
    state = bootguard.initial("1.0.0")
    t = 0
    for n, event in enumerate(events):
        t += 30_000
        if event == "install" and state["pending"] is None:
            bootguard.install(state, f"1.{n}.0", n, n, t + 600_000)
        elif event == "fail":
            bootguard.begin(state)
            bootguard.failed(state, "crash", t, 30.0)
        elif event == "ok":
            bootguard.begin(state)
            bootguard.succeeded(state)
        elif event == "confirm":
            bootguard.confirm(state)
        elif event == "rollback":
            bootguard.rollback(state, "operator")
        elif event == "clear":
            bootguard.clear(state)
        assert state["valid"][state["active"]] and state["versions"][state["active"]], (events[: n + 1], state)
        assert state["pending"] != state["active"]
    json.dumps(state)  # it stays what boot.json can hold


def test_the_simulated_image_header_and_a_week_of_deadlines_stay_within_reach() -> None:
    assert update.epoch_ms("2026-12-05T12:00:00.5Z") - update.epoch_ms("2026-12-05T12:00:00Z") == 500
    assert update.epoch_ms(hub_manifest.format_timestamp(NOW + timedelta(days=7))) == int((NOW + timedelta(days=7)).timestamp() * 1000)
