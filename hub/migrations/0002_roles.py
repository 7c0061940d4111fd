"""The three roles as Django groups with their model permissions (ARCHITECTURE §9).

Pages and the API decide by scope (`hub.scopes.ROLE_SCOPES`: viewer reads, operator
also commands, admin everything); the model permissions mirror that for the admin site.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

APPS = ("hub", "audit", "devices", "industrial", "ota", "automation", "django_celery_beat")
OPERATOR_EXTRA = {("devices", "add_command"), ("devices", "change_device")}


def create_roles(apps: Any, schema_editor: Any) -> None:
    from django.apps import apps as global_apps
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations (post_migrate); the groups need them now.
    for config in global_apps.get_app_configs():
        config.models_module = True
        create_permissions(config, verbosity=0)
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ours = Permission.objects.filter(content_type__app_label__in=APPS)
    view = list(ours.filter(codename__startswith="view_"))
    roles = {
        "viewer": view,
        "operator": view + [p for p in ours if (p.content_type.app_label, p.codename) in OPERATOR_EXTRA],
        "admin": list(ours),
    }
    for name, permissions in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(permissions)


def remove_roles(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name__in=["viewer", "operator", "admin"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("hub", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("audit", "0001_initial"),
        ("devices", "0002_identity"),
        ("industrial", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
