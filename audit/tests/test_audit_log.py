"""The audit log in the database: appends, concurrent writers, tampering, `audit verify`, the API."""

from __future__ import annotations

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from rest_framework.test import APIClient

from audit.chain import GENESIS_HASH
from audit.models import AuditChainHead, AuditEvent
from audit.services import Actor, Entry, record, record_many, verify

ALICE = Actor("user", "alice")


def run_verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("audit", "verify", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_chains_each_event_to_the_one_before() -> None:
    first = record(ALICE, "command.create", "allow", scope="command", target_type="device", target_id="sensor-1")
    second = record(Actor("token", "abc/bob"), "command.create", "deny", reason="missing scope 'command'")
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert AuditChainHead.objects.get().seq == 2
    assert "2 events verified" in run_verify()


@pytest.mark.django_db
def test_it_appends_a_batch_as_one_chain_segment() -> None:
    record(ALICE, "login", "allow")
    events = record_many([Entry(Actor("device", f"sensor-{i}"), "frame.state", "allow") for i in range(50)])
    assert [e.seq for e in events] == list(range(2, 52))
    assert verify().ok and verify().checked == 51


@pytest.mark.django_db
def test_it_refuses_an_event_without_a_valid_decision() -> None:
    with pytest.raises(ValueError, match="decision"):
        record(ALICE, "x", "maybe")
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_it_keeps_details_exactly_as_hashed() -> None:
    record(ALICE, "x", "allow", details={"value": 21.5, "nested": {"b": 1, "a": [True, None]}, "text": "ünïcode"})
    assert verify().ok


@pytest.mark.django_db
def test_audit_verify_names_an_edited_event() -> None:
    for i in range(5):
        record(ALICE, "command.create", "allow", target_id=f"sensor-{i}")
    victim = AuditEvent.objects.get(seq=3)
    with connection.cursor() as cursor:  # what an attacker with database access does
        cursor.execute("UPDATE audit_auditevent SET decision = 'deny' WHERE id = %s", [victim.pk])
    with pytest.raises(CommandError, match=rf"broken at event id {victim.pk} \(seq 3\): hash does not match"):
        run_verify()


@pytest.mark.django_db
def test_audit_verify_names_the_event_after_a_deleted_one() -> None:
    for i in range(5):
        record(ALICE, "command.create", "allow", target_id=f"sensor-{i}")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 2")
    successor = AuditEvent.objects.get(seq=3)
    with pytest.raises(CommandError, match=rf"broken at event id {successor.pk} \(seq 3\): sequence gap"):
        run_verify()


@pytest.mark.django_db
def test_audit_verify_notices_a_deleted_last_event() -> None:
    for _ in range(3):
        record(ALICE, "x", "allow")
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE seq = 3")
    with pytest.raises(CommandError, match="events at the end were deleted"):
        run_verify()


def test_audit_verify_exits_non_zero_from_the_shell(transactional_db: None) -> None:
    """The contract is the process exit status, so check it through manage.py itself."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    record(ALICE, "x", "allow")
    record(ALICE, "y", "allow")
    env = dict(os.environ)
    if settings.EMBEDDED:
        # The test database is a different file from the one manage.py would open.
        env["MESHHUB_SQLITE_PATH"] = str(connection.settings_dict["NAME"])
    else:
        db = connection.settings_dict
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    ok = subprocess.run([sys.executable, "manage.py", "audit", "verify"], env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "2 events verified" in ok.stdout
    with connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor_id = 'mallory' WHERE seq = 1")
    bad = subprocess.run([sys.executable, "manage.py", "audit", "verify"], env=env, capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    first = AuditEvent.objects.get(seq=1)
    assert f"event id {first.pk} (seq 1)" in bad.stderr


@pytest.mark.slow
def test_concurrent_writers_leave_one_unbroken_chain(transactional_db: None) -> None:
    """8 threads x 500 appends: the head lock must serialize them into one chain."""
    threads_n, per_thread = 8, 500
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                record(Actor("device", f"sensor-{n}"), "frame.state", "allow", details={"i": i})
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = verify()
    assert result.ok, result.broken
    assert result.checked == threads_n * per_thread
    assert AuditEvent.objects.values("seq").distinct().count() == threads_n * per_thread


@pytest.mark.django_db
def test_it_serves_the_log_to_admin_tokens_with_filters(admin_api: APIClient, bob_api: APIClient) -> None:
    record(ALICE, "command.create", "allow", scope="command", target_type="device", target_id="sensor-1")
    record(Actor("token", "k1/mallory"), "api.authenticate", "deny", reason="invalid token")
    denied = admin_api.get("/api/v1/audit/?decision=deny").json()
    assert [e["actor_id"] for e in denied["results"]] == ["k1/mallory"]
    by_actor = admin_api.get("/api/v1/audit/?actor=alice").json()
    assert [e["action"] for e in by_actor["results"]] == ["command.create"]
    by_action = admin_api.get("/api/v1/audit/?action=api.").json()
    assert {e["action"] for e in by_action["results"]} == {"api.authenticate"}
    assert admin_api.get("/api/v1/audit/?decision=perhaps").status_code == 400
    refused = bob_api.get("/api/v1/audit/")
    assert refused.status_code == 403
    assert AuditEvent.objects.filter(action="api.audit.list", decision="deny", reason="missing scope 'admin'").exists()


@pytest.mark.django_db
def test_it_answers_400_for_dates_postgresql_cannot_hold(admin_api: APIClient) -> None:
    """Found by schemathesis: +17:23 is a valid Python offset but not a PostgreSQL one."""
    response = admin_api.get("/api/v1/audit/", {"until": "0285-11-10T20:35:59.62+17:23"})
    assert response.status_code == 200
    far_past = admin_api.get("/api/v1/audit/", {"since": "0001-01-01T00:00:00+10:00"})
    assert far_past.status_code == 400
    assert "since" in far_past.json()
