"""`manage.py createenrollment --node-id ID [--device-type T] [--pin] [--json]`."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import Actor
from devices import identity


class Command(BaseCommand):
    help = "Create a one-time enrollment code (and optional PIN) for a device; printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--node-id", required=True)
        parser.add_argument("--device-type", default="generic")
        parser.add_argument("--pin", action="store_true", help="also require a 6-digit PIN")
        parser.add_argument("--ttl", type=int, default=None, help="seconds until the code expires (default 900)")
        parser.add_argument("--json", action="store_true", help="one JSON object")
        parser.add_argument("--qr", metavar="FILE", help="also write the meshhub://enroll QR code as SVG to FILE")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            ticket = identity.create_enrollment(
                Actor.system("manage.py"), options["node_id"], device_type=options["device_type"], with_pin=options["pin"], ttl_s=options["ttl"]
            )
        except identity.IdentityError as exc:
            raise CommandError(exc.reason) from None
        info = ticket.as_dict()
        if options["qr"]:
            with open(options["qr"], "w") as handle:
                handle.write(ticket.qr_svg())
        if options["json"]:
            self.stdout.write(json.dumps(info))
            return
        lines = [
            f"node id:        {info['node_id']}",
            f"code:           {info['code']}",
            f"pin:            {info['pin'] or '(none)'}",
            f"CA fingerprint: {info['ca_fingerprint']}",
            f"enroll at:      {info['enroll_host']}:{info['enroll_port']}",
            f"mesh port:      {info['mesh_port']}",
            f"expires:        {info['expires_at']}",
            f"uri:            {info['uri']}",
            "",
            "on the device:",
            f"  {ticket.agent_command()}",
        ]
        self.stdout.write("\n".join(lines))
