"""The OpenAPI schema a client is generated from: built without warnings, and telling how to
authenticate and what a body must look like."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command


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
