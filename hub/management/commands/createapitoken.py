"""`manage.py createapitoken --user U --scopes s1,s2 [--json]`: the token is printed once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, record
from hub.models import ApiToken
from hub.scopes import parse_scopes


class Command(BaseCommand):
    help = "Create an API token for a user; it is printed once and stored only as a hash."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="username that owns the token")
        parser.add_argument("--scopes", required=True, help="comma-separated: read-status, command, reset, ota, admin")
        parser.add_argument("--name", default="", help="a label, e.g. the script using it")
        parser.add_argument("--expires-days", type=int, default=None, help="expire after this many days (default: never)")
        parser.add_argument("--json", action="store_true", help='print {"token": ...} and the token metadata as JSON')

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            scopes = parse_scopes(options["scopes"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no user named {options['user']!r}")
        if not user.is_active:
            raise CommandError(f"user {options['user']!r} is inactive")
        expires_at = None
        if options["expires_days"] is not None:
            if options["expires_days"] < 1:
                raise CommandError("--expires-days must be at least 1")
            expires_at = timezone.now() + timedelta(days=options["expires_days"])
        token, plaintext = ApiToken.issue(user, scopes, name=options["name"], expires_at=expires_at)
        record(
            Actor.system("manage.py"),
            "apitoken.create",
            Decision.ALLOW,
            scope="admin",
            target_type="apitoken",
            target_id=token.key,
            details={"owner": user.get_username(), "scopes": scopes},
        )
        if options["json"]:
            payload = {
                "token": plaintext,
                "key": token.key,
                "user": user.get_username(),
                "scopes": scopes,
                "expires_at": expires_at.isoformat() if expires_at else None,
            }
            self.stdout.write(json.dumps(payload))
        else:
            self.stdout.write(plaintext)
            self.stderr.write(f"token {token.key} for {user.get_username()} with scopes {', '.join(scopes)}; it is not shown again")
