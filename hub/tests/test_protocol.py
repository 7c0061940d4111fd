"""The mesh envelope and anti-replay window (pure)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from hub.mesh.protocol import Envelope, ProtocolError, ReplayWindow, check_device_type, check_node, parse_envelope

NOW = 1_764_000_000_000


def nonce() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def frame(**overrides: Any) -> dict[str, Any]:
    base = {"v": 1, "type": "state", "id": "f-1", "seq": 1, "issued_at": NOW, "ttl_ms": 30_000, "nonce": nonce(), "session": "s", "body": {}}
    base.update(overrides)
    return base


def env(seq: int, issued_at: int = NOW, ttl_ms: int = 30_000, nonce_value: str | None = None, kind: str = "state") -> Envelope:
    return parse_envelope(frame(type=kind, seq=seq, issued_at=issued_at, ttl_ms=ttl_ms, nonce=nonce_value or nonce()))


def test_it_parses_a_valid_envelope() -> None:
    parsed = parse_envelope(frame(body={"values": {"temperature": 20.5}}))
    assert (parsed.type, parsed.seq, parsed.ttl_ms, parsed.body) == ("state", 1, 30_000, {"values": {"temperature": 20.5}})


@pytest.mark.parametrize(
    ("overrides", "code", "reason"),
    [
        ({"v": 2}, "bad_version", "unsupported protocol version 2; this hub speaks v1"),
        ({"seq": "1"}, "bad_frame", "seq must be an integer, got str"),
        ({"seq": True}, "bad_frame", "seq must be an integer, got bool"),
        ({"seq": -1}, "bad_frame", "seq -1 outside 0..9007199254740992"),
        ({"ttl_ms": 0}, "bad_frame", "ttl_ms 0 outside 1..3600000"),
        ({"issued_at": 1.5}, "bad_frame", "issued_at must be an integer, got float"),
        ({"nonce": "short"}, "bad_frame", "nonce must be 16 random bytes in base64"),
        ({"id": ""}, "bad_frame", "id must be a non-empty string"),
        ({"id": "x" * 65}, "bad_frame", "id longer than 64 characters"),
        ({"body": []}, "bad_frame", "body must be a JSON object"),
        ({"type": None}, "bad_frame", "type must be a non-empty string"),
    ],
)
def test_it_names_the_wrong_field(overrides: dict[str, Any], code: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_envelope(frame(**overrides))
    assert (refused.value.code, refused.value.reason) == (code, reason)


@pytest.mark.parametrize("kind", ["command", "reset", "ota.offer", "ota.rollback", "session", "welcome"])
def test_devices_may_not_send_hub_frames(kind: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        check_device_type(kind)
    assert refused.value.code == "forbidden_type"
    assert refused.value.reason == f"devices may not send '{kind}' frames"


def test_unknown_types_are_named() -> None:
    with pytest.raises(ProtocolError, match="unknown frame type 'selfdestruct'"):
        check_device_type("selfdestruct")
    for kind in ("state", "ack", "result", "ping", "hello", "ota.complete"):
        check_device_type(kind)


def test_a_frame_naming_another_node_is_refused() -> None:
    check_node({"node_id": "sensor-1"}, "sensor-1")
    check_node({}, "sensor-1")
    with pytest.raises(ProtocolError) as refused:
        check_node({"node_id": "sensor-2"}, "sensor-1")
    assert refused.value.code == "wrong_node"


def test_the_window_accepts_increasing_seqs() -> None:
    window = ReplayWindow()
    for seq in (1, 2, 5, 6):
        window.check(env(seq), NOW)
    assert window.last_seq == 6


def test_a_replayed_or_old_seq_is_refused_and_changes_nothing() -> None:
    window = ReplayWindow()
    window.check(env(3), NOW)
    for seq in (3, 2):
        with pytest.raises(ProtocolError) as refused:
            window.check(env(seq), NOW)
        assert refused.value.code == "replayed_seq"
    assert window.last_seq == 3
    window.check(env(4), NOW)


def test_a_reused_nonce_is_refused_even_with_a_new_seq() -> None:
    window = ReplayWindow()
    reused = nonce()
    window.check(env(1, nonce_value=reused), NOW)
    with pytest.raises(ProtocolError) as refused:
        window.check(env(2, nonce_value=reused), NOW)
    assert refused.value.code == "nonce_reused"
    assert window.last_seq == 1


@pytest.mark.parametrize(("offset_ms", "words"), [(-301_000, "301.0 s behind"), (301_000, "301.0 s ahead of"), (-360_000, "360.0 s behind")])
def test_a_hello_from_a_clock_beyond_the_skew_is_refused_naming_the_offset(offset_ms: int, words: str) -> None:
    window = ReplayWindow(skew_ms=5 * 60 * 1000)
    with pytest.raises(ProtocolError) as refused:
        window.check(env(1, issued_at=NOW + offset_ms, kind="hello"), NOW)
    assert refused.value.code == "clock_skew"
    assert refused.value.reason == f"the device's clock is {words} the hub's (measured at hello); allowed ±300 s"
    assert (window.offset_ms, window.last_seq) == (None, -1)


@pytest.mark.parametrize("offset_ms", [-240_000, -30_001, 0, 30_001, 240_000])
def test_a_device_whose_clock_is_off_within_the_skew_keeps_working_with_30_s_ttls(offset_ms: int) -> None:
    """A device that cannot set its clock: every frame, hello included, with the agent's ttl."""
    window = ReplayWindow(skew_ms=5 * 60 * 1000)
    window.check(env(1, issued_at=NOW + offset_ms, kind="hello"), NOW)
    assert window.offset_ms == offset_ms
    for seq in range(2, 12):
        now = NOW + seq * 10_000
        window.check(env(seq, issued_at=now + offset_ms), now + 150)  # 150 ms in flight
    assert window.last_seq == 11


