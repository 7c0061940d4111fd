"""Signed daily snapshots and the JSONL export: through the service, the beat task,
`manage.py audit`, and the pages an admin downloads them from."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from io import StringIO
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from asgiref.sync import async_to_sync
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import AsyncClient, Client

from audit import snapshots
from audit.chain import GENESIS_HASH, HASHED_FIELDS, iter_links, verify_links
from audit.models import AuditChainHead, AuditEvent, AuditSnapshot
from audit.services import Actor, record
from audit.tasks import snapshot_audit
from conftest import client_for
from hub import signing
from hub.models import SigningKey, SigningKeyKind

pytestmark = pytest.mark.django_db

ALICE = Actor("user", "alice")
DOWNLOADS = ["/audit/export.jsonl", "/audit/snapshots/", "/audit/snapshots/2026-01-01.json", "/audit/signing-key.pem"]


def days_ago(n: int) -> date:
    return snapshots.utc_today() - timedelta(days=n)


@contextmanager
def clock(at: datetime) -> Iterator[None]:
    """Events written through the real `record()`, stamped at a past moment (no freezegun)."""
    with mock.patch("django.utils.timezone.now", return_value=at):
        yield


def events_on(day: date, n: int, action: str = "command.create") -> list[AuditEvent]:
    """n events on a past UTC day, an hour apart from 08:00, in chain order."""
    start = datetime.combine(day, time(8), tzinfo=UTC)
    made = []
    for i in range(n):
        with clock(start + timedelta(hours=i)):
            made.append(record(ALICE, action, "allow", scope="command", target_type="device", target_id=f"sensor-{i}", details={"i": i, "note": "ünïcode"}))
    return made


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("audit", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """What a third party does with an export: read each line, turn `ts` back into a datetime."""
    rows = [json.loads(line) for line in text.splitlines()]
    for row in rows:
        row["ts"] = datetime.fromisoformat(row["ts"])
    return rows


# --- signing and verifying -----------------------------------------------------------


def test_it_signs_a_past_day_that_verifies_with_the_published_key(root_web: Client) -> None:
    day = days_ago(2)
    made = events_on(day, 3)
    snap = snapshots.take_snapshot(day)
    assert json.loads(snap.payload) == {"date": day.isoformat(), "first_id": made[0].seq, "last_id": made[-1].seq, "last_hash": made[-1].hash, "count": 3}

    pem = root_web.get("/audit/signing-key.pem")
    assert pem.status_code == 200 and "attachment" in pem["Content-Disposition"]
    published = load_pem_public_key(pem.content)
    assert isinstance(published, ed25519.Ed25519PublicKey)

    answer = root_web.get(f"/audit/snapshots/{day.isoformat()}.json")
    assert answer.status_code == 200 and "attachment" in answer["Content-Disposition"]
    document = answer.json()
    signature = base64.b64decode(document["signature"])
    published.verify(signature, document["payload"].encode("utf-8"))  # raises if it does not verify
    ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(document["public_key"])).verify(signature, document["payload"].encode("utf-8"))
    assert load_pem_public_key(document["public_key_pem"].encode()).public_bytes_raw() == published.public_bytes_raw()
    with pytest.raises(InvalidSignature):
        published.verify(signature, document["payload"].replace('"count":3', '"count":2').encode("utf-8"))
    assert snapshots.verify_snapshot(snap) is None


def test_it_signs_a_day_once() -> None:
    day = days_ago(1)
    events_on(day, 2)
    first = snapshots.take_snapshot(day)
    again = snapshots.take_snapshot(day)
    assert (again.pk, again.signature) == (first.pk, first.signature)
    signed = AuditEvent.objects.get(action="audit.snapshot")
    assert signed.decision == "allow" and signed.target_id == day.isoformat() and signed.details["count"] == 2
    assert signed.ts.date() > day  # stamped after the day it attests


def test_it_refuses_a_day_that_is_not_over() -> None:
    record(ALICE, "login", "allow")
    today = snapshots.utc_today()
    with pytest.raises(snapshots.SnapshotError, match="is not over yet") as refused:
        snapshots.take_snapshot(today)
    assert refused.value.code == "not_over"
    later = today + timedelta(days=3)
    with pytest.raises(CommandError, match=f"no snapshot of {later.isoformat()}: {later.isoformat()} is not over yet"):
        run("snapshot", "--date", later.isoformat())
    assert not AuditSnapshot.objects.exists()


def test_the_command_signs_yesterday_by_default() -> None:
    events_on(days_ago(1), 2)
    out, _ = run("snapshot")
    assert f"audit snapshot of {days_ago(1).isoformat()} signed: 2 events (seq 1-2)" in out
    again, _ = run("snapshot", "--date", days_ago(1).isoformat())
    assert "already taken" in again
    assert AuditEvent.objects.get(action="audit.snapshot").actor_id == "manage.py"


def test_the_beat_task_catches_up_on_every_missed_day() -> None:
    """The hub was off: events five and three days ago, nothing since, no snapshot yet."""
    early = events_on(days_ago(5), 2)
    late = events_on(days_ago(3), 3)
    taken = snapshot_audit()
    assert taken == [days_ago(n).isoformat() for n in (5, 4, 3, 2, 1)]
    by_day = {s.date: s for s in AuditSnapshot.objects.all()}
    assert [by_day[days_ago(n)].count for n in (5, 4, 3, 2, 1)] == [2, 0, 3, 0, 0]
    quiet = by_day[days_ago(4)]
    assert (quiet.first_id, quiet.last_id, quiet.last_hash) == (None, None, early[-1].hash)  # the tail so far
    assert by_day[days_ago(1)].last_hash == late[-1].hash
    assert all(snapshots.verify_snapshot(s) is None for s in by_day.values())
    # The task's own events land on today, which no snapshot covers yet.
    assert AuditEvent.objects.filter(action="audit.snapshot", ts__date=snapshots.utc_today()).count() == 5
    assert snapshot_audit() == []
    out, _ = run("verify")
    assert "audit chain intact" in out and "audit snapshots intact: 5 snapshots verified" in out


def test_a_day_before_the_log_starts_is_not_signed() -> None:
    events_on(days_ago(2), 1)
    with pytest.raises(snapshots.SnapshotError, match="before the audit log's first event"):
        snapshots.take_snapshot(days_ago(9))


def test_it_still_verifies_snapshots_signed_before_a_key_rotation() -> None:
    events_on(days_ago(2), 1)
    events_on(days_ago(1), 1)
    old = snapshots.take_snapshot(days_ago(2))
    SigningKey.objects.filter(kind=SigningKeyKind.HUB_SIGNING).update(active=False)
    signing.signing_key()  # a fresh active key
    new = snapshots.take_snapshot(days_ago(1))
    assert new.public_key != old.public_key
    assert snapshots.verify_snapshot(old) is None and snapshots.verify_snapshot(new) is None


# --- tampering -----------------------------------------------------------------------


def test_a_tampered_row_breaks_the_chain_and_its_days_snapshot(root_web: Client) -> None:
    day = days_ago(2)
    made = events_on(day, 4)
    snapshot_audit()
    victim = made[1]
    AuditEvent.objects.filter(pk=victim.pk).update(reason="edited behind the log's back")
    with pytest.raises(CommandError, match=rf"audit chain broken at event id {victim.pk} \(seq {victim.seq}\): hash does not match") as broken:
        run("verify")
    assert "snapshot" not in str(broken.value)  # the chain's first bad entry stays the headline
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("audit", "verify", stdout=StringIO(), stderr=err)
    assert f"audit snapshot of {day.isoformat()} failed: the day's events no longer hash: event id {victim.pk} (seq {victim.seq})" in err.getvalue()
    assert "1 failing" in err.getvalue()
    page = root_web.get("/audit/snapshots/").content.decode()
    assert 'data-check="failed"' in page and f"event id {victim.pk}" in page
    assert 'data-chain="broken"' in root_web.get("/audit/").content.decode()


def test_a_deleted_row_fails_its_days_snapshot() -> None:
    day = days_ago(2)
    made = events_on(day, 4)
    snap = snapshots.take_snapshot(day)
    AuditEvent.objects.filter(pk=made[1].pk).delete()
    gone, after = made[1], made[2]
    assert (
        snapshots.verify_snapshot(snap)
        == f"the day's events no longer hash: event seq {gone.seq}, before event id {after.pk} (seq {after.seq}), is missing (it was deleted)"
    )
    with pytest.raises(CommandError, match=rf"event id {made[2].pk} \(seq {made[2].seq}\): sequence gap"):
        run("verify")


def test_a_deleted_last_row_of_the_day_fails_its_snapshot() -> None:
    day = days_ago(2)
    made = events_on(day, 3)
    snap = snapshots.take_snapshot(day)
    AuditEvent.objects.filter(pk=made[-1].pk).delete()
    assert snapshots.verify_snapshot(snap) == "count was 3 when signed but is 2 now (events of the day were deleted, added or rewritten)"


def test_a_rewritten_chain_with_a_new_head_still_fails_the_snapshot() -> None:
    """What the chain alone cannot catch: every hash recomputed and the head moved along."""
    day = days_ago(2)
    made = events_on(day, 3)
    snap = snapshots.take_snapshot(day)
    rows = list(AuditEvent.objects.order_by("seq").values())
    rows[1]["reason"] = "forged"
    relinked = list(iter_links(GENESIS_HASH, 1, [{k: v for k, v in r.items() if k not in ("seq", "prev_hash", "hash")} for r in rows]))
    for row in relinked:
        AuditEvent.objects.filter(pk=row["id"]).update(prev_hash=row["prev_hash"], hash=row["hash"], reason=row["reason"])
    AuditChainHead.objects.update(hash=relinked[-1]["hash"])
    out = StringIO()
    with pytest.raises(CommandError, match=f"audit snapshot of {day.isoformat()} failed: last_hash was {made[-1].hash}"):
        call_command("audit", "verify", stdout=out, stderr=StringIO())
    assert "audit chain intact" in out.getvalue()
    assert snapshots.verify_snapshot(snap) is not None


def test_a_snapshot_signed_by_another_key_fails() -> None:
    """mallory re-signs a doctored payload with her own key and stores her public key."""
    day = days_ago(2)
    events_on(day, 2)
    snap = snapshots.take_snapshot(day)
    mallory = ed25519.Ed25519PrivateKey.generate()
    payload = snap.payload.replace('"count":2', '"count":1')
    AuditSnapshot.objects.filter(pk=snap.pk).update(
        payload=payload,
        count=1,
        signature=base64.b64encode(mallory.sign(payload.encode())).decode(),
        public_key=base64.b64encode(mallory.public_key().public_bytes_raw()).decode(),
    )
    snap.refresh_from_db()
    assert snapshots.verify_snapshot(snap) == "signed by a key that is not one of the hub's signing keys"
    # She also writes her key into the hub's key table, as a rotated-out signing key, with
    # an empty private half or one encrypted under a passphrase of her own: still refused.
    mallory_public = base64.b64encode(mallory.public_key().public_bytes_raw()).decode()
    for key_pem in ("", signing.encrypt_key(mallory, b"mallory's passphrase").decode()):
        SigningKey.objects.create(kind=SigningKeyKind.HUB_SIGNING, public=mallory_public, key_pem=key_pem, active=False)
        assert snapshots.verify_snapshot(snap) == "signed by a key that is not one of the hub's signing keys"
    AuditSnapshot.objects.filter(pk=snap.pk).update(signature=base64.b64encode(b"\0" * 64).decode())
    snap.refresh_from_db()
    assert snapshots.verify_snapshot(snap) == "the signature does not verify with the snapshot's public key"


def test_a_deleted_snapshot_leaves_a_hole_that_verify_names() -> None:
    events_on(days_ago(4), 1)
    snapshot_audit()
    AuditSnapshot.objects.filter(date=days_ago(3)).delete()
    with pytest.raises(CommandError, match=f"audit snapshot of {days_ago(3).isoformat()} failed: no snapshot for this day"):
        run("verify")


def test_finished_days_after_the_newest_snapshot_are_named_unsigned(root_web: Client) -> None:
    """Only holes between snapshots counted once: deleting the newest snapshots went
    unnoticed. Days after the newest are now named (a warning: the chain may be intact and
    beat simply not running), on the page and by `audit verify`."""
    events_on(days_ago(4), 1)
    snapshot_audit()
    AuditSnapshot.objects.filter(date__gte=days_ago(2)).delete()
    noon = datetime.combine(snapshots.utc_today(), time(12), tzinfo=UTC)  # yesterday is due by then
    report = snapshots.verify_snapshots(now=noon)
    assert report.ok and report.unsigned == [days_ago(2), days_ago(1)]  # what is signed holds; these are not attested
    with clock(noon):
        out, err = run("verify")
        page = root_web.get("/audit/snapshots/").content.decode()
    assert "audit snapshots intact: 2 snapshots verified" in out
    assert f"warning: 2 finished days after the newest snapshot are not signed ({days_ago(2).isoformat()} to {days_ago(1).isoformat()})" in err
    assert 'data-snapshots="missing"' in page and "2 finished days of the log have no snapshot" in page
    # Yesterday is due only once the hourly task has had its hours to sign it.
    just_after_midnight = datetime.combine(snapshots.utc_today(), time(0, 30), tzinfo=UTC)
    assert snapshots.verify_snapshots(now=just_after_midnight).unsigned == [days_ago(2)]
    # A hole before the newest snapshot is a failure, as before.
    AuditSnapshot.objects.filter(date=days_ago(3)).delete()
    snapshots.take_snapshot(days_ago(1))
    assert [(f.date, f.reason) for f in snapshots.verify_snapshots(now=noon).failures] == [(days_ago(3), snapshots.MISSING), (days_ago(2), snapshots.MISSING)]


def test_it_refuses_to_sign_a_day_that_no_longer_hashes() -> None:
    made = events_on(days_ago(2), 2)
    AuditEvent.objects.filter(pk=made[0].pk).update(actor_id="mallory")
    assert snapshot_audit() == [days_ago(1).isoformat()]
    assert not AuditSnapshot.objects.filter(date=days_ago(2)).exists()
    refusal = AuditEvent.objects.get(action="audit.snapshot", decision="deny")
    assert refusal.target_id == days_ago(2).isoformat() and f"event id {made[0].pk}" in refusal.reason


def test_signature_checks_reject_garbage() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes_raw()).decode()
    good = base64.b64encode(key.sign(b"{}")).decode()
    assert snapshots.signature_valid("{}", good, public)
    assert not snapshots.signature_valid("{} ", good, public)
    assert not snapshots.signature_valid("{}", "not base64!", public)
    assert not snapshots.signature_valid("{}", good, base64.b64encode(b"short").decode())


# --- export --------------------------------------------------------------------------


def test_the_export_command_writes_a_chain_a_third_party_can_rehash(tmp_path: Path) -> None:
    events_on(days_ago(3), 3)
    events_on(days_ago(2), 2)
    record(Actor("device", "sensor-1"), "frame.state", "deny", reason="nul \x00 and newline \n in it")
    target = tmp_path / "audit.jsonl"
    out, _ = run("export", "-o", str(target))
    assert out.strip() == f"exported 6 audit events to {target}"
    rows = parse_jsonl(target.read_text(encoding="utf-8"))
    assert [r["seq"] for r in rows] == list(range(1, 7))
    assert verify_links(rows, AuditChainHead.objects.values_list("seq", "hash").get()) == (6, None)
    assert set(rows[0]) == {"id", *HASHED_FIELDS, "prev_hash", "hash"}

    to_stdout, _ = run("export")
    assert to_stdout == target.read_text(encoding="utf-8")


def test_an_export_of_one_day_matches_its_snapshot() -> None:
    events_on(days_ago(3), 3)
    events_on(days_ago(2), 2)
    snap = snapshots.take_snapshot(days_ago(3))
    day = days_ago(3).isoformat()
    out, _ = run("export", "--since", day, "--until", day)
    rows = parse_jsonl(out)
    assert (len(rows), rows[0]["seq"], rows[-1]["seq"], rows[-1]["hash"]) == (snap.count, snap.first_id, snap.last_id, snap.last_hash)
    with pytest.raises(CommandError, match="not a date"):
        run("export", "--since", "yesterday")


def test_the_export_download_streams_the_filtered_log(root_web: Client) -> None:
    events_on(days_ago(2), 3)
    record(Actor("token", "k1/mallory"), "api.authenticate", "deny", reason="invalid token")
    answer = root_web.get("/audit/export.jsonl")
    assert answer.status_code == 200 and answer.streaming
    assert answer["Content-Type"].startswith("application/x-ndjson") and "attachment" in answer["Content-Disposition"]
    rows = parse_jsonl(b"".join(answer.streaming_content).decode())  # type: ignore[arg-type]
    assert rows[-1]["action"] == "audit.export" and rows[-1]["actor_id"] == "root"  # the download is on the record
    assert verify_links(rows, None) == (len(rows), None) and len(rows) == AuditEvent.objects.count()
    denied = parse_jsonl(b"".join(root_web.get("/audit/export.jsonl", {"decision": "deny"}).streaming_content).decode())  # type: ignore[arg-type]
    assert [r["actor_id"] for r in denied] == ["k1/mallory"]


def test_the_export_download_of_one_day_is_that_days_snapshot_in_any_time_zone(root_web: Client, settings: Any) -> None:
    """The page's dates are UTC days like the snapshots': with the hub in New York, events
    at 01:00 and 23:00 UTC still belong to their UTC day (a local-date filter dropped the
    01:00 one, and a clean log failed a third party's check)."""
    settings.TIME_ZONE = "America/New_York"
    day = days_ago(2)
    for hour in (1, 12, 23):
        with clock(datetime.combine(day, time(hour), tzinfo=UTC)):
            record(ALICE, "command.create", "allow", scope="command")
    snap = snapshots.take_snapshot(day)
    answer = root_web.get("/audit/export.jsonl", {"since": day.isoformat(), "until": day.isoformat()})
    rows = parse_jsonl(b"".join(answer.streaming_content).decode())  # type: ignore[arg-type]
    assert (len(rows), rows[0]["seq"], rows[-1]["seq"], rows[-1]["hash"]) == (snap.count, snap.first_id, snap.last_id, snap.last_hash)


def test_the_first_and_last_days_there_are_filter_without_a_500(root_web: Client) -> None:
    events_on(days_ago(2), 2)
    for query in ({"since": "0001-01-01", "until": "9999-12-31"}, {"until": "9999-12-31"}):
        assert root_web.get("/audit/", query).status_code == 200
        rows = parse_jsonl(b"".join(root_web.get("/audit/export.jsonl", query).streaming_content).decode())  # type: ignore[arg-type]
        assert len(rows) >= 2
    out, _ = run("export", "--until", "9999-12-31")
    assert len(parse_jsonl(out)) >= 2


@pytest.mark.parametrize("since", ["2026-02-30", "2026-13-01", "0000-01-01", "yesterday"])
def test_a_date_that_is_none_is_a_400_naming_it_on_the_page_and_the_export(root_web: Client, since: str) -> None:
    page = root_web.get("/audit/", {"since": since})
    assert page.status_code == 400 and f"since: {since!r} is not a date" in page.content.decode().replace("&#x27;", "'")
    export = root_web.get("/audit/export.jsonl", {"since": since})
    assert export.status_code == 400 and export.content.decode() == f"since: {since!r} is not a date (YYYY-MM-DD)"


@pytest.mark.filterwarnings("error")  # Django warns when it must read a sync iterator to the end first
def test_the_export_download_streams_under_asgi_too(root: Any) -> None:
    """Daphne serves the pages: the export streams there too, as an async iterator."""
    events_on(days_ago(2), 2)

    async def fetch() -> bytes:
        client = AsyncClient()
        await client.aforce_login(root)
        response = await client.get("/audit/export.jsonl")
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.streaming_content])

    rows = parse_jsonl(async_to_sync(fetch)().decode())
    assert [r["action"] for r in rows] == ["command.create", "command.create", "audit.export"]
    assert verify_links(rows, None) == (3, None)


