"""The OpenAPI schema a client is generated from: built without warnings, and telling how to
authenticate and what a body must look like."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from devices.models import Command
from tests.factories import thermostat


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("schema") / "schema.json"
    # Raises on any warning or on a schema that is not valid OpenAPI 3.
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))
    document: dict[str, Any] = json.loads(Path(out).read_text())
    return document


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    methods = {"get", "put", "patch", "post", "delete"}
    return [(path, method, op) for path, item in schema["paths"].items() for method, op in item.items() if method in methods]


def test_it_declares_the_token_scheme(schema: dict[str, Any]) -> None:
    token = schema["components"]["securitySchemes"]["tokenAuth"]
    assert (token["type"], token["in"], token["name"]) == ("apiKey", "header", "Authorization")
    assert "Token <token>" in token["description"]


def test_it_lets_every_operation_use_a_token_or_a_session(schema: dict[str, Any]) -> None:
    ops = operations(schema)
    assert ops
    for path, method, op in ops:
        assert {"tokenAuth": []} in op["security"], f"{method.upper()} {path}"
        assert {"cookieAuth": []} in op["security"], f"{method.upper()} {path}"


def test_it_documents_the_command_body_that_is_enforced(schema: dict[str, Any]) -> None:
    post = schema["paths"]["/api/v1/devices/{node_id}/commands/"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert body["required"] == ["action", "capability"]
    assert body["additionalProperties"] is False, "unknown keys are refused"
    assert "type" not in body["properties"]["value"], "value is any JSON value: true, 21.5, 'auto'"
    assert body["properties"]["ttl_s"]["minimum"] == 1
    assert set(post["responses"]) >= {"201", "400"}


@pytest.mark.parametrize("path", ["/api/v1/devices/{node_id}/commands/", "/api/v1/commands/", "/api/v1/commands/batch/", "/api/v1/groups/{id}/command/"])
def test_it_documents_the_idempotency_key_of_every_command_endpoint(schema: dict[str, Any], path: str) -> None:
    post = schema["paths"][path]["post"]
    [header] = [p for p in post["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and not header.get("required", False)
    assert "409" in header["description"] and "Idempotent-Replayed" in header["description"]
    conflict = post["responses"]["409"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schema["components"]["schemas"][conflict.rsplit("/", 1)[1]]["required"]) == {"field", "reason"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "payload", "answer"),
    [
        ("/api/v1/devices/sensor-1/commands/", "on", {"field": "body", "reason": "expected a JSON object, got str"}),
        (
            "/api/v1/devices/sensor-1/commands/",
            {"capability": "setpoint", "value": 20},
            {"field": "action", "reason": "unknown action None; expected one of set, get, toggle, execute", "level": "action"},
        ),
        (
            "/api/v1/devices/sensor-1/commands/",
            {"action": "set", "capability": "setpoint", "value": 20, "ttl_s": "5"},
            {"field": "ttl_s", "reason": "ttl_s must be a whole number of seconds, got '5'", "level": "ttl"},
        ),
        ("/api/v1/commands/batch/", {"commands": [], "colour": "red"}, {"field": "colour", "reason": "unknown field 'colour'; allowed: commands"}),
        ("/api/v1/commands/batch/", {"commands": [1]}, {"field": "commands[0]", "reason": "each command must be a JSON object"}),
        (
            "/api/v1/commands/batch/",
            {"commands": [{"node_id": "sensor-1", "colour": "red"}]},
            {"field": "commands[0].colour", "reason": "unknown field 'colour'"},
        ),
        ("/api/v1/commands/batch/", {"commands": [{}] * 501}, {"field": "commands", "reason": "at most 500 commands per batch, got 501"}),
    ],
)
def test_it_answers_a_body_the_schema_refuses_with_field_and_reason(alice_api: APIClient, url: str, payload: Any, answer: dict[str, str]) -> None:
    thermostat("sensor-1")
    response = alice_api.post(url, payload, format="json")
    assert response.status_code == 400, response.content
    assert response.json() == answer
    assert not Command.objects.exists()


@pytest.mark.django_db
def test_it_judges_each_batch_item_on_its_own(alice_api: APIClient) -> None:
    thermostat("sensor-1")
    items = [{"node_id": "sensor-1", "capability": "temperature"}, {"node_id": "sensor-1", "action": "get", "capability": "temperature", "value": None}]
    response = alice_api.post("/api/v1/commands/batch/", {"commands": items}, format="json")
    assert response.status_code == 200, response.content
    missing_action, ok = response.json()["results"]
    assert (missing_action["ok"], missing_action["level"]) == (False, "action")
    assert ok["ok"] and Command.objects.get(id=ok["id"]).value is None
