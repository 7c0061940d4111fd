"""Signed release manifests (ota/manifest.py), alone: form, canonical bytes, signature,
every refusal code with its reason, streaming image checks, semver order."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from ota import manifest as m

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
IMAGE = b'{"meshhub_sim": 1, "version": "1.2.0", "behaviour": "healthy"}\n' + bytes(range(256)) * 40


def raw_manifest(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "thermostat-fw",
        "version": "1.2.0",
        "build_id": "ci-4711",
        "sha256": hashlib.sha256(IMAGE).hexdigest(),
        "size": len(IMAGE),
        "device_types": ["thermostat"],
        "security_counter": 3,
        "created_at": "2026-12-01T00:00:00Z",
        "expires_at": "2027-12-01T00:00:00Z",
        "min_agent_version": "0.3.0",
        "migrations": [],
    }
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def signed_document(key: ed25519.Ed25519PrivateKey, **changes: Any) -> dict[str, Any]:
    return m.sign(m.Manifest.from_dict(raw_manifest(**changes)), key).document()


def test_a_signed_document_round_trips_and_verifies(key: ed25519.Ed25519PrivateKey) -> None:
    document = signed_document(key)
    parsed = m.parse_document(json.dumps(document))
    m.verify(parsed, {m.key_id(key.public_key()): key.public_key()})
    assert parsed.manifest.to_dict() == raw_manifest()
    assert parsed.document() == document


def test_the_canonical_bytes_do_not_depend_on_key_order_or_spacing(key: ed25519.Ed25519PrivateKey) -> None:
    document = signed_document(key)
    shuffled = {"key_id": document["key_id"], "signature": document["signature"], "manifest": dict(reversed(list(document["manifest"].items())))}
    parsed = m.parse_document(json.dumps(shuffled, indent=4))
    m.verify(parsed, {m.key_id(key.public_key()): key.public_key()})


def test_a_manifest_is_small_enough_for_an_mcu(key: ed25519.Ed25519PrivateKey) -> None:
    canonical = m.Manifest.from_dict(raw_manifest()).canonical_bytes()
    assert len(canonical) < 400  # the module docstring says about 330
    assert len(json.dumps(signed_document(key))) < 600


@pytest.mark.parametrize(
    "name", ["name", "version", "sha256", "size", "device_types", "security_counter", "created_at", "expires_at", "min_agent_version", "build_id"]
)
def test_changing_any_field_after_signing_breaks_the_signature(key: ed25519.Ed25519PrivateKey, name: str) -> None:
    document = signed_document(key)
    changed = {
        "name": "other-fw",
        "version": "1.2.1",
        "sha256": "0" * 64,
        "size": 5,
        "device_types": ["relay"],
        "security_counter": 9,
        "created_at": "2026-12-02T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z",
        "min_agent_version": "0.1.0",
        "build_id": "evil",
    }
    document["manifest"][name] = changed[name]
    with pytest.raises(m.ManifestRefused) as refused:
        m.verify(m.parse_document(document), {m.key_id(key.public_key()): key.public_key()})
    assert (refused.value.code, refused.value.field) == ("bad_signature", "signature")


def test_an_untrusted_key_is_refused_by_its_id(key: ed25519.Ed25519PrivateKey) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    parsed = m.parse_document(signed_document(other))
    with pytest.raises(m.ManifestRefused) as refused:
        m.verify(parsed, {m.key_id(key.public_key()): key.public_key()})
    assert refused.value.code == "untrusted_key" and m.key_id(other.public_key()) in refused.value.reason


def test_a_key_id_claimed_for_a_signature_by_another_key_is_a_bad_signature(key: ed25519.Ed25519PrivateKey) -> None:
    document = signed_document(ed25519.Ed25519PrivateKey.generate())
    document["key_id"] = m.key_id(key.public_key())
    with pytest.raises(m.ManifestRefused) as refused:
        m.verify(m.parse_document(document), {m.key_id(key.public_key()): key.public_key()})
    assert refused.value.code == "bad_signature"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"version": "1.2"}, "version", "not a semantic version"),
        ({"version": "01.2.0"}, "version", "not a semantic version"),
        ({"sha256": "ABC"}, "sha256", "wrong form"),
        ({"size": 0}, "size", "between 1 and"),
        ({"size": "12"}, "size", "must be an integer"),
        ({"size": True}, "size", "must be an integer"),
        ({"device_types": []}, "device_types", "list of 1 to 32"),
        ({"device_types": ["Thermo Stat"]}, "device_types[0]", "not a slug"),
        ({"device_types": ["relay", "relay"]}, "device_types", "twice"),
        ({"security_counter": -1}, "security_counter", "between 0 and"),
        ({"created_at": "2026-12-01 00:00"}, "created_at", "ISO 8601"),
        ({"expires_at": "2026-11-01T00:00:00Z"}, "expires_at", "after created_at"),
        ({"min_agent_version": "latest"}, "min_agent_version", "not a semantic version"),
        ({"colour": "blue"}, "colour", "not a manifest field"),
        ({"name": ""}, "name", "non-empty"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_field(changes: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(m.ManifestRefused) as refused:
        m.Manifest.from_dict(raw_manifest(**changes))
    assert (refused.value.code, refused.value.field) == ("malformed", field)
    assert words in refused.value.reason


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (b"not json", "manifest"),
        (b"[]", "manifest"),
        (json.dumps({"manifest": raw_manifest(), "key_id": "00" * 8}).encode(), "signature"),
        (json.dumps({"manifest": raw_manifest(), "signature": "AAAA", "key_id": "00" * 8}).encode(), "signature"),
        (json.dumps({"manifest": raw_manifest(), "signature": "A" * 86 + "==", "key_id": "XYZ"}).encode(), "key_id"),
        (json.dumps({"manifest": raw_manifest(), "signature": "A" * 86 + "==", "key_id": "00" * 8, "extra": 1}).encode(), "extra"),
        (b" " * (m.MAX_DOCUMENT_BYTES + 1), "manifest"),
    ],
)
def test_a_malformed_document_is_refused_naming_the_field(document: bytes, field: str) -> None:
    with pytest.raises(m.ManifestRefused) as refused:
        m.parse_document(document)
    assert (refused.value.code, refused.value.field) == ("malformed", field)


def test_expired_incompatible_and_rollback_refusals() -> None:
    manifest = m.Manifest.from_dict(raw_manifest())
    m.check_not_expired(manifest, NOW)
    with pytest.raises(m.ManifestRefused, match="expired: expires_at: the manifest expired at 2027-12-01T00:00:00Z"):
        m.check_not_expired(manifest, datetime(2027, 12, 1, tzinfo=UTC))
    m.check_compatible(manifest, "thermostat")
    with pytest.raises(m.ManifestRefused, match="incompatible: device_types: the release is for thermostat, not relay"):
        m.check_compatible(manifest, "relay")
    m.check_agent_version(manifest, "0.3.0")
    with pytest.raises(m.ManifestRefused, match=re.escape("needs agent 0.3.0 or later, the device runs 0.3.0-rc.1")):
        m.check_agent_version(manifest, "0.3.0-rc.1")
    m.check_security_counter(manifest, 3)
    with pytest.raises(m.ManifestRefused, match="rollback: security_counter: security counter 3 is lower than 4"):
        m.check_security_counter(manifest, 4)


def test_the_image_check_stops_endless_data_at_the_first_byte_too_many() -> None:
    check = m.ImageCheck(m.Manifest.from_dict(raw_manifest()))
    check.update(IMAGE)
    with pytest.raises(m.ManifestRefused, match=f"longer than the {len(IMAGE):,} bytes"):
        check.update(b"x")


def test_the_image_check_refuses_short_corrupt_and_mixed_images() -> None:
    manifest = m.Manifest.from_dict(raw_manifest())
    assert m.ImageCheck(manifest).feed([IMAGE[:100], IMAGE[100:]]) is None
    good = m.ImageCheck(manifest)
    good.feed([IMAGE])
    assert good.finish() == manifest.sha256
    short = m.ImageCheck(manifest)
    short.feed([IMAGE[:-1]])
    with pytest.raises(m.ManifestRefused, match=f"size_mismatch: image: the image is {len(IMAGE) - 1:,} bytes, the manifest says {len(IMAGE):,}"):
        short.finish()
    corrupt = m.ImageCheck(manifest)
    corrupt.feed([IMAGE[:-1] + b"!"])
    with pytest.raises(m.ManifestRefused) as refused:
        corrupt.finish()
    assert refused.value.code == "hash_mismatch"
    other = IMAGE.replace(b"1.2.0", b"1.1.0")
    mixed = m.ImageCheck(manifest, {hashlib.sha256(other).hexdigest(): "thermostat-fw 1.1.0"})
    mixed.feed([other])
    with pytest.raises(m.ManifestRefused, match=re.escape("mix_and_match: image: the image is the one of release thermostat-fw 1.1.0")):
        mixed.finish()


@pytest.mark.parametrize(
    "ordered",
    [
        [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ]
    ],
)
def test_versions_order_by_semver_precedence(ordered: list[str]) -> None:
    parsed = [m.Version.parse(v) for v in ordered]
    assert sorted(parsed, key=m.Version.key) == parsed
    assert [str(v) for v in parsed] == ordered


identifier = st.one_of(st.integers(0, 99).map(str), st.from_regex(r"[A-Za-z-][0-9A-Za-z-]{0,5}", fullmatch=True))
versions = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + ("-" + ".".join(pre) if pre else ""),
    st.integers(0, 999),
    st.integers(0, 999),
    st.integers(0, 999),
    st.lists(identifier, max_size=3),
)


@given(versions, versions)
def test_version_order_is_total_and_agrees_with_equality(a: str, b: str) -> None:
    va, vb = m.Version.parse(a), m.Version.parse(b)
    assert (va < vb) + (vb < va) + (va.key() == vb.key()) == 1


@given(
    st.fixed_dictionaries(
        {
            "version": versions,
            "size": st.integers(1, 2**40),
            "security_counter": st.integers(0, 2**31 - 1),
            "device_types": st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), min_size=1, max_size=5, unique=True),
        }
    )
)
def test_canonical_form_round_trips(changes: dict[str, Any]) -> None:
    manifest = m.Manifest.from_dict(raw_manifest(**changes))
    again = m.Manifest.from_dict(json.loads(manifest.canonical_bytes()))
    assert again == manifest and again.canonical_bytes() == manifest.canonical_bytes()


def test_timestamps_keep_their_fraction() -> None:
    when = datetime(2026, 12, 5, 12, 0, 1, 250000, tzinfo=UTC)
    assert m.format_timestamp(when) == "2026-12-05T12:00:01.25Z"
    manifest = m.Manifest.from_dict(raw_manifest(created_at=m.format_timestamp(when), expires_at=m.format_timestamp(when + timedelta(days=1))))
    assert manifest.created_at == when
