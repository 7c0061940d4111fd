"""The hub's signing keys and how every hub private key is kept at rest.

The Ed25519 hub signing key signs commands of scope reset/ota and the audit log's daily
snapshots; the release signing key signs firmware manifests. The audit app must know no
domain app, so the keys live here and this module imports nothing but Django,
`cryptography` and `hub.models`. The CA and server keys (`devices.identity`) are stored
the same way, under the same passphrase, with the helpers below.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import IntegrityError, transaction

from hub.models import SigningKey, SigningKeyKind, TrustedReleaseKey

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class PassphraseError(Exception):
    """A stored private key does not decrypt with the hub's passphrase; `reason` names which."""

    code = "bad_passphrase"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- private keys at rest ------------------------------------------------------------


def derive_passphrase(secret_key: str) -> bytes:
    """The key-encryption passphrase when MESHHUB_CA_PASSPHRASE is unset (HKDF of the secret key)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"meshhub-ca-passphrase-v1", info=b"meshhub").derive(secret_key.encode()).hex().encode()


def passphrase() -> bytes:
    explicit = settings.CA_PASSPHRASE
    return explicit.encode() if explicit else derive_passphrase(settings.SECRET_KEY)


def encrypt_key(key: PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(passphrase))


def decrypt_key(pem: bytes, passphrase: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unexpected key type {type(key).__name__}")
    return key


def decrypt_private(pem: str, what: str) -> PrivateKey:
    """A stored key under the hub's passphrase; a wrong passphrase is named, not a stack trace."""
    try:
        return decrypt_key(pem.encode(), passphrase())
    except ValueError:
        raise PassphraseError(
            f"cannot decrypt the {what}: MESHHUB_CA_PASSPHRASE (or, when unset, the secret key) is not the one it was encrypted with"
        ) from None


def ed25519_public_b64(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


# --- the signing keys ----------------------------------------------------------------

# Called with the kind inside the transaction that creates a key, so the record of it
# commits or rolls back with the row: hub.apps wires the audit log in (this module
# imports no app). A failing hook fails the creation.
KeyCreatedHook = Callable[[str], None]
key_created_hooks: list[KeyCreatedHook] = []


def on_key_created(hook: KeyCreatedHook) -> KeyCreatedHook:
    key_created_hooks.append(hook)
    return hook


def ensure_signing_key(kind: str) -> SigningKey:
    """The active key of `kind`, created on first use (race-safe)."""
    existing = SigningKey.objects.filter(kind=kind, active=True).first()
    if existing is not None:
        return existing
    key = ed25519.Ed25519PrivateKey.generate()
    try:
        with transaction.atomic():
            signing_key = SigningKey.objects.create(kind=kind, public=ed25519_public_b64(key), key_pem=encrypt_key(key, passphrase()).decode())
            for hook in list(key_created_hooks):
                hook(kind)
            return signing_key
    except IntegrityError:  # another process created it first
        return SigningKey.objects.get(kind=kind, active=True)


def signing_key(kind: str = SigningKeyKind.HUB_SIGNING) -> ed25519.Ed25519PrivateKey:
    row = ensure_signing_key(kind)
    key = decrypt_private(row.key_pem, f"{kind} key")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise TypeError(f"{kind} key is not Ed25519")
    return key


def public_key_b64(kind: str) -> str:
    return ensure_signing_key(kind).public


def release_public_keys() -> list[str]:
    """Every release-signing public key the hub accepts, base64: its own (the current one
    first, then rotated-out ones, whose releases still verify) and the trusted off-hub ones
    (`manage.py ota trust-key`). Devices get this list at enrollment."""
    ensure_signing_key(SigningKeyKind.RELEASE_SIGNING)
    own = SigningKey.objects.filter(kind=SigningKeyKind.RELEASE_SIGNING).order_by("-active", "-created_at").values_list("public", flat=True)
    return list(dict.fromkeys([*own, *TrustedReleaseKey.objects.values_list("public", flat=True)]))


def holds_signing_key(public: str) -> bool:
    """True when `public` is a hub signing key (current or rotated out) whose private half
    this hub holds: its row's encrypted key decrypts with the hub's passphrase to exactly
    that key. A row someone wrote into the database with a key of their own (to re-sign a
    rewritten audit day) has no such private half, because making one needs the passphrase,
    which lives outside the database."""
    rows = SigningKey.objects.filter(kind=SigningKeyKind.HUB_SIGNING, public=public).exclude(key_pem="").values_list("public", "key_pem")
    return any(_private_half_matches(row_public, key_pem) for row_public, key_pem in rows)


@functools.lru_cache(maxsize=64)
def _private_half_matches(public: str, key_pem: str) -> bool:
    """Decrypting is slow on purpose (PBKDF2); a verify run asks about the same few keys."""
    try:
        key = decrypt_key(key_pem.encode(), passphrase())
    except (ValueError, TypeError):
        return False
    return isinstance(key, ed25519.Ed25519PrivateKey) and ed25519_public_b64(key) == public
