"""The index on telemetry time that retention takes the oldest samples by.

On PostgreSQL it is built CONCURRENTLY: on a hub that already holds millions of samples a
plain CREATE INDEX would block the gateway's inserts for as long as the build takes. SQLite
has no such option (and one writer at a time anyway)."""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexConcurrentlyOnPostgres(AddIndexConcurrently):
    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            migrations.AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("devices", "0006_telemetry_rollups"),
    ]

    operations = [
        AddIndexConcurrentlyOnPostgres(
            model_name="telemetrysample",
            index=models.Index(fields=["ts"], name="telemetry_sample_ts_idx"),
        ),
    ]
