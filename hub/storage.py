"""How much disk each table takes, for the system page: measured by the telemetry retention
run (devices/retention.py) and kept with its report, because on SQLite the measure reads
every page of the database file, which a page view must not do on a large hub.

PostgreSQL: pg_total_relation_size (table, indexes and TOAST) and the planner's row
estimate. SQLite: the dbstat virtual table, indexes counted with their table, and the
rows as the cells of the table's leaf pages (exact for rowid tables)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.db import connection

FREE_PAGES = "(free pages in the SQLite file)"


@dataclass(frozen=True)
class TableSize:
    name: str
    bytes: int
    rows: int | None  # an estimate on PostgreSQL (reltuples); None when never analysed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def table_sizes() -> list[TableSize]:
    """Every table of the hub's database, largest first."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()"
            )
            found = [TableSize(name, int(size), int(rows) if rows is not None and rows >= 0 else None) for name, size, rows in cursor.fetchall()]
        elif connection.vendor == "sqlite":
            cursor.execute(
                "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize), "
                "sum(CASE WHEN d.name = coalesce(m.tbl_name, d.name) AND d.pagetype = 'leaf' THEN d.ncell ELSE 0 END) "
                "FROM dbstat d LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1"
            )
            found = [TableSize(name, int(size), int(rows)) for name, size, rows in cursor.fetchall()]
            # Deleted rows free pages inside the file, which new rows reuse before it grows;
            # only VACUUM gives them back to the file system.
            cursor.execute("PRAGMA freelist_count")
            free_pages = int(cursor.fetchone()[0])
            cursor.execute("PRAGMA page_size")
            found.append(TableSize(FREE_PAGES, free_pages * int(cursor.fetchone()[0]), None))
        else:
            return []
    return sorted(found, key=lambda t: (-t.bytes, t.name))
