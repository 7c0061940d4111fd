"""Signed release manifests (no Django: `ota sign` on a build machine uses it too).

A manifest says what an image is (name, semver version, build id, sha256, size), where it
may run (device types, minimum agent version, migration flags), how old a release it
replaces may be (`security_counter`, anti-rollback) and how long it may be installed
(`created_at`, `expires_at`, against freeze attacks). Its canonical bytes (sorted keys,
no spaces, ASCII) are signed with Ed25519; the document `ota sign` writes is

    {"manifest": {...}, "signature": "<base64 of 64 bytes>", "key_id": "<16 hex>"}

A typical manifest is about 330 canonical bytes and the signature 64 (88 in base64): an
MCU verifies it with one Ed25519 check over a buffer it already holds.

Every refusal is a `ManifestRefused(code, field, reason)` with a code of ARCHITECTURE
§9.1: `untrusted_key`, `bad_signature`, `hash_mismatch`, `size_mismatch`, `expired`,
`rollback`, `incompatible`, `mix_and_match`, `malformed`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MAX_DOCUMENT_BYTES = 16 * 1024
SEMVER = re.compile(r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,48}[a-z0-9])?$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z$")
CODES = ("untrusted_key", "bad_signature", "hash_mismatch", "size_mismatch", "expired", "rollback", "incompatible", "mix_and_match", "malformed")
# Refusals of the hub's upload path beyond the manifest's own (added to §9.1's list, not renamed).
UPLOAD_CODES = ("duplicate", "too_large", "storage")


class ManifestRefused(Exception):
    def __init__(self, code: str, field: str, reason: str) -> None:
        assert code in CODES or code in UPLOAD_CODES, code
        super().__init__(f"{code}: {field}: {reason}")
        self.code = code
        self.field = field
        self.reason = reason

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason, "code": self.code}


def malformed(field: str, reason: str) -> ManifestRefused:
    return ManifestRefused("malformed", field, reason)


@dataclass(frozen=True, order=False)
class Version:
    """A semantic version; ordered by semver precedence (a prerelease sorts before its release)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, field: str = "version") -> Version:
        match = SEMVER.match(text) if isinstance(text, str) else None
        if not match:
            raise malformed(field, f"{text!r} is not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE]")
        major, minor, patch, pre = match.groups()
        if pre and any(p.isdigit() and len(p) > 1 and p.startswith("0") for p in pre.split(".")):
            raise malformed(field, f"{text!r}: a numeric prerelease identifier has no leading zero")
        return cls(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else ())

    def key(self) -> tuple[Any, ...]:
        # A release (no prerelease) sorts after every prerelease of it; numeric identifiers
        # sort numerically and before alphanumeric ones (semver §11).
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Version) -> bool:
        return self.key() <= other.key()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return core + ("-" + ".".join(self.prerelease) if self.prerelease else "")


def _timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not TIMESTAMP.match(value):
        raise malformed(name, "must be an ISO 8601 UTC time such as 2027-01-31T12:00:00Z")
    try:
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise malformed(name, f"{value!r} is not a valid time") from None


def format_timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (f".{when.microsecond:06d}".rstrip("0") if when.microsecond else "") + "Z"


