"""Uploading firmware releases (issue #15 item 2; ARCHITECTURE §9.1): through the API and
`manage.py ota`, with real images (`firmware.simulate make-image`), real signatures (`ota
sign`, `ota keygen`) and the real storage. Every refusal: its code, field and reason,
nothing stored (no row, no file), a deny in the audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from audit.models import AuditEvent
from conftest import make_token_client
from firmware import simulate
from hub.signing import release_public_keys
from ota import releases
from ota.models import FirmwareRelease
from tests.factories import thermostat

pytestmark = pytest.mark.django_db

URL = "/api/v1/ota/releases/"


@pytest.fixture(autouse=True)
def _own_firmware_storage(settings: Any, tmp_path: Path) -> None:
    """Each test its own firmware storage, so "nothing stored" is checked on it alone."""
    settings.STORAGES = {
        **settings.STORAGES,
        "firmware": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "fw")}},
    }


@pytest.fixture
def fleet() -> None:
    thermostat("sensor-1")


@pytest.fixture
def ota_api(django_user_model: Any) -> APIClient:
    user = django_user_model.objects.create_user("olga", password="olga-Pass-123")
    return make_token_client(user, ["ota", "read-status"])[0]


def image(tmp_path: Path, version: str, behaviour: str = "healthy", size: int = 50_000) -> Path:
    out = tmp_path / f"fw-{version}-{behaviour}-{size}.img"
    assert simulate.main(["make-image", "--version", version, "--behaviour", behaviour, "--size", str(size), "--out", str(out)]) == 0
    return out


def sign(tmp_path: Path, img: Path, version: str, *extra: str) -> Path:
    out = tmp_path / f"manifest-{version}-{len(list(tmp_path.iterdir()))}.json"
    call_command("ota", "sign", "--image", str(img), "--version", version, "--device-type", "thermostat", "--out", str(out), *extra)
    return out


def upload(api: APIClient, manifest: Path | bytes, img: Path | bytes) -> Any:
    manifest_bytes = manifest.read_bytes() if isinstance(manifest, Path) else manifest
    image_bytes = img.read_bytes() if isinstance(img, Path) else img
    from django.core.files.uploadedfile import SimpleUploadedFile

    return api.post(
        URL,
        {"manifest": SimpleUploadedFile("manifest.json", manifest_bytes, "application/json"), "image": SimpleUploadedFile("fw.img", image_bytes)},
        format="multipart",
    )


def stored_files() -> list[str]:
    storage = releases.firmware_storage()
    return storage.listdir("releases")[1] if storage.exists("releases") else []


def assert_refused(response: Any, code: str, field: str, words: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert (body["code"], body["field"]) == (code, field), body
    assert words in body["reason"], body
    assert not FirmwareRelease.objects.filter(sha256__in=[]).exists()
    deny = AuditEvent.objects.filter(action="ota.release.upload", decision="deny").order_by("-seq").first()
    assert deny is not None and deny.details["code"] == code and deny.actor_id.endswith("/olga"), deny


def test_a_signed_release_is_stored_listed_and_audited(fleet: None, ota_api: APIClient, tmp_path: Path) -> None:
    img = image(tmp_path, "1.2.0")
    response = upload(ota_api, sign(tmp_path, img, "1.2.0", "--security-counter", "2"), img)
    assert response.status_code == 201, response.content
    body = response.json()
    release = FirmwareRelease.objects.get(pk=body["id"])
    assert body == {"id": release.pk, "version": "1.2.0", "sha256": release.sha256, "size": 50_000}
    assert releases.firmware_storage().open(release.blob).read() == img.read_bytes()
    listed = ota_api.get(URL).json()["results"]
    assert [(r["version"], r["device_types"], r["security_counter"], r["size"]) for r in listed] == [("1.2.0", ["thermostat"], 2, 50_000)]
    allow = AuditEvent.objects.get(action="ota.release.upload", decision="allow")
    assert allow.actor_id.endswith("/olga") and allow.target_id == str(release.pk)  # the token, and whose it is


REFUSALS = [
    "untrusted_key",
    "bad_signature",
    "hash_mismatch",
    "short",
    "endless",
    "expired",
    "rollback",
    "incompatible",
    "mix_hash",
    "mix_header",
    "malformed",
    "duplicate",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_every_refusal_names_its_reason_stores_nothing_and_is_audited(case: str, fleet: None, ota_api: APIClient, tmp_path: Path) -> None:
    good = image(tmp_path, "1.2.0")
    if case in ("rollback", "mix_hash", "duplicate"):
        earlier = image(tmp_path, "1.1.0")
        assert upload(ota_api, sign(tmp_path, earlier, "1.1.0", "--security-counter", "5"), earlier).status_code == 201
        if case == "duplicate":
            assert upload(ota_api, sign(tmp_path, good, "1.2.0", "--security-counter", "5"), good).status_code == 201
    before = (FirmwareRelease.objects.count(), sorted(stored_files()))

    if case == "untrusted_key":
        call_command("ota", "keygen", "--out", str(tmp_path / "ci"))
        response = upload(ota_api, sign(tmp_path, good, "1.2.0", "--key", str(tmp_path / "ci" / "release.key")), good)
        assert_refused(response, "untrusted_key", "key_id", "is not a release key this hub trusts")
    elif case == "bad_signature":
        document = json.loads(sign(tmp_path, good, "1.2.0").read_text())
        document["manifest"]["security_counter"] = 99
        assert_refused(upload(ota_api, json.dumps(document).encode(), good), "bad_signature", "signature", "does not match the manifest")
    elif case == "hash_mismatch":
        corrupt = bytearray(good.read_bytes())
        corrupt[-1] ^= 0xFF
        assert_refused(upload(ota_api, sign(tmp_path, good, "1.2.0"), bytes(corrupt)), "hash_mismatch", "image", "sha256")
    elif case == "short":
        assert_refused(
            upload(ota_api, sign(tmp_path, good, "1.2.0"), good.read_bytes()[:-10]), "size_mismatch", "image", "49,990 bytes, the manifest says 50,000"
        )
    elif case == "endless":
        assert_refused(
            upload(ota_api, sign(tmp_path, good, "1.2.0"), good.read_bytes() + b"\0" * 100_000), "size_mismatch", "image", "longer than the 50,000 bytes"
        )
    elif case == "expired":
        assert_refused(
            upload(ota_api, sign(tmp_path, good, "1.2.0", "--expires-at", "2026-01-01T00:00:00Z"), good), "expired", "expires_at", "expired at 2026-01-01"
        )
    elif case == "rollback":
        assert_refused(upload(ota_api, sign(tmp_path, good, "1.2.0", "--security-counter", "4"), good), "rollback", "security_counter", "4 is lower than 5")
    elif case == "incompatible":
        out = tmp_path / "relay.json"
        call_command("ota", "sign", "--image", str(good), "--version", "1.2.0", "--device-type", "relay,dimmer", "--out", str(out))
        assert_refused(
            upload(ota_api, out, good), "incompatible", "device_types", "no device in the fleet is of type relay, dimmer (the fleet has: thermostat)"
        )
    elif case == "mix_hash":
        earlier = image(tmp_path, "1.1.0")
        response = upload(ota_api, sign(tmp_path, good, "1.2.0", "--security-counter", "5"), earlier)
        assert_refused(response, "mix_and_match", "image", "the image is the one of release thermostat-fw 1.1.0")
    elif case == "mix_header":
        # A manifest signed over an image that says it is another version.
        other = image(tmp_path, "1.3.0")
        assert_refused(
            upload(ota_api, sign(tmp_path, other, "1.4.0"), other), "mix_and_match", "image", "the image is version 1.3.0, the manifest is for 1.4.0"
        )
    elif case == "malformed":
        assert_refused(upload(ota_api, b'{"manifest": {"name": "x"}}', good), "malformed", "signature", "is required")
    elif case == "duplicate":
        assert_refused(upload(ota_api, sign(tmp_path, good, "1.2.0", "--security-counter", "5"), good), "duplicate", "version", "exists already")

    assert (FirmwareRelease.objects.count(), sorted(stored_files())) == before


def test_a_missing_part_or_a_token_without_the_ota_scope_is_refused(fleet: None, ota_api: APIClient, alice_api: APIClient, tmp_path: Path) -> None:
    good = image(tmp_path, "1.2.0")
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = ota_api.post(URL, {"manifest": SimpleUploadedFile("m.json", sign(tmp_path, good, "1.2.0").read_bytes())}, format="multipart")
    assert response.status_code == 400 and response.json()["field"] == "image"
    forbidden = upload(alice_api, sign(tmp_path, good, "1.2.0"), good)
    assert forbidden.status_code == 403
    assert AuditEvent.objects.filter(action="api.ota-release.create", decision="deny", reason__contains="missing scope 'ota'").exists()
    assert FirmwareRelease.objects.count() == 0 and stored_files() == []


def test_an_upload_past_the_size_limit_is_refused_while_it_is_parsed(fleet: None, ota_api: APIClient, tmp_path: Path, settings: Any) -> None:
    settings.OTA_MAX_IMAGE_BYTES = 40_000
    good = image(tmp_path, "1.2.0")
    assert_refused(upload(ota_api, sign(tmp_path, good, "1.2.0"), good), "too_large", "size", "more than this hub accepts (40,000")
    settings.OTA_MAX_IMAGE_BYTES = 1_000  # the handler stops at the limit plus 64 KiB for the manifest part
    big = image(tmp_path, "1.2.0", size=200_000)
    assert_refused(upload(ota_api, sign(tmp_path, big, "1.2.0"), big), "too_large", "image", "the upload is larger than this hub accepts")
    assert stored_files() == []


def test_an_off_hub_key_signs_once_the_hub_trusts_it_and_devices_are_given_it(fleet: None, ota_api: APIClient, tmp_path: Path) -> None:
    call_command("ota", "keygen", "--out", str(tmp_path / "ci"))
    assert oct((tmp_path / "ci" / "release.key").stat().st_mode & 0o777) == "0o600"
    call_command("ota", "trust-key", str(tmp_path / "ci" / "release.pub"), "--name", "CI")
    good = image(tmp_path, "1.2.0")
    assert upload(ota_api, sign(tmp_path, good, "1.2.0", "--key", str(tmp_path / "ci" / "release.key")), good).status_code == 201
    assert len(release_public_keys()) == 2  # the hub's own and the CI key, in every enrollment from now on
    assert AuditEvent.objects.filter(action="ota.key.trust", decision="allow").count() == 1
    with pytest.raises(CommandError, match="trusted already"):
        call_command("ota", "trust-key", str(tmp_path / "ci" / "release.pub"))


def test_manage_py_ota_upload_stores_or_refuses_with_the_reason(fleet: None, tmp_path: Path, capsys: Any) -> None:
    good = image(tmp_path, "1.2.0")
    manifest = sign(tmp_path, good, "1.2.0")
    with pytest.raises(CommandError, match="size_mismatch: image: the image is longer"):
        call_command("ota", "upload", "--manifest", str(manifest), "--image", str(image(tmp_path, "1.2.0", size=60_000)))
    call_command("ota", "upload", "--manifest", str(manifest), "--image", str(good), "--json")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["version"] == "1.2.0"
    assert FirmwareRelease.objects.get().uploaded_by == "system:manage.py"
