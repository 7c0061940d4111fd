"""Operations surface: /healthz, /metrics, management commands, expiry, settings defaults."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.services import Actor
from devices import services
from devices.models import Command, CommandStatus
from devices.tasks import expire_commands
from hub.models import ApiToken
from tests.factories import thermostat

pytestmark = pytest.mark.django_db


def test_healthz_reports_every_component() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"database", "channel_layer", "broker"}
    assert all(c["status"] == "ok" for c in body["components"].values())
    expected = ("embedded", "InMemoryChannelLayer", "filesystem") if settings.EMBEDDED else ("production", "RedisChannelLayer", "redis")
    assert (body["mode"], body["components"]["channel_layer"]["backend"], body["components"]["broker"]["transport"]) == expected


def test_healthz_names_a_broken_component(settings: pytest.FixtureRequest) -> None:
    # A broker nobody listens on: the endpoint must say which part is down, with 503.
    from hub.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        response = Client().get("/healthz")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    body = response.json()
    assert body["components"]["broker"]["status"] == "error"
    assert body["components"]["database"]["status"] == "ok"


def test_the_browser_s_favicon_request_finds_the_icon() -> None:
    client = Client()
    answer = client.get("/favicon.ico")
    assert answer.status_code == 301 and answer["Location"].endswith("meshhub/favicon.svg")
    assert client.get(answer["Location"]).status_code == 200


def test_metrics_expose_fleet_commands_and_audit() -> None:
    thermostat("sensor-1", online=True)
    thermostat("sensor-2")
    services.send_command(Actor("user", "alice"), "sensor-1", "set", "setpoint", 20)
    text = Client().get("/metrics").content.decode()
    assert "meshhub_devices_online 1.0" in text
    assert 'meshhub_devices{online="false",status="provisioned"} 1.0' in text
    assert 'meshhub_commands{status="pending"} 1.0' in text
    assert 'meshhub_audit_events{decision="allow"} 1.0' in text


def test_expired_commands_are_marked_by_the_beat_task() -> None:
    thermostat("sensor-1")
    alice = Actor("user", "alice")
    stale = services.send_command(alice, "sensor-1", "set", "setpoint", 20, ttl_s=1)
    fresh = services.send_command(alice, "sensor-1", "set", "setpoint", 21, ttl_s=600)
    done = services.send_command(alice, "sensor-1", "get", "temperature", ttl_s=1)
    Command.objects.filter(pk=done.pk).update(status=CommandStatus.SUCCEEDED)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Command.objects.filter(pk__in=[stale.pk, done.pk]).update(created_at=an_hour_ago, expires_at=an_hour_ago + timedelta(seconds=1))
    assert expire_commands() == 1
    assert Command.objects.get(pk=stale.pk).status == CommandStatus.EXPIRED
    assert Command.objects.get(pk=fresh.pk).status == CommandStatus.PENDING
    assert Command.objects.get(pk=done.pk).status == CommandStatus.SUCCEEDED
    assert expire_commands() == 0


def test_createapitoken_prints_a_working_token_once(alice: object) -> None:
    out = StringIO()
    call_command("createapitoken", "--user", "alice", "--scopes", "read-status,command", "--json", stdout=out)
    payload = json.loads(out.getvalue())
    assert payload["scopes"] == ["command", "read-status"]
    token = ApiToken.objects.get(key=payload["key"])
    assert payload["token"] not in token.secret_hash, "only a hash is stored"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {payload['token']}")
    assert client.get("/api/v1/devices/").status_code == 200
    assert AuditEvent.objects.filter(action="apitoken.create", target_id=token.key).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody", "--scopes", "read-status"], "no user named 'nobody'"),
        (["--user", "alice", "--scopes", "read-status,root"], "unknown scope(s) root"),
        (["--user", "alice", "--scopes", ","], "at least one scope is required"),
    ],
)
def test_createapitoken_refuses_bad_arguments(alice: object, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("createapitoken", *args)
    assert not ApiToken.objects.exists()


def test_tokens_stop_working_when_expired_or_revoked(alice: object) -> None:
    token, plaintext = ApiToken.issue(alice, ["read-status"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    assert client.get("/api/v1/devices/").status_code == 200
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/devices/").status_code == 401
    ApiToken.objects.filter(pk=token.pk).update(expires_at=None, revoked=True)
    assert client.get("/api/v1/devices/").status_code == 401
    reasons = list(AuditEvent.objects.filter(action="api.authenticate").order_by("seq").values_list("reason", flat=True))
    assert reasons == ["token expired", "token revoked"]


def test_ensureadmin_creates_one_admin_with_a_private_generated_password() -> None:
    out = StringIO()
    path = settings.DATA_DIR / "admin_password"
    path.unlink(missing_ok=True)
    call_command("ensureadmin", stdout=out)
    password = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(password) >= 16 and password in out.getvalue()
    assert Client().login(username="admin", password=password)
    again = StringIO()
    call_command("ensureadmin", stdout=again)
    assert password not in again.getvalue(), "the password is printed only once"
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def fresh_install_settings(data_dir: Path, **extra_env: str) -> dict[str, object]:
    """The real settings module loaded in a new process with the environment of a fresh
    install: no MESHHUB_* but the data dir, no database or Redis URL. In-process settings
    prove nothing here: pytest-django forces DEBUG off whatever the default is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHHUB_", "DJANGO_")) and k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(MESHHUB_DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="hub.settings", **extra_env)
    code = "import json, django; django.setup(); from django.conf import settings as s; print(json.dumps({'DEBUG': s.DEBUG}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fresh_install_runs_with_debug_off_and_a_private_secret_key_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    loaded = fresh_install_settings(data_dir)
    assert loaded["DEBUG"] is False
    path = data_dir / "secret_key"
    assert path.is_file(), "a fresh install generates its secret key into the data dir"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert fresh_install_settings(data_dir, MESHHUB_DEBUG="1")["DEBUG"] is True, "the probe sees the real setting"


def test_the_admin_login_page_and_api_docs_render_offline() -> None:
    client = Client()
    assert client.get("/admin/login/").status_code == 200
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    # Every asset the page loads is the hub's own (the sidecar's static files): no
    # absolute or protocol-relative URL. (Not a substring test for "cdn": the page
    # carries a random CSRF token, which now and then spells it.)
    assets = re.findall(r'(?:src|href)="([^"]*)"', docs.content.decode())
    assert assets, "the docs page loads Swagger UI's assets"
    assert all(url.startswith("/static/") for url in assets), assets
    assert "//" not in "".join(assets), "API docs load their assets from the hub itself"
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/devices/{node_id}/commands/" in schema.content
