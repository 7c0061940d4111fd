"""`POST /api/v1/assistant/` `{"text": "…"}` (ARCHITECTURE §9.3): the sentence understood and
acted on with the caller's rights (`assistant.service`)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assistant import service
from hub.actors import actor_for_request
from hub.scopes import Scope

AskRequest = inline_serializer("AssistantRequest", {"text": serializers.CharField(max_length=service.MAX_TEXT)})
AskAnswer = inline_serializer(
    "AssistantAnswer",
    {
        "handled_by": serializers.ChoiceField(choices=["local", "llm"]),
        "provider": serializers.CharField(allow_null=True),
        "understood": serializers.CharField(),
        "commands": serializers.ListField(child=serializers.DictField()),
        "answer": serializers.CharField(),
        "choices": serializers.ListField(child=serializers.DictField()),
    },
)
AskRefusal = inline_serializer(
    "AssistantRefusal",
    {"field": serializers.CharField(), "reason": serializers.CharField(), "choices": serializers.ListField(child=serializers.DictField(), required=False)},
)


class AssistantView(APIView):
    """Type what you want done: "set the greenhouse thermostat to 21". `read-status` asks,
    `command` acts."""

    scope_map = {"POST": Scope.READ_STATUS}
    service_decides = ("post",)
    audit_target_type = "assistant"

    @extend_schema(request=AskRequest, responses={200: AskAnswer, 400: AskRefusal, 403: AskRefusal})
    def post(self, request: Request) -> Response:
        text = request.data.get("text") if isinstance(request.data, dict) else None
        code, body = service.ask(actor_for_request(request), text)
        return Response(body, status=code)
