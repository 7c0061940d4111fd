"""`manage.py retaintelemetry`: the telemetry retention run that beat makes every
MESHHUB_TELEMETRY_RETENTION_S, now (after an upgrade, or to free disk at once)."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices import retention


class Command(BaseCommand):
    help = "Roll raw telemetry past the raw window into hourly rollups, hourly into daily, delete old daily ones; print what moved and each table's size."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--until-done", action="store_true", help="run again while a run stops at its time budget with rows left")
        parser.add_argument("--json", action="store_true", help="print the last run's report and the table sizes as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            policy = retention.Policy.from_settings()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        runs = []
        while True:
            details = retention.run_and_record(policy)
            runs.append(details["report"])
            if details["report"]["finished"] or not options["until_done"]:
                break
        if options["json"]:
            self.stdout.write(json.dumps({**details, "runs": len(runs)}))
            return
        for report in runs:
            self.stdout.write(
                f"rolled up {report['raw_rolled_up']:,} samples, deleted {report['raw_text_deleted']:,} text samples, "
                f"folded {report['hourly_folded']:,} hourly rollups into days, deleted {report['daily_deleted']:,} daily rollups "
                f"in {report['batches']:,} batches, {report['seconds']:.1f} s (longest batch {report['longest_batch_s'] * 1000:.0f} ms)"
                + ("" if report["finished"] else "; stopped at the time budget with rows left")
            )
        for table in details["tables"][:8]:
            rows = "?" if table["rows"] is None else f"{table['rows']:,}"
            self.stdout.write(f"  {table['name']:<40} {table['bytes'] / 1e6:>10.1f} MB  {rows:>12} rows")
