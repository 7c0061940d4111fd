"""The router against OpenAI-compatible HTTP servers started by the test (real sockets,
scripted chat-completions answers, tool calls included: no model can run here, and what is
tested is the router's behaviour): text about the fleet never reaches the cloud server unless
allowed; when allowed, the cloud server receives no real device name, e-mail or token; three
failures open the breaker and the next requests stay local, the half-open probe closes it;
a model's tool call beyond the user's scopes is refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rest_framework.test import APIClient

from assistant.breakers import breakers
from assistant.names import Thing
from assistant.scrub import pseudonym
from audit.models import AuditEvent
from devices.models import Command, Device
from tests.factories import relay, thermostat

pytestmark = pytest.mark.django_db
URL = "/api/v1/assistant/"


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def said(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


class ScriptedModel:
    """An OpenAI-compatible /v1/chat/completions: each POST gets the next scripted message
    (or an HTTP status); every request body is kept."""

    def __init__(self) -> None:
        self.script: list[dict[str, Any] | int] = []
        self.received: list[dict[str, Any]] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model.received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                answer = model.script.pop(0) if model.script else said("ok")
                if isinstance(answer, int):
                    self.send_response(answer)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                reply = {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "m"),
                         "choices": [{"index": 0, "finish_reason": "tool_calls" if answer.get("tool_calls") else "stop", "message": answer}]}  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sent_text(self) -> str:
        return json.dumps([r["body"] for r in self.received])


@pytest.fixture
def models(settings: Any) -> Iterator[tuple[ScriptedModel, ScriptedModel]]:
    local, cloud = ScriptedModel(), ScriptedModel()
    settings.LLM_LOCAL_URL, settings.LLM_CLOUD_URL, settings.LLM_CLOUD_API_KEY = local.url, cloud.url, "cloud-key"
    settings.LLM_CLOUD_FOR_DEVICES = False
    breakers.reset()
    yield local, cloud
    breakers.reset()
    local.server.shutdown()
    cloud.server.shutdown()


@pytest.fixture
def fleet() -> None:
    thermostat("demo-thermostat-1", name="Greenhouse thermostat", aliases=["greenhouse"], reported={"temperature": 24.5})
    relay("demo-relay-1", name="Kitchen light")
    Device.objects.update(status="provisioned", online=True)


FLEET_TEXT = "the greenhouse feels chilly, could you make it cozier? tell bob@example.com, my token is mh_ab12cd_s3cretvalue"


def test_text_about_the_fleet_never_reaches_the_cloud_unless_allowed(fleet: None, models: Any, alice_api: APIClient, settings: Any) -> None:
    _local, cloud = models
    settings.LLM_LOCAL_URL = ""  # only a cloud model: device text has nowhere to go
    answer = alice_api.post(URL, {"text": FLEET_TEXT}, format="json")
    assert answer.status_code == 400 and answer.json()["handled_by"] == "local"
    assert "stays local" in answer.json()["reason"] and cloud.received == []
    other = alice_api.post(URL, {"text": "write a haiku about autumn"}, format="json")
    assert other.status_code == 200 and other.json()["handled_by"] == "llm" and other.json()["provider"] == "cloud"
    assert len(cloud.received) == 1 and cloud.received[0]["auth"] == "Bearer cloud-key" and cloud.received[0]["path"] == "/v1/chat/completions"


def test_when_allowed_the_cloud_gets_pseudonyms_and_no_personal_data(
    fleet: None, models: Any, alice_api: APIClient, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _local, cloud = models
    settings.LLM_LOCAL_URL = ""
    settings.LLM_CLOUD_FOR_DEVICES = True
    alias = pseudonym(Thing("device", "demo-thermostat-1", "Greenhouse thermostat"), settings.SECRET_KEY)
    cloud.script = [
        tool_call("get_device", {"node_id": alias}),
        tool_call("send_command", {"node_id": alias, "action": "set", "capability": "setpoint", "value": 23}),
        said(f"I set {alias} to 23 °C."),
    ]
    answer = alice_api.post(URL, {"text": FLEET_TEXT}, format="json").json()
    assert answer["handled_by"] == "llm" and answer["provider"] == "cloud", answer
    assert answer["answer"] == "I set demo-thermostat-1 to 23 °C.", "pseudonyms are mapped back for the user"
    assert [(c["device"], c["capability"], c["value"], c["status"]) for c in answer["commands"]] == [("demo-thermostat-1", "setpoint", 23, "pending")]
    assert Command.objects.get().device.node_id == "demo-thermostat-1"
    sent = cloud.sent_text().lower()
    for secret in ("greenhouse", "demo-thermostat-1", "demo thermostat", "bob@example.com", "mh_ab12cd_s3cretvalue", "kitchen light"):
        assert secret not in sent, f"{secret!r} reached the cloud"
    assert alias in sent and "[email]" in sent and "[token]" in sent
    assert AuditEvent.objects.filter(action="assistant.ask", decision="allow", target_id="cloud").exists()


def test_three_failures_open_the_breaker_and_a_probe_closes_it(fleet: None, models: Any, alice_api: APIClient, settings: Any) -> None:
    local, _cloud = models
    settings.LLM_CLOUD_URL = ""
    settings.LLM_BREAKER_OPEN_S = 0.5
    local.script = [500, 503, 500]
    for _ in range(3):
        failed = alice_api.post(URL, {"text": "tell me a joke"}, format="json")
        assert failed.status_code == 400 and "local model" in failed.json()["reason"]
    assert len(local.received) == 3
    assert AuditEvent.objects.filter(action="assistant.breaker", decision="deny", target_id="local").count() == 1
    skipped = alice_api.post(URL, {"text": "tell me a joke"}, format="json").json()
    assert skipped["handled_by"] == "local" and "local breaker open" in skipped["reason"]
    assert len(local.received) == 3, "an open breaker sends nothing"
    local_intent = alice_api.post(URL, {"text": "what is the temperature of the greenhouse"}, format="json").json()
    assert local_intent["handled_by"] == "local" and "24.5" in local_intent["answer"], "local intents work with the model away"
    time.sleep(0.6)
    local.script = [said("Why did the thermostat break up? It needed space.")]
    probe = alice_api.post(URL, {"text": "tell me a joke"}, format="json").json()
    assert probe["handled_by"] == "llm" and probe["provider"] == "local" and "half-open" in probe["route"]["reason"]
    assert AuditEvent.objects.filter(action="assistant.breaker", decision="allow", target_id="local").exists(), "closing is audited"
    assert breakers.states()["local"]["state"] == "closed"


def test_a_models_tool_call_beyond_the_users_scopes_is_refused(fleet: None, models: Any, bob_api: APIClient, settings: Any) -> None:
    local, cloud = models
    local.script = [tool_call("send_command", {"node_id": "demo-relay-1", "action": "set", "capability": "on", "value": True}), said("Done.")]
    answer = bob_api.post(URL, {"text": "it is dark in the kitchen light area, fix that"}, format="json").json()
    assert answer["handled_by"] == "llm" and answer["provider"] == "local"
    assert answer["commands"] == [
        {"device": "demo-relay-1", "capability": "on", "action": "set", "value": True, "id": None, "status": "rejected", "reason": "missing scope 'command'"}
    ]
    assert not Command.objects.exists()
    assert AuditEvent.objects.filter(action="assistant.tool", decision="deny", actor_id__endswith="bob", target_id="send_command").exists()
    offered = {t["function"]["name"] for t in local.received[0]["body"]["tools"]}
    assert "send_command" not in offered, "the model was not even offered the tool"
    assert cloud.received == [], "about the fleet: stays local"
