"""Migration devices 0004: the hub signing and release keys move to `hub.SigningKey`."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from hub import signing

BEFORE = [("devices", "0003_revocation_kind"), ("hub", "0004_operator_provisions")]
AFTER = [("devices", "0004_signing_keys_to_hub"), ("hub", "0005_signing_key")]


def migrate(targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection)


def public_b64(key: ed25519.Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes_raw()).decode()


@pytest.fixture
def back_to_latest() -> Iterator[None]:
    """Whatever the test leaves, every later test gets the whole schema again."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("back_to_latest")
def test_it_moves_every_signing_key_and_leaves_the_server_key() -> None:
    apps = migrate(BEFORE).loader.project_state(BEFORE).apps
    HubKey = apps.get_model("devices", "HubKey")
    current, rotated, release = (ed25519.Ed25519PrivateKey.generate() for _ in range(3))
    current_pem = signing.encrypt_key(current, signing.passphrase()).decode()
    HubKey.objects.create(kind="hub_signing", public=public_b64(rotated), key_pem=signing.encrypt_key(rotated, signing.passphrase()).decode(), active=False)
    HubKey.objects.create(kind="hub_signing", public=public_b64(current), key_pem=current_pem)
    HubKey.objects.create(kind="release_signing", public=public_b64(release), key_pem="")  # private half off the hub
    HubKey.objects.create(kind="server_tls", public="-----BEGIN CERTIFICATE-----", key_pem="encrypted")

    apps = migrate(AFTER).loader.project_state(AFTER).apps
    moved = apps.get_model("hub", "SigningKey").objects.order_by("kind", "-active")
    assert list(moved.values_list("kind", "public", "active")) == [
        ("hub_signing", public_b64(current), True),
        ("hub_signing", public_b64(rotated), False),
        ("release_signing", public_b64(release), True),
    ]
    assert moved.get(kind="hub_signing", active=True).key_pem == current_pem
    assert list(apps.get_model("devices", "HubKey").objects.values_list("kind", flat=True)) == ["server_tls"]
    assert signing.holds_signing_key(public_b64(rotated)), "snapshots signed before the move still verify"
    assert signing.ed25519_public_b64(signing.signing_key()) == public_b64(current), "the hub keeps signing with its key"

    apps = migrate(BEFORE).loader.project_state(BEFORE).apps
    assert sorted(apps.get_model("devices", "HubKey").objects.values_list("kind", flat=True)) == ["hub_signing", "hub_signing", "release_signing", "server_tls"]
