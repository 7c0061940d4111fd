"""The hub's signing keys and keys at rest (`hub.signing`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from audit.models import AuditEvent
from hub import signing
from hub.models import SigningKey, SigningKeyKind


def test_keys_round_trip_only_with_their_passphrase() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = signing.encrypt_key(key, b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert signing.decrypt_key(pem, b"correct horse").private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        signing.decrypt_key(pem, b"wrong")


def test_the_derived_passphrase_depends_on_the_secret_key() -> None:
    assert signing.derive_passphrase("a" * 50) == signing.derive_passphrase("a" * 50)
    assert signing.derive_passphrase("a" * 50) != signing.derive_passphrase("b" * 50)


@pytest.mark.django_db
def test_it_creates_each_signing_key_once_and_audits_it() -> None:
    public = signing.public_key_b64(SigningKeyKind.RELEASE_SIGNING)
    assert signing.public_key_b64(SigningKeyKind.RELEASE_SIGNING) == public
    assert signing.ed25519_public_b64(signing.signing_key(SigningKeyKind.RELEASE_SIGNING)) == public
    assert list(SigningKey.objects.values_list("kind", "active")) == [(SigningKeyKind.RELEASE_SIGNING, True)]
    created = AuditEvent.objects.filter(action="pki.key.create")
    assert list(created.values_list("target_type", "target_id", "decision")) == [("hubkey", "release_signing", "allow")]


@pytest.mark.django_db
def test_a_changed_passphrase_names_the_key_it_cannot_decrypt(settings: object) -> None:
    signing.signing_key()
    settings.CA_PASSPHRASE = "not-the-one"  # type: ignore[attr-defined]
    with pytest.raises(signing.PassphraseError, match="cannot decrypt the hub_signing key: MESHHUB_CA_PASSPHRASE"):
        signing.signing_key()


def test_it_imports_no_app_so_audit_can_sign_with_it() -> None:
    """The audit app signs its snapshots with these keys and must know no domain app."""
    hub = Path(signing.__file__).parent
    for module in ("signing.py", "models.py"):
        tree = ast.parse((hub / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        roots = {name.split(".")[0] for name in imported}
        assert roots <= {"__future__", "base64", "functools", "collections", "hashlib", "hmac", "secrets", "datetime", "cryptography", "django", "hub"}, module
        assert not {name for name in imported if name.startswith("hub.")} - {"hub.models"}, module
