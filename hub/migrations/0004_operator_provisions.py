"""Operators provision (scope `reset`: enrollment codes, revocation); their model
permissions follow, for the admin site."""

from __future__ import annotations

from typing import Any

from django.db import migrations

PROVISIONING = [("devices", "add_enrollment"), ("devices", "change_enrollment"), ("devices", "change_certificate")]


def grant(apps: Any, schema_editor: Any) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    operator = Group.objects.filter(name="operator").first()
    if operator is None:
        return
    for app_label, codename in PROVISIONING:
        permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if permission is not None:
            operator.permissions.add(permission)


def revoke(apps: Any, schema_editor: Any) -> None:
    Group = apps.get_model("auth", "Group")
    operator = Group.objects.filter(name="operator").first()
    if operator is not None:
        operator.permissions.remove(*operator.permissions.filter(codename__in=[c for _, c in PROVISIONING]))


class Migration(migrations.Migration):
    dependencies = [("hub", "0003_heartbeat_details"), ("hub", "0002_roles")]

    operations = [migrations.RunPython(grant, revoke)]
