"""Accepting a firmware release: the signed manifest checked, the image streamed to the
firmware storage while it is hashed and counted, the row written only when every check
passed. The API, `manage.py ota upload`, the admin and the page all come here.

Order of the checks, cheapest and most telling first: the document's form, the key and the
signature, expiry (freeze), the release not already there, compatibility with the fleet,
the security counter (rollback), the size limit; then the image as it streams: never more
bytes than the manifest says (endless data), then its hash (short, corrupt, or the image
of another release: mix-and-match). A refusal deletes what was written to storage, writes
no row, and is audited as a deny with its code and reason; a storage error (disk full) is
refused the same way with code `storage`.
"""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from typing import IO, Any, cast

from cryptography.hazmat.primitives.asymmetric import ed25519
from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.utils import timezone

from audit.services import Actor, Decision, record
from devices.models import Device
from firmware.agent.core import image as sim_image
from hub.scopes import Scope
from hub.signing import release_public_keys
from ota import manifest
from ota.manifest import ManifestRefused
from ota.models import FirmwareRelease

logger = logging.getLogger("meshhub.ota")
READ_SIZE = 64 * 1024


def firmware_storage() -> Storage:
    return storages["firmware"]


def trusted_keys() -> dict[str, ed25519.Ed25519PublicKey]:
    """key id → public key, for every release key the hub accepts."""
    keys = (manifest.public_key_from_b64(public) for public in release_public_keys())
    return {manifest.key_id(key): key for key in keys}


class _CheckedStream(io.RawIOBase):
    """The upload as storage reads it: every byte goes through the manifest's ImageCheck
    first (which stops at the first byte too many) and the first line is kept for the
    simulated image header."""

    def __init__(self, source: IO[bytes], check: manifest.ImageCheck) -> None:
        self.source = source
        self.check = check
        self.head = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.source.read(READ_SIZE if size is None or size < 0 else size)
        self.check.update(data)
        if len(self.head) < sim_image.MAX_HEADER:
            self.head += data[: sim_image.MAX_HEADER - len(self.head)]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class Upload:
    document: bytes | str | dict[str, Any]
    image: IO[bytes]
    image_name: str = "image"


def _refuse(actor: Actor, refused: ManifestRefused, details: dict[str, Any]) -> ManifestRefused:
    record(
        actor,
        "ota.release.upload",
        Decision.DENY,
        scope=Scope.OTA,
        target_type="release",
        target_id=str(details.get("release", ""))[:150],
        reason=f"{refused.code}: {refused.reason}"[:500],
        details={"code": refused.code, "field": refused.field, **details},
    )
    return refused


def _check_manifest(signed: manifest.SignedManifest) -> None:
    m = signed.manifest
    manifest.verify(signed, trusted_keys())
    manifest.check_not_expired(m, timezone.now())
    if FirmwareRelease.objects.filter(name=m.name, version=m.version).exists():
        raise ManifestRefused("duplicate", "version", f"release {m.name} {m.version} exists already; a new build needs a new version")
    known_types = set(Device.objects.filter(device_type__in=m.device_types).values_list("device_type", flat=True).distinct())
    if not known_types:
        fleet = sorted(set(Device.objects.values_list("device_type", flat=True).distinct()))
        raise ManifestRefused(
            "incompatible", "device_types", f"no device in the fleet is of type {', '.join(m.device_types)} (the fleet has: {', '.join(fleet) or 'no devices'})"
        )
    highest = _highest_security_counter(m.device_types)
    manifest.check_security_counter(m, highest)
    if m.size > settings.OTA_MAX_IMAGE_BYTES:
        raise ManifestRefused(
            "too_large", "size", f"the image is {m.size:,} bytes, more than this hub accepts ({settings.OTA_MAX_IMAGE_BYTES:,}, MESHHUB_OTA_MAX_IMAGE_BYTES)"
        )


def _highest_security_counter(device_types: tuple[str, ...]) -> int:
    """The highest counter among stored releases sharing a device type with these."""
    highest = 0
    for release in FirmwareRelease.objects.only("device_types", "security_counter").order_by("-security_counter").iterator():
        if set(release.device_types) & set(device_types):
            highest = max(highest, release.security_counter)
            break
    return highest


def store_release(actor: Actor, upload: Upload) -> FirmwareRelease:
    """Check and store a release; raises ManifestRefused (already audited) and stores nothing."""
    details: dict[str, Any] = {}
    try:
        signed = manifest.parse_document(upload.document)
    except ManifestRefused as refused:
        raise _refuse(actor, refused, details) from None
    m = signed.manifest
    details = {"release": f"{m.name} {m.version}", "key_id": signed.key_id, "sha256": m.sha256, "size": m.size}
    try:
        _check_manifest(signed)
    except ManifestRefused as refused:
        raise _refuse(actor, refused, details) from None

    storage = firmware_storage()
    others = {sha: f"{name} {version}" for sha, name, version in FirmwareRelease.objects.values_list("sha256", "name", "version")}
    check = manifest.ImageCheck(m, others)
    stream = _CheckedStream(upload.image, check)
    # Named before the save: a save that fails half-way leaves its partial file under this
    # name (FileSystemStorage writes in place), and it must go too.
    saved = f"releases/{m.name}-{m.version}-{uuid.uuid4().hex[:12]}.img"
    try:
        saved = storage.save(saved, File(cast(IO[bytes], stream), name=upload.image_name))
        check.finish()
        header = sim_image.read_header(stream.head)
        if header is not None and header["version"] != m.version:
            raise ManifestRefused("mix_and_match", "image", f"the image is version {header['version']}, the manifest is for {m.version}")
        with transaction.atomic():
            release = FirmwareRelease.objects.create(
                name=m.name,
                version=m.version,
                build_id=m.build_id,
                sha256=m.sha256,
                size=m.size,
                device_types=list(m.device_types),
                min_agent_version=m.min_agent_version,
                migrations=list(m.migrations),
                security_counter=m.security_counter,
                manifest_created_at=m.created_at,
                expires_at=m.expires_at,
                document=signed.document(),
                key_id=signed.key_id,
                blob=saved,
                uploaded_by=f"{actor.type}:{actor.id}",
            )
            record(actor, "ota.release.upload", Decision.ALLOW, scope=Scope.OTA, target_type="release", target_id=str(release.pk), details=details)
    except ManifestRefused as refused:
        _delete(storage, saved)
        raise _refuse(actor, refused, details) from None
    except sim_image.ImageError as exc:
        _delete(storage, saved)
        raise _refuse(actor, ManifestRefused("malformed", "image", str(exc)), details) from None
    except OSError as exc:
        _delete(storage, saved)
        logger.error("storing release %s %s failed: %s", m.name, m.version, exc)
        raise _refuse(actor, ManifestRefused("storage", "image", f"the image could not be stored: {exc.strerror or exc}"), details) from None
    except BaseException:
        _delete(storage, saved)
        raise
    return release


def _delete(storage: Storage, name: str) -> None:
    """Remove a refused or half-written image."""
    try:
        if storage.exists(name):
            storage.delete(name)
    except OSError as exc:  # the refusal stands; the orphan is logged for the operator
        logger.error("could not delete refused image %s: %s", name, exc)
