"""One TelemetrySample per (device, capability, ts): resent reports are stored once.

Duplicates written before (a report resent after a lost ack) are removed first, keeping
the oldest row of each; the unique constraint's index replaces `telemetry_range_idx`
(same columns, same order)."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

DELETE_DUPLICATES = """
DELETE FROM devices_telemetrysample
WHERE id IN (
    SELECT id FROM (
        SELECT id, ROW_NUMBER() OVER (PARTITION BY device_id, capability, ts ORDER BY id) AS n
        FROM devices_telemetrysample
    ) AS numbered
    WHERE n > 1
)
"""


def remove_duplicates(apps: Any, schema_editor: Any) -> None:
    # One statement on both SQLite (3.25+ has window functions) and PostgreSQL.
    schema_editor.execute(DELETE_DUPLICATES)


class Migration(migrations.Migration):
    dependencies = [
        ("devices", "0004_signing_keys_to_hub"),
    ]

    operations = [
        migrations.RunPython(remove_duplicates, migrations.RunPython.noop),
        migrations.RemoveIndex(model_name="telemetrysample", name="telemetry_range_idx"),
        migrations.AddConstraint(
            model_name="telemetrysample",
            constraint=models.UniqueConstraint(fields=("device", "capability", "ts"), name="telemetry_sample_unique"),
        ),
    ]