def test_issued_at_beyond_the_skew_is_refused_both_ways() -> None:
    window = ReplayWindow(skew_ms=5 * 60 * 1000)
    window.check(env(1, kind="hello"), NOW)
    window.check(env(2, issued_at=NOW - 299_000, ttl_ms=600_000), NOW)
    with pytest.raises(ProtocolError) as past:
        window.check(env(3, issued_at=NOW - 301_000, ttl_ms=600_000), NOW)
    assert past.value.code == "clock_skew"
    assert past.value.reason == (
        "issued_at is -301.0 s from the hub's clock and -301.0 s from it corrected by this session's measured offset (+0.0 s); allowed ±300 s"
    )
    with pytest.raises(ProtocolError) as future:
        window.check(env(4, issued_at=NOW + 301_000), NOW)
    assert future.value.code == "clock_skew"
    assert window.last_seq == 2


def test_a_frame_drifting_beyond_the_skew_from_the_measured_offset_is_refused() -> None:
    window = ReplayWindow(skew_ms=5 * 60 * 1000)
    window.check(env(1, issued_at=NOW - 240_000, kind="hello"), NOW)
    # 4 min slow at hello, now 9 min slow: beyond the skew both from the hub's clock and from the measured offset.
    with pytest.raises(ProtocolError, match=r"issued_at is -541\.0 s from the hub's clock and -301\.0 s") as refused:
        window.check(env(2, issued_at=NOW - 541_000, ttl_ms=3_600_000), NOW)
    assert refused.value.code == "clock_skew"
    # Within the skew of the hub's own clock it passes (expiry and skew are judged at receipt too).
    window.check(env(3, issued_at=NOW + 100_000), NOW)


def test_an_expired_ttl_is_refused() -> None:
    window = ReplayWindow()
    window.check(env(1, kind="hello"), NOW)
    with pytest.raises(ProtocolError) as refused:
        window.check(env(2, issued_at=NOW - 331_000, ttl_ms=30_000), NOW)
    assert refused.value.code == "expired"
    assert refused.value.reason == "frame expired 1.0 s ago (ttl_ms 30000, allowing the ±300 s skew)"
    assert window.last_seq == 1


def test_expiry_is_judged_at_receipt_allowing_the_skew() -> None:
    """ARCHITECTURE §9: a frame delayed past its ttl by less than the skew is still accepted."""
    window = ReplayWindow()
    window.check(env(1, kind="hello"), NOW)
    window.check(env(2, issued_at=NOW - 60_000, ttl_ms=30_000), NOW)
    window.check(env(3, issued_at=NOW - 299_000, ttl_ms=30_000), NOW)
    assert window.last_seq == 3


def test_nonces_are_forgotten_once_their_frames_expire() -> None:
    window = ReplayWindow(skew_ms=1_000)
    for seq in range(1, 101):
        window.check(env(seq, issued_at=NOW, ttl_ms=1_000), NOW)
    assert len(window) == 100
    later = NOW + 2_500
    window.check(env(101, issued_at=later, ttl_ms=1_000), later)
    assert len(window) == 1


def test_the_nonce_cache_is_bounded() -> None:
    window = ReplayWindow(max_nonces=10)
    for seq in range(1, 51):
        window.check(env(seq), NOW)
    assert len(window) == 10


def test_hub_and_agent_sign_the_same_bytes() -> None:
    """The hub never imports firmware/: its copy of the payload must stay byte-identical."""
    from firmware.agent.core import signing
    from hub.mesh.protocol import signing_payload

    frame = {"v": 1, "type": "reset", "id": "r-1", "issued_at": NOW, "body": {"kind": "provision.reset", "ünï": [1, 2.5, None]}}
    assert signing_payload(frame, "sensor-1") == signing.signing_payload(frame, "sensor-1")
