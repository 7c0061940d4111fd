"""`manage.py audit verify|export|snapshot`: check the chain and its signed snapshots, export the log."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit import services, snapshots
from audit.models import AuditSnapshot
from audit.services import Actor


def utc_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = (
        "Audit log tools. `verify` exits 0 when the chain and every snapshot are intact, non-zero naming the first bad event "
        "or snapshot otherwise; `export` writes the log as JSONL; `snapshot` signs one finished day."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        sub.add_parser("verify", help="recompute every link of the chain and check every signed snapshot")
        export = sub.add_parser("export", help="the log as JSONL, one event per line in seq order, with every field the chain hashes")
        export.add_argument("--output", "-o", help="write to this file instead of stdout")
        export.add_argument("--since", type=utc_day, help="first UTC day to include (YYYY-MM-DD)")
        export.add_argument("--until", type=utc_day, help="last UTC day to include (YYYY-MM-DD)")
        snapshot = sub.add_parser("snapshot", help="sign one finished UTC day now (the beat task does every day on its own)")
        snapshot.add_argument("--date", type=utc_day, help="the UTC day (default: yesterday)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "verify":
            self.verify()
        elif options["subcommand"] == "export":
            self.export(options["output"], options["since"], options["until"])
        else:
            self.snapshot(options["date"] or snapshots.utc_today() - timedelta(days=1))

    def verify(self) -> None:
        result = services.verify()
        if result.ok:
            self.stdout.write(f"audit chain intact: {result.checked} events verified")
        report = snapshots.verify_snapshots()
        if report.ok:
            self.stdout.write(f"audit snapshots intact: {report.verified} snapshots verified")
        else:
            first = report.failures[0]
            self.stderr.write(
                f"audit snapshot of {first.date.isoformat()} failed: {first.reason}; {report.verified} of {report.checked} snapshots verified, {len(report.failures)} failing"
            )
        if report.unsigned:
            days = report.unsigned
            self.stderr.write(
                f"warning: {len(days)} finished day{'s' if len(days) > 1 else ''} after the newest snapshot "
                f"{'are' if len(days) > 1 else 'is'} not signed ({days[0].isoformat()}{' to ' + days[-1].isoformat() if len(days) > 1 else ''}): "
                "is Celery beat running? Those days are not attested, and a deleted newest snapshot looks the same; "
                "compare with the snapshots you keep outside the hub"
            )
        if not result.ok:  # the chain's first bad event is the headline (ARCHITECTURE §9)
            broken = result.broken
            assert broken is not None
            where = f"event id {broken.event_id} (seq {broken.seq})" if broken.event_id is not None else f"seq {broken.seq}"
            raise CommandError(f"audit chain broken at {where}: {broken.reason}; {result.checked} events before it verified")
        if not report.ok:
            first = report.failures[0]
            raise CommandError(f"audit snapshot of {first.date.isoformat()} failed: {first.reason}")

    def export(self, output: str | None, since: date | None, until: date | None) -> None:
        if since and until and since > until:
            raise CommandError("--since is after --until")
        lines = services.iter_jsonl(services.events_between(since, until))
        if not output or output == "-":
            for line in lines:
                self.stdout.write(line, ending="")
            return
        count = 0
        try:
            with Path(output).open("w", encoding="utf-8", newline="\n") as handle:
                for line in lines:
                    handle.write(line)
                    count += 1
        except OSError as exc:
            raise CommandError(f"cannot write {output}: {exc.strerror}") from None
        self.stdout.write(f"exported {count} audit events to {output}")

    def snapshot(self, day: date) -> None:
        existed = AuditSnapshot.objects.filter(date=day).exists()
        try:
            snap = snapshots.take_snapshot(day, actor=Actor.system("manage.py"))
        except snapshots.SnapshotError as refused:
            raise CommandError(f"no snapshot of {day.isoformat()}: {refused.reason}") from None
        span = f"seq {snap.first_id}-{snap.last_id}" if snap.count else "no events"
        state = "already taken" if existed else "signed"
        self.stdout.write(f"audit snapshot of {day.isoformat()} {state}: {snap.count} events ({span}), last hash {snap.last_hash}, key {snap.public_key}")
