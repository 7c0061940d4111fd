"""`manage.py modbus import FILE` / `modbus export [--output FILE]` / `modbus poll NODE_ID`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.models import ActorType
from audit.services import Actor
from industrial import config


class Command(BaseCommand):
    help = "PLC (Modbus TCP) configuration as JSON: import validates everything before writing anything; export prints it."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import", help="import bridges and points from a JSON file ('-' for stdin)")
        imp.add_argument("file")
        imp.add_argument("--dry-run", action="store_true", help="validate only")
        exp = sub.add_parser("export", help="print every bridge as JSON")
        exp.add_argument("--output", "-o", help="write to this file instead of stdout")
        poll = sub.add_parser("poll", help="poll one bridge now and print what was read")
        poll.add_argument("node_id")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "import":
            self.do_import(options["file"], options["dry_run"])
        elif action == "export":
            text = json.dumps(config.export(), indent=2, ensure_ascii=False) + "\n"
            if options["output"]:
                Path(options["output"]).write_text(text, encoding="utf-8")
            else:
                self.stdout.write(text, ending="")
        else:
            from industrial import polling
            from industrial.models import ModbusBridge

            bridge = ModbusBridge.objects.filter(device__node_id=options["node_id"]).first()
            if bridge is None:
                raise CommandError(f"no Modbus bridge with node_id '{options['node_id']}'")
            self.stdout.write(json.dumps(polling.poll_bridge(bridge.pk).as_dict(), indent=2, default=str))

    def do_import(self, file: str, dry_run: bool) -> None:
        try:
            raw = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{file} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        actor = Actor(ActorType.SYSTEM, "manage.py modbus import")
        try:
            if dry_run:
                bridges = config.parse(document)
                self.stdout.write(f"valid: {len(bridges)} bridges, {sum(len(b.points) for b in bridges)} points (nothing written)")
                return
            counts = config.import_document(actor, document)
        except config.ConfigError as exc:
            raise CommandError("nothing imported:\n  " + "\n  ".join(exc.errors)) from None
        self.stdout.write(
            f"imported: {counts['bridges_created']} bridges created, {counts['bridges_updated']} updated, {counts['points']} points, {counts['points_removed']} points removed"
        )
