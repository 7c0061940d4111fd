"""`python manage.py ask "turn on the kitchen light"`: the assistant from a terminal, acting as
the hub itself (a management command runs on the hub's machine) or as a user (`--user`)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant import service
from audit.services import Actor
from hub.actors import actor_for_user


class Command(BaseCommand):
    help = "Ask the assistant: a sentence understood and acted on locally (docs/assistant.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text", nargs="+", help="the sentence")
        parser.add_argument("--user", help="act as this user, with that user's roles (default: the hub itself)")
        parser.add_argument("--json", action="store_true", help="print the API's JSON answer")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("ask")
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user '{options['user']}'")
            actor = actor_for_user(user)
        code, body = service.ask(actor, " ".join(options["text"]))
        if options["json"]:
            self.stdout.write(json.dumps(body, indent=2))
        elif code == 200:
            self.stdout.write(f"understood: {body['understood']}")
            for command in body["commands"]:
                self.stdout.write(
                    f"  {command['device']}.{command['capability']} {command['action']} {command['value']!r}: {command['status']} {command['reason']}".rstrip()
                )
            for choice in body["choices"]:
                self.stdout.write(f"  - {choice.get('name')} {('(' + choice['node_id'] + ')') if choice.get('node_id') else ''}".rstrip())
            if body["answer"]:
                self.stdout.write(body["answer"])
        if code != 200:
            raise CommandError(f"{body['reason']}" + ("".join(f"\n  - {c.get('name')}" for c in body.get("choices", []))))