def _text(raw: Mapping[str, Any], name: str, pattern: re.Pattern[str] | None = None, max_length: int = 100, required: bool = True) -> str:
    value = raw.get(name, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise malformed(name, "must be a non-empty string" if required else "must be a string")
    if len(value) > max_length:
        raise malformed(name, f"must be at most {max_length} characters")
    if value and pattern is not None and not pattern.match(value):
        raise malformed(name, f"{value!r} has the wrong form")
    return value


def _integer(raw: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(name, "must be an integer")
    if not low <= value <= high:
        raise malformed(name, f"must be between {low} and {high}")
    return value


def _slugs(raw: Mapping[str, Any], name: str, required: bool) -> tuple[str, ...]:
    value = raw.get(name, [] if not required else None)
    if not isinstance(value, list) or (required and not value) or len(value) > 32:
        raise malformed(name, "must be a list of 1 to 32 slugs" if required else "must be a list of at most 32 slugs")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not SLUG.match(item):
            raise malformed(f"{name}[{i}]", f"{item!r} is not a slug (lowercase letters, digits, - and _)")
    if len(set(value)) != len(value):
        raise malformed(name, "lists an entry twice")
    return tuple(value)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    build_id: str
    sha256: str
    size: int
    device_types: tuple[str, ...]
    security_counter: int
    created_at: datetime
    expires_at: datetime
    min_agent_version: str = ""
    migrations: tuple[str, ...] = field(default=())

    FIELDS = (
        "name",
        "version",
        "build_id",
        "sha256",
        "size",
        "device_types",
        "security_counter",
        "created_at",
        "expires_at",
        "min_agent_version",
        "migrations",
    )
    REQUIRED = ("name", "version", "sha256", "size", "device_types", "created_at", "expires_at")

    @classmethod
    def from_dict(cls, raw: Any) -> Manifest:
        if not isinstance(raw, dict):
            raise malformed("manifest", "must be a JSON object")
        unknown = sorted(set(raw) - set(cls.FIELDS))
        if unknown:
            raise malformed(unknown[0], "is not a manifest field")
        missing = [name for name in cls.REQUIRED if name not in raw]
        if missing:
            raise malformed(missing[0], "is required")
        version = _text(raw, "version", max_length=64)
        Version.parse(version)
        min_agent = _text(raw, "min_agent_version", max_length=64, required=False)
        if min_agent:
            Version.parse(min_agent, "min_agent_version")
        created_at = _timestamp(raw["created_at"], "created_at")
        expires_at = _timestamp(raw["expires_at"], "expires_at")
        if expires_at <= created_at:
            raise malformed("expires_at", "must be after created_at")
        return cls(
            name=_text(raw, "name", SLUG, 50),
            version=version,
            build_id=_text(raw, "build_id", max_length=100, required=False),
            sha256=_text(raw, "sha256", SHA256_HEX, 64),
            size=_integer(raw, "size", 1, 2**40),
            device_types=_slugs(raw, "device_types", required=True),
            security_counter=_integer(raw, "security_counter", 0, 2**31 - 1) if "security_counter" in raw else 0,
            created_at=created_at,
            expires_at=expires_at,
            min_agent_version=min_agent,
            migrations=_slugs(raw, "migrations", required=False),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "build_id": self.build_id,
            "sha256": self.sha256,
            "size": self.size,
            "device_types": list(self.device_types),
            "security_counter": self.security_counter,
            "created_at": format_timestamp(self.created_at),
            "expires_at": format_timestamp(self.expires_at),
            "min_agent_version": self.min_agent_version,
            "migrations": list(self.migrations),
        }

    def canonical_bytes(self) -> bytes:
        return canonical(self.to_dict())

    @property
    def semver(self) -> Version:
        return Version.parse(self.version)


def canonical(value: Any) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 of the raw 32-byte public key, hex: names a key in a document."""
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def public_key_from_b64(text: str) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


@dataclass(frozen=True)
class SignedManifest:
    manifest: Manifest
    signature: bytes
    key_id: str

    def document(self) -> dict[str, Any]:
        return {"manifest": self.manifest.to_dict(), "signature": base64.b64encode(self.signature).decode(), "key_id": self.key_id}


def sign(manifest: Manifest, private_key: ed25519.Ed25519PrivateKey) -> SignedManifest:
    return SignedManifest(manifest, private_key.sign(manifest.canonical_bytes()), key_id(private_key.public_key()))


def parse_document(data: bytes | str | Mapping[str, Any]) -> SignedManifest:
    """The document `ota sign` wrote, checked for form only (verify() checks the signature).
    The signature covers the canonical form of the manifest as given, so a document whose
    manifest was re-serialised (other key order, spacing) still verifies."""
    if isinstance(data, (bytes, str)):
        if len(data) > MAX_DOCUMENT_BYTES:
            raise malformed("manifest", f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            raw: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise malformed("manifest", f"not JSON: {exc}") from None
    else:
        raw = dict(data)
    if not isinstance(raw, dict):
        raise malformed("manifest", "the document must be a JSON object")
    unknown = sorted(set(raw) - {"manifest", "signature", "key_id"})
    if unknown:
        raise malformed(unknown[0], "is not a field of a signed manifest document (manifest, signature, key_id)")
    for name in ("manifest", "signature", "key_id"):
        if name not in raw:
            raise malformed(name, "is required")
    # Optional fields left out take their defaults; the signature covers the manifest with
    # them, so a document that leaves out what its signer included does not verify.
    manifest = Manifest.from_dict(raw["manifest"])
    try:
        signature = base64.b64decode(raw["signature"], validate=True) if isinstance(raw["signature"], str) else b""
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != 64:
        raise malformed("signature", "must be the base64 of a 64-byte Ed25519 signature")
    key = raw["key_id"]
    if not isinstance(key, str) or not re.fullmatch(r"[0-9a-f]{16}", key):
        raise malformed("key_id", "must be 16 lowercase hex digits")
    return SignedManifest(manifest, signature, key)


def verify(signed: SignedManifest, trusted: Mapping[str, ed25519.Ed25519PublicKey]) -> None:
    """The signature is by a trusted key and covers exactly this manifest."""
    public = trusted.get(signed.key_id)
    if public is None:
        raise ManifestRefused("untrusted_key", "key_id", f"key {signed.key_id} is not a release key this hub trusts (manage.py ota trust-key adds one)")
    try:
        public.verify(signed.signature, signed.manifest.canonical_bytes())
    except InvalidSignature:
        raise ManifestRefused("bad_signature", "signature", f"the signature does not match the manifest under key {signed.key_id}") from None


def check_not_expired(manifest: Manifest, now: datetime) -> None:
    if manifest.expires_at <= now:
        raise ManifestRefused("expired", "expires_at", f"the manifest expired at {format_timestamp(manifest.expires_at)} (a frozen or stale release)")


def check_compatible(manifest: Manifest, device_type: str) -> None:
    if device_type not in manifest.device_types:
        raise ManifestRefused("incompatible", "device_types", f"the release is for {', '.join(manifest.device_types)}, not {device_type}")


def check_agent_version(manifest: Manifest, agent_version: str) -> None:
    if manifest.min_agent_version and Version.parse(agent_version, "agent_version") < Version.parse(manifest.min_agent_version, "min_agent_version"):
        raise ManifestRefused(
            "incompatible", "min_agent_version", f"the release needs agent {manifest.min_agent_version} or later, the device runs {agent_version}"
        )


def check_security_counter(manifest: Manifest, highest: int) -> None:
    if manifest.security_counter < highest:
        raise ManifestRefused(
            "rollback",
            "security_counter",
            f"security counter {manifest.security_counter} is lower than {highest}, the highest already accepted for these device types",
        )


class ImageCheck:
    """Feed an image piece by piece: refuses as soon as it is longer than the manifest says
    (endless data), and at finish() when it is shorter or its hash differs. `others` maps the
    sha256 of other known releases to their names, so that an image of another release is
    told apart from a corrupt one (mix-and-match)."""

    def __init__(self, manifest: Manifest, others: Mapping[str, str] | None = None) -> None:
        self.manifest = manifest
        self.others = dict(others or {})
        self.size = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.manifest.size:
            raise ManifestRefused("size_mismatch", "image", f"the image is longer than the {self.manifest.size:,} bytes the manifest says")
        self._hash.update(chunk)

    def feed(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.update(chunk)

    def finish(self) -> str:
        digest = self._hash.hexdigest()
        if digest != self.manifest.sha256 and digest in self.others:
            raise ManifestRefused(
                "mix_and_match", "image", f"the image is the one of release {self.others[digest]}, not of {self.manifest.name} {self.manifest.version}"
            )
        if self.size != self.manifest.size:
            raise ManifestRefused("size_mismatch", "image", f"the image is {self.size:,} bytes, the manifest says {self.manifest.size:,}")
        if digest != self.manifest.sha256:
            raise ManifestRefused("hash_mismatch", "image", f"the image's sha256 is {digest}, the manifest says {self.manifest.sha256}")
        return digest
