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


def env(seq: int, issued_at: int = NOW, ttl_ms: int = 30_000, nonce_value: str | None = None) -> Envelope:
    return parse_envelope(frame(seq=seq, issued_at=issued_at, ttl_ms=ttl_ms, nonce=nonce_value or nonce()))


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


def test_issued_at_beyond_the_skew_is_refused_both_ways() -> None:
    window = ReplayWindow(skew_ms=5 * 60 * 1000)
    window.check(env(1, issued_at=NOW - 299_000, ttl_ms=600_000), NOW)
    with pytest.raises(ProtocolError, match=r"issued_at is -301\.0 s from the hub's clock; allowed ±300 s") as past:
        window.check(env(2, issued_at=NOW - 301_000, ttl_ms=600_000), NOW)
    assert past.value.code == "clock_skew"
    with pytest.raises(ProtocolError) as future:
        window.check(env(3, issued_at=NOW + 301_000), NOW)
    assert future.value.code == "clock_skew"


def test_an_expired_ttl_is_refused() -> None:
    window = ReplayWindow()
    with pytest.raises(ProtocolError) as refused:
        window.check(env(1, issued_at=NOW - 31_000, ttl_ms=30_000), NOW)
    assert refused.value.code == "expired"
    assert refused.value.reason == "frame expired 1.0 s ago (ttl_ms 30000)"


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
