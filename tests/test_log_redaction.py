"""No secret reaches the hub's log output (ARCHITECTURE §9): the real LOGGING config, a
device that enrolls with a PIN over the real listener, an API token used for real, and
events and errors whose payloads carry key-like strings over a real mTLS session."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging.config
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from audit.services import Actor
from devices import identity
from firmware.agent import port as agent_port
from firmware.agent.core import enroll as agent_enroll
from hub.models import ApiToken
from hub.redact import MARKER, redact, redact_text
from tests.test_gateway import RawDevice, listeners  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hub_log() -> Iterator[io.StringIO]:
    """The hub's own LOGGING dict, with its stdout handler writing here instead."""
    output = io.StringIO()
    config = copy.deepcopy(django_settings.LOGGING)
    config["handlers"]["stdout"]["stream"] = output
    config["root"]["level"] = "INFO"
    logging.config.dictConfig(config)
    try:
        yield output
    finally:
        logging.config.dictConfig(django_settings.LOGGING)


def test_it_keeps_pins_codes_tokens_and_keys_out_of_the_json_log(listeners: Any, tmp_path: Path, alice: Any, hub_log: io.StringIO) -> None:  # noqa: F811
    enroll_listener, gateway = listeners
    ticket = identity.create_enrollment(Actor("user", "alice"), "sensor-1", with_pin=True).as_dict()
    code, pin = ticket["code"], ticket["pin"]
    state_dir = tmp_path / "sensor-1"
    with pytest.raises(agent_enroll.EnrollError):  # mallory's guess is refused, then the device enrolls
        agent_enroll.enroll(
            agent_port, "127.0.0.1", enroll_listener.port, "sensor-1", code, "000000" if pin != "000000" else "111111", ticket["ca_fingerprint"], str(state_dir)
        )
    agent_enroll.enroll(agent_port, "127.0.0.1", enroll_listener.port, "sensor-1", code, pin, ticket["ca_fingerprint"], str(state_dir))
    hub = json.loads((state_dir / "hub.json").read_text())
    hub["mesh_port"] = gateway.port
    (state_dir / "hub.json").write_text(json.dumps(hub))

    _, api_token = ApiToken.issue(alice, ["read-status"], name="script")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    assert api.get("/api/v1/devices/").status_code == 200
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token[:-4]}xxxx")  # a wrong secret: refused and logged
    assert api.get("/api/v1/devices/").status_code in (401, 403)

    key_b64 = base64.b64encode(os.urandom(32)).decode()
    key_hex = os.urandom(32).hex()
    private_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    free_text_secrets = {"password": "hunter2-swordfish", "token": "abc123tokenvalue", "api_key": "xyz-apikey-value"}
    note = f"boot with password={free_text_secrets['password']} token={free_text_secrets['token']} api_key: {free_text_secrets['api_key']}"
    data = {
        "note": note,
        "pin": pin,
        "wifi": {"ssid": "plant-7", "passphrase": "correct-horse-battery"},
        "session_key": key_b64,
        "blob": f"k={key_hex}",
        "pem": private_pem,
        "enrollment": f"code {code}",
        "copied": api_token,
    }
    device = RawDevice(state_dir, gateway.port)
    try:
        device.hello()
        device.send(device.frame("event", {"name": "diagnostics", "data": data}))
        assert device.read()["type"] == "ack"
        device.send(device.frame("error", {"code": "boot_failed", "reason": note, "pin": pin, "token": api_token}))
        device.send(device.frame("ping", {}))
        while device.read()["type"] != "pong":  # the error frame was handled (frames run in order)
            pass
    finally:
        device.sock.close()

    output = hub_log.getvalue()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(line.get("event") == "diagnostics" for line in lines), "the event itself is still logged"
    assert any("boot_failed" in line["msg"] for line in lines), "the device error itself is still logged"
    secret_part = api_token.split("_", 2)[2]
    secrets = [pin, code, code.replace("-", ""), secret_part, key_b64, key_hex, "correct-horse-battery", *free_text_secrets.values()]
    secrets += [line for line in private_pem.splitlines() if "-----" not in line]
    leaked = [s for s in secrets if s in output]
    assert not leaked, f"secrets in the log output: {leaked}"
    assert MARKER in output
    assert "plant-7" in output and "sensor-1" in output, "what is not secret stays readable"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password=hunter2", "hunter2"),
        ("db_password: 's3cr3t value'", "s3cr3t value"),
        ('{"api_key": "xyz"}', "xyz"),
        ("Authorization: Token mh_0123456789ab_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo"),
        ("enroll with ABCD-EFGH-JK12 now", "ABCD-EFGH-JK12"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n", "MHcCAQEEIB"),
    ],
)
def test_it_redacts_each_kind_of_secret_in_free_text(text: str, secret: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted and MARKER in redacted


def test_it_leaves_ordinary_words_and_identifiers_alone() -> None:
    text = "ping: 3 mapping: x error code: bad_event serial 3f2a9c0d1e2b3a4c5d6e7f8091a2b3c4d5e6f708 node sensor-1"
    assert redact_text(text) == text
    assert redact({"has_pin": True, "pin": None, "pins": "1234"}) == {"has_pin": True, "pin": None, "pins": MARKER}
