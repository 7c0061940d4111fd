"""Language models through the OpenAI-compatible chat-completions API (the `openai` client),
so Ollama, llama.cpp's server, vLLM and hosted models all work: a local endpoint and a cloud
endpoint, each optional (MESHHUB_LLM_LOCAL_URL/_MODEL, MESHHUB_LLM_CLOUD_URL/_MODEL/_API_KEY;
the URLs are base URLs including `/v1`).

The model gets the tools of `assistant.tools` that the asking actor may use, and its tool
calls run through them with that actor: a model can never do more than the token or user it
acts for. For the cloud, everything sent is scrubbed (`assistant.scrub`): personal data
removed, fleet names pseudonymised; the model's tool calls are mapped back before they run.

A provider that cannot answer (connection refused, timeout, an HTTP error, an answer that
is not a chat completion) raises ProviderFailed; the router's breaker counts it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import openai
from django.conf import settings
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from assistant import tools
from assistant.scrub import Scrubber
from audit.services import Actor

MAX_ROUNDS = 5
SYSTEM = (
    "You are the assistant of meshhub, a hub that runs a fleet of devices. Use the tools to look things up and "
    "to act; never invent node ids, use the ones the tools return. Answer in one or two short sentences."
)
ACTING_TOOLS = ("send_command", "group_command", "activate_scene")


class ProviderFailed(Exception):
    pass


@dataclass(frozen=True)
class Provider:
    name: str  # local | cloud
    base_url: str
    model: str
    api_key: str
    scrubbed: bool  # the cloud: nothing real leaves


def configured() -> dict[str, Provider]:
    found: dict[str, Provider] = {}
    if settings.LLM_LOCAL_URL:
        found["local"] = Provider("local", settings.LLM_LOCAL_URL, settings.LLM_LOCAL_MODEL, "not-needed", scrubbed=False)
    if settings.LLM_CLOUD_URL:
        found["cloud"] = Provider("cloud", settings.LLM_CLOUD_URL, settings.LLM_CLOUD_MODEL, settings.LLM_CLOUD_API_KEY or "not-set", scrubbed=True)
    return found


@dataclass
class Conversation:
    answer: str = ""
    commands: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def _tool_specs(actor: Actor) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}} for t in tools.available(actor)]


def _commands(name: str, args: dict[str, Any], ok: bool, result: Any) -> list[dict[str, Any]]:
    """The commands a tool call sent (or had refused), in the API's shape."""
    if name not in ACTING_TOOLS:
        return []
    if not ok:
        error = result.get("error", {})
        return [{"device": args.get("node_id") or args.get("group") or args.get("name"), "capability": args.get("capability"), "action": args.get("action"),
                 "value": args.get("value"), "id": None, "status": "rejected", "reason": error.get("reason", "")}]  # fmt: skip
    rows = [result] if name == "send_command" else result.get("commands") or result.get("members") or []
    out = []
    for row in rows:
        out.append(
            {
                "device": row.get("device"),
                "capability": row.get("capability", args.get("capability")),
                "action": args.get("action", "set"),
                "value": args.get("value"),
                "id": row.get("id") or row.get("command_id"),
                "status": "rejected" if row.get("status") == "rejected" or (name == "activate_scene" and not row.get("command_id")) else row.get("status"),
                "reason": row.get("reason", ""),
            }
        )
    return out


def converse(provider: Provider, actor: Actor, text: str, scrubber: Scrubber | None) -> Conversation:
    """Ask `provider` about `text` with the actor's tools until it answers (at most MAX_ROUNDS)."""
    client = openai.OpenAI(base_url=provider.base_url, api_key=provider.api_key, timeout=settings.LLM_TIMEOUT_S, max_retries=0)

    def out(value: Any) -> Any:
        return scrubber.out_json(value) if scrubber is not None else value

    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": out(text)}]
    specs = _tool_specs(actor)
    conversation = Conversation()
    for _ in range(MAX_ROUNDS):
        try:
            reply = client.chat.completions.create(model=provider.model, messages=messages, tools=specs or openai.omit)  # type: ignore[arg-type]
            message = reply.choices[0].message
        except (openai.OpenAIError, IndexError, AttributeError, TypeError, ValueError) as error:
            raise ProviderFailed(f"{provider.name} model: {type(error).__name__}: {str(error)[:200]}") from None
        calls = message.tool_calls or []
        if not calls:
            answer = message.content or ""
            conversation.answer = scrubber.back(answer) if scrubber is not None else answer
            return conversation
        messages.append({"role": "assistant", "content": message.content, "tool_calls": [c.model_dump() for c in calls]})
        for call in calls:
            if not isinstance(call, ChatCompletionMessageFunctionToolCall):
                messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"error":{"field":"type","reason":"only function tools"}}'})
                continue
            name = call.function.name
            try:
                args = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError as error:
                ok, result = False, {"error": {"field": "arguments", "reason": f"not JSON: {error.msg}"}}
                args = {}
            else:
                args = scrubber.back(args) if scrubber is not None else args
                ok, result = tools.call(actor, name, args, "llm")
            conversation.tool_calls.append({"name": name, "arguments": args, "ok": ok})
            conversation.commands.extend(_commands(name, args if isinstance(args, dict) else {}, ok, result))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(out(result), separators=(",", ":"), default=str)})
    raise ProviderFailed(f"{provider.name} model: no answer after {MAX_ROUNDS} rounds of tool calls")
