"""`manage.py automation export [-o FILE]` and `manage.py automation import FILE [--dry-run]`:
rules, scenes and groups as one JSON document (automation/transfer.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.services import Actor
from automation import transfer
from automation.validation import RuleInvalid


class Command(BaseCommand):
    help = "Export or import rules, scenes and groups as one JSON document."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        out = sub.add_parser("export", help="write the document (stdout by default)")
        out.add_argument("-o", "--output", metavar="FILE")
        inp = sub.add_parser("import", help="check the whole document, then apply it in one transaction (idempotent by name)")
        inp.add_argument("file", metavar="FILE")
        inp.add_argument("--dry-run", action="store_true", help="check everything, write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "export":
            text = json.dumps(transfer.export(), indent=2, ensure_ascii=False) + "\n"
            if options["output"]:
                Path(options["output"]).write_text(text, encoding="utf-8")
            else:
                self.stdout.write(text, ending="")
            return
        try:
            document = json.loads(Path(options["file"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {options['file']}: {exc}") from None
        try:
            report = transfer.import_document(Actor.system("automation-import"), document, dry_run=options["dry_run"])
        except RuleInvalid as invalid:
            raise CommandError(f"{invalid.field}: {invalid.reason} (nothing was written)") from None
        verb = "would create" if options["dry_run"] else "created"
        for section in transfer.SECTIONS:
            created, replaced = report.created[section], report.replaced[section]
            self.stdout.write(f"{section}: {verb} {len(created)}, {'would replace' if options['dry_run'] else 'replaced'} {len(replaced)}")
