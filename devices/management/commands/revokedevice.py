"""`manage.py revokedevice ID --reason R`: the same revocation as the admin and the API."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import Actor
from devices import identity


class Command(BaseCommand):
    help = "Revoke every active certificate of a device, cancel its open enrollments and commands, and close its session."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("node_id")
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            certs = identity.revoke_device(Actor.system("manage.py"), options["node_id"], options["reason"])
        except identity.IdentityError as exc:
            raise CommandError(exc.reason) from None
        serials = ", ".join(c.serial for c in certs) or "none active"
        self.stdout.write(f"revoked {options['node_id']}: certificates {serials}")
