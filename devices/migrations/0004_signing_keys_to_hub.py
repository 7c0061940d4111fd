"""The hub signing and release keys move to `hub.SigningKey`: the audit app signs with the
hub signing key and must not reach into this app. Rows are copied as they are (active or
rotated out, private half or none), then removed here; HubKey keeps the server TLS key."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models

SIGNING_KINDS = ("hub_signing", "release_signing")
FIELDS = ("kind", "public", "key_pem", "active", "created_at")


def to_hub(apps: Any, schema_editor: Any) -> None:
    HubKey = apps.get_model("devices", "HubKey")
    SigningKey = apps.get_model("hub", "SigningKey")
    db = schema_editor.connection.alias
    rows = HubKey.objects.using(db).filter(kind__in=SIGNING_KINDS).order_by("created_at", "pk")
    SigningKey.objects.using(db).bulk_create([SigningKey(**{name: getattr(row, name) for name in FIELDS}) for row in rows])
    rows.delete()


def back_to_devices(apps: Any, schema_editor: Any) -> None:
    HubKey = apps.get_model("devices", "HubKey")
    SigningKey = apps.get_model("hub", "SigningKey")
    db = schema_editor.connection.alias
    rows = SigningKey.objects.using(db).order_by("created_at", "pk")
    HubKey.objects.using(db).bulk_create([HubKey(**{name: getattr(row, name) for name in FIELDS}) for row in rows])
    rows.delete()


class Migration(migrations.Migration):

    dependencies = [
        ('devices', '0003_revocation_kind'),
        ('hub', '0005_signing_key'),
    ]

    operations = [
        migrations.RunPython(to_hub, back_to_devices),
        migrations.AlterField(
            model_name='hubkey',
            name='kind',
            field=models.CharField(choices=[('server_tls', 'Gateway TLS server certificate')], max_length=20),
        ),
    ]
