"""`manage.py ensureadmin`: first-run admin account with a generated password, never a default.

The password is printed once, when the account is created, and kept in
`<data dir>/admin_password` (mode 0600) for the operator to read later.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from audit.models import Decision
from audit.services import Actor, record
from hub.settings import write_private_file


class Command(BaseCommand):
    help = "Create the first admin user with a generated password if no superuser exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        path = settings.DATA_DIR / "admin_password"
        if User.objects.filter(is_superuser=True).exists():
            where = f" (initial password in {path})" if path.exists() else ""
            self.stdout.write(f"admin account exists{where}")
            return
        password = secrets.token_urlsafe(15)
        User.objects.create_superuser(username=options["username"], email="", password=password)
        path.unlink(missing_ok=True)
        write_private_file(path, password + "\n")
        record(
            Actor.system("manage.py"),
            "user.create",
            Decision.ALLOW,
            scope="admin",
            target_type="user",
            target_id=options["username"],
            details={"superuser": True},
        )
        banner = "=" * 64
        self.stdout.write(
            f"{banner}\n  meshhub admin account created\n  username: {options['username']}\n  password: {password}\n  (saved to {path}, mode 0600; shown only this once)\n{banner}"
        )
