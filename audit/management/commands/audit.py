"""`manage.py audit verify`: recompute the hash chain and name the first broken event."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import services


class Command(BaseCommand):
    help = "Audit log tools. `verify` exits 0 when the chain is intact, non-zero naming the first bad event otherwise."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        sub.add_parser("verify", help="recompute every link of the chain")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "verify":
            self.verify()

    def verify(self) -> None:
        result = services.verify()
        if result.ok:
            self.stdout.write(f"audit chain intact: {result.checked} events verified")
            return
        broken = result.broken
        assert broken is not None
        where = f"event id {broken.event_id} (seq {broken.seq})" if broken.event_id is not None else f"seq {broken.seq}"
        raise CommandError(f"audit chain broken at {where}: {broken.reason}; {result.checked} events before it verified")