# --- pages ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_get_the_downloads_and_every_refusal_is_audited(role: str, alice: Any) -> None:
    client = client_for(alice, role)
    for path in DOWNLOADS:
        assert client.get(path).status_code == 403, path
    refused = AuditEvent.objects.filter(decision="deny", actor_id="alice", reason="missing scope 'admin'")
    assert sorted(refused.values_list("action", flat=True)) == ["page.audit.export", "page.audit.signing_key", "page.audit.snapshot", "page.audit.snapshots"]
    assert not AuditEvent.objects.filter(action="audit.export").exists()


def test_a_script_keeps_copies_through_the_api_and_verifies_them_with_cryptography(admin_api: Any, bob_api: Any) -> None:
    """GET /api/v1/audit-snapshots/ (scope admin): what a machine outside the hub fetches
    daily; each payload verifies with the key the hub publishes."""
    events_on(days_ago(3), 2)
    snapshot_audit()
    listing = admin_api.get("/api/v1/audit-snapshots/", {"since": days_ago(2).isoformat()})
    assert listing.status_code == 200
    assert [row["date"] for row in listing.json()["results"]] == [days_ago(1).isoformat(), days_ago(2).isoformat()]
    one = admin_api.get(f"/api/v1/audit-snapshots/{days_ago(3).isoformat()}/").json()
    assert (one["count"], one["algorithm"]) == (2, "Ed25519") and json.loads(one["payload"])["count"] == 2
    published = load_pem_public_key(admin_api.get("/api/v1/audit-snapshots/").json()["results"][0]["public_key_pem"].encode())
    assert isinstance(published, ed25519.Ed25519PublicKey)
    published.verify(base64.b64decode(one["signature"]), one["payload"].encode())  # raises if it does not
    for missing in ("2026-02-30", "1999-01-01"):
        assert admin_api.get(f"/api/v1/audit-snapshots/{missing}/").status_code == 404
    assert bob_api.get("/api/v1/audit-snapshots/").status_code == 403
    denied = AuditEvent.objects.filter(decision="deny").latest("seq")
    assert (denied.action, denied.actor_type, denied.scope) == ("api.audit-snapshot.list", "token", "admin")


def test_the_downloads_need_a_session() -> None:
    for path in DOWNLOADS:
        answer = Client().get(path)
        assert answer.status_code == 302 and answer["Location"].startswith("/login/?next="), path


def test_the_snapshot_list_shows_each_day_and_its_check(root_web: Client) -> None:
    assert "No snapshot yet" in root_web.get("/audit/snapshots/").content.decode()
    events_on(days_ago(2), 2)
    snapshot_audit()
    page = root_web.get("/audit/snapshots/").content.decode()
    assert page.count('data-check="ok"') == 2
    assert f'href="/audit/snapshots/{days_ago(2).isoformat()}.json"' in page and 'href="/audit/signing-key.pem"' in page
    audit_page = root_web.get("/audit/", {"decision": "allow"}).content.decode()
    assert 'href="/audit/snapshots/"' in audit_page and 'href="/audit/export.jsonl?decision=allow"' in audit_page
    assert root_web.get("/audit/snapshots/2026-02-30.json").status_code == 404
    assert root_web.get("/audit/snapshots/1999-01-01.json").status_code == 404
