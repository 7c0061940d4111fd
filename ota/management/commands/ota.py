"""`manage.py ota keygen|trust-key|sign|upload` (ARCHITECTURE §9.1).

`keygen` and `sign --key` work on a build machine with no hub database behind them: an
off-hub key signs releases in CI, and the hub is told to trust its public half once with
`trust-key`. Without `--key`, `sign` uses the hub's own release key."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from audit.services import Actor, Decision, record
from hub.models import SigningKeyKind, TrustedReleaseKey
from hub.scopes import Scope
from hub.signing import ed25519_public_b64, signing_key
from ota import manifest, releases
from ota.manifest import ManifestRefused

ACTOR = Actor.system("manage.py")


def _timestamp(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"--expires-at {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _load_private(path: str) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--key {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CommandError(f"--key {path} is not an Ed25519 private key")
    return key


class Command(BaseCommand):
    help = "Firmware release tools: make an off-hub release key, trust one, sign a manifest, upload a release."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        keygen = sub.add_parser("keygen", help="write DIR/release.key (Ed25519 private key, PEM, 0600) and DIR/release.pub")
        keygen.add_argument("--out", required=True, metavar="DIR")
        trust = sub.add_parser("trust-key", help="accept manifests signed by this public key (PEM or raw base64)")
        trust.add_argument("public_key", metavar="FILE.pub")
        trust.add_argument("--name", default="", help="what the key is, for people")
        sign = sub.add_parser("sign", help="write the signed manifest document of an image")
        sign.add_argument("--image", required=True)
        sign.add_argument("--version", required=True)
        sign.add_argument("--device-type", required=True, help="T or T1,T2")
        sign.add_argument("--name", help="release name (default: the first device type followed by -fw)")
        sign.add_argument("--security-counter", type=int, default=0)
        sign.add_argument("--min-agent-version", default="")
        sign.add_argument("--migrations", default="", help="comma-separated migration flags")
        sign.add_argument("--expires-at", help="ISO 8601 (default: in 365 days; a past time makes a frozen release, for tests)")
        sign.add_argument("--build-id", default="")
        sign.add_argument("--key", help="an Ed25519 private key PEM (default: the hub's release key)")
        sign.add_argument("--out", required=True, metavar="FILE.json")
        upload = sub.add_parser("upload", help="check and store a release, as POST /api/v1/ota/releases/ does")
        upload.add_argument("--manifest", required=True, metavar="FILE.json")
        upload.add_argument("--image", required=True)
        upload.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, "_" + options["subcommand"].replace("-", "_"))(options)

    def _keygen(self, options: dict[str, Any]) -> None:
        out = Path(options["out"])
        out.mkdir(parents=True, exist_ok=True)
        private, public = out / "release.key", out / "release.pub"
        if private.exists():
            raise CommandError(f"{private} exists already; keygen never overwrites a key")
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        self.stdout.write(f"wrote {private} (keep it off the hub) and {public}; key id {manifest.key_id(key.public_key())}")

    def _trust_key(self, options: dict[str, Any]) -> None:
        text = Path(options["public_key"]).read_bytes()
        try:
            loaded = serialization.load_pem_public_key(text) if b"BEGIN" in text else manifest.public_key_from_b64(text.decode().strip())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CommandError(f"{options['public_key']} is not an Ed25519 public key (PEM or raw base64): {exc}") from None
        if not isinstance(loaded, ed25519.Ed25519PublicKey):
            raise CommandError(f"{options['public_key']} is not an Ed25519 public key")
        key_id = manifest.key_id(loaded)
        try:
            TrustedReleaseKey.objects.create(key_id=key_id, public=ed25519_public_b64(loaded), name=options["name"], added_by=f"{ACTOR.type}:{ACTOR.id}")
        except IntegrityError:
            raise CommandError(f"key {key_id} is trusted already") from None
        record(ACTOR, "ota.key.trust", Decision.ALLOW, scope=Scope.OTA, target_type="release_key", target_id=key_id, details={"name": options["name"]})
        self.stdout.write(f"trusted release key {key_id}; devices enrolled from now on receive it")

    def _sign(self, options: dict[str, Any]) -> None:
        image = Path(options["image"])
        digest, size = hashlib.sha256(), 0
        with image.open("rb") as handle:
            while chunk := handle.read(1 << 16):
                digest.update(chunk)
                size += len(chunk)
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = _timestamp(options["expires_at"]) if options["expires_at"] else now + timedelta(days=365)
        types = [t.strip() for t in options["device_type"].split(",") if t.strip()]
        raw = {
            "name": options["name"] or f"{types[0] if types else 'firmware'}-fw",
            "version": options["version"],
            "build_id": options["build_id"],
            "sha256": digest.hexdigest(),
            "size": size,
            "device_types": types,
            "security_counter": options["security_counter"],
            "created_at": manifest.format_timestamp(min(now, expires_at - timedelta(days=1))),  # a past expiry: created before it
            "expires_at": manifest.format_timestamp(expires_at),
            "min_agent_version": options["min_agent_version"],
            "migrations": [f for f in options["migrations"].split(",") if f],
        }
        try:
            parsed = manifest.Manifest.from_dict(raw)
        except ManifestRefused as refused:
            raise CommandError(f"{refused.field}: {refused.reason}") from None
        key = _load_private(options["key"]) if options["key"] else signing_key(SigningKeyKind.RELEASE_SIGNING)
        document = manifest.sign(parsed, key).document()
        Path(options["out"]).write_text(json.dumps(document, indent=2) + "\n")
        self.stdout.write(f"wrote {options['out']}: {raw['name']} {raw['version']}, {size:,} bytes, key {document['key_id']}")

    def _upload(self, options: dict[str, Any]) -> None:
        try:
            document = Path(options["manifest"]).read_bytes()
        except OSError as exc:
            raise CommandError(f"--manifest: {exc}") from None
        with Path(options["image"]).open("rb") as image:
            try:
                release = releases.store_release(ACTOR, releases.Upload(document, image, Path(options["image"]).name))
            except ManifestRefused as refused:
                raise CommandError(f"{refused.code}: {refused.field}: {refused.reason}") from None
        summary = {"id": release.pk, "version": release.version, "sha256": release.sha256, "size": release.size}
        self.stdout.write(json.dumps(summary) if options["json"] else f"stored release {release} (id {release.pk}, {release.size:,} bytes)")
