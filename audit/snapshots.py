"""Signed daily snapshots of the audit chain: a proof that does not trust the database.

The hash chain alone cannot stop someone who rewrites the whole table and the chain head.
A snapshot closes that: once a UTC day is over, the hub signs the canonical JSON of
`{date, first_id, last_id, last_hash, count}` (first/last as `seq`) with its Ed25519
signing key. Rewriting a signed day then needs the private key, and anyone holding the
public key can check a snapshot against an export.

The signing key is the hub's (`hub.signing`, `SigningKey`), which also signs reset and OTA
commands: it lives beside the project, not in a domain app, so audit imports none.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.dateparse import parse_date

from audit import chain
from audit.models import AuditChainHead, AuditEvent, AuditSnapshot, Decision
from audit.services import Actor, record
from hub import signing
from hub.models import SigningKeyKind

SNAPSHOT_FIELDS = ("date", "first_id", "last_id", "last_hash", "count")
_EVENT_FIELDS = ("id", *chain.HASHED_FIELDS, "prev_hash", "hash")


class SnapshotError(Exception):
    """A snapshot refused; `code` is `not_over`, `before_log` or `chain_broken`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class DaySummary:
    """What a snapshot signs. For a day without events first/last are None and `last_hash`
    is the chain's tail before the day (the genesis hash before the first event)."""

    date: date
    first_id: int | None
    last_id: int | None
    last_hash: str
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "date": self.date.isoformat()}


# --- without the database ------------------------------------------------------------


def utc_today(now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(UTC).date()


def parse_day(text: str) -> date | None:
    """A UTC day as the pages and the API take it (YYYY-MM-DD), None when it is no date,
    the well-formed but impossible ones (2026-02-30) included."""
    try:
        return parse_date(text)
    except ValueError:
        return None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day: a snapshot covers the events whose `ts` falls in it."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def snapshot_payload(fields: Mapping[str, Any]) -> str:
    """The exact text that is signed (UTF-8 encoded): canonical JSON of the five fields."""
    return chain.canonical_json({name: fields[name] for name in SNAPSHOT_FIELDS})


def load_public_key(public_key_b64: str) -> ed25519.Ed25519PublicKey:
    """Raises ValueError for anything but 32 bytes of base64."""
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"public key is not base64: {exc}") from None
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def signature_valid(payload: str, signature_b64: str, public_key_b64: str) -> bool:
    try:
        key = load_public_key(public_key_b64)
        key.verify(base64.b64decode(signature_b64, validate=True), payload.encode("utf-8"))
    except (ValueError, InvalidSignature):  # binascii.Error is a ValueError
        return False
    return True


def public_key_pem(public_key_b64: str) -> str:
    """The raw key as SubjectPublicKeyInfo PEM, what `openssl pkeyutl -verify` reads."""
    return load_public_key(public_key_b64).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# --- reading the day back ------------------------------------------------------------


def _hash_before(seq: int) -> str | None:
    if seq == 1:
        return chain.GENESIS_HASH
    return AuditEvent.objects.filter(seq=seq - 1).values_list("hash", flat=True).first()


def summarize_day(day: date) -> DaySummary:
    """Recompute what a snapshot of `day` says, re-hashing every event of the day.

    Comparing stored hashes would miss an edited row whose `hash` column was left alone;
    so each event's hash is recomputed from its contents and its `prev_hash` checked
    against its predecessor (also the one before the day). Raises SnapshotError
    (`chain_broken`) at the first link that does not hold. Streamed: a day of a million
    events is walked in chunks.
    """
    start, end = day_bounds(day)
    events = AuditEvent.objects.filter(ts__gte=start, ts__lt=end).order_by("seq").values(*_EVENT_FIELDS)
    first: dict[str, Any] | None = None
    prev: dict[str, Any] | None = None
    count = 0
    for event in events.iterator(chunk_size=5000):
        where = f"event id {event['id']} (seq {event['seq']})"
        # A day is one run of seqs unless a clock stepped back; look the predecessor up then.
        expected = prev["hash"] if prev is not None and prev["seq"] == event["seq"] - 1 else _hash_before(event["seq"])
        if expected is None:
            raise SnapshotError("chain_broken", f"event seq {event['seq'] - 1}, before {where}, is missing (it was deleted)")
        if event["prev_hash"] != expected:
            raise SnapshotError("chain_broken", f"{where}: prev_hash does not match the previous event's hash")
        if chain.link_hash(event["prev_hash"], event) != event["hash"]:
            raise SnapshotError("chain_broken", f"{where}: hash does not match the event's contents (the event was edited)")
        if first is None:
            first = event
        prev = event
        count += 1
    if first is None or prev is None:
        before = AuditEvent.objects.filter(ts__lt=start).order_by("-ts", "-seq").values_list("hash", flat=True).first()
        return DaySummary(day, None, None, before or chain.GENESIS_HASH, 0)
    return DaySummary(day, first["seq"], prev["seq"], prev["hash"], count)


def first_day() -> date | None:
    """The UTC day of the log's first event (None for an empty log)."""
    first_ts = AuditEvent.objects.aggregate(first=Min("ts"))["first"]
    return utc_today(first_ts) if first_ts is not None else None


# --- signing -------------------------------------------------------------------------


def current_public_key_b64() -> str:
    """The hub signing key that signs new snapshots (created on first use)."""
    return signing.public_key_b64(SigningKeyKind.HUB_SIGNING)


def _close_day(day: date) -> None:
    """Refuse a day that is not over; otherwise wait until none of its events is in flight.

    `record_many()` stamps `ts` while holding the chain head lock and commits before it
    lets go, so once this has held the lock after midnight UTC every event of the day is
    committed and visible: a snapshot never misses a late commit.
    """
    _, end = day_bounds(day)
    if timezone.now() < end:
        raise SnapshotError("not_over", f"{day.isoformat()} is not over yet (UTC): it can be snapshotted from {end.isoformat()}")
    with transaction.atomic():
        AuditChainHead.objects.select_for_update().filter(id=1).first()
    log_start = first_day()
    if log_start is None or day < log_start:
        raise SnapshotError("before_log", f"{day.isoformat()} is before the audit log's first event ({log_start.isoformat() if log_start else 'none yet'})")


def take_snapshot(day: date, *, actor: Actor | None = None) -> AuditSnapshot:
    """Sign `day` once. An existing snapshot is returned as it is, never re-signed.

    Refuses (SnapshotError) a day that is not over, a day before the log starts, and a
    day whose events no longer hash: signing it would attest a forgery. That refusal is
    audited as a `deny`.
    """
    existing = AuditSnapshot.objects.filter(date=day).first()
    if existing is not None:
        return existing
    actor = actor or Actor.system()
    _close_day(day)
    try:
        summary = summarize_day(day)
    except SnapshotError as broken:
        record(actor, "audit.snapshot", Decision.DENY, scope="admin", target_type="audit_snapshot", target_id=day.isoformat(), reason=broken.reason)
        raise
    key = signing.signing_key()
    payload = snapshot_payload(summary.as_dict())
    snapshot = AuditSnapshot(
        date=day,
        first_id=summary.first_id,
        last_id=summary.last_id,
        last_hash=summary.last_hash,
        count=summary.count,
        payload=payload,
        signature=base64.b64encode(key.sign(payload.encode("utf-8"))).decode(),
        public_key=signing.ed25519_public_b64(key),
    )
    try:
        # The row and its audit event together. The event is stamped now, after the day,
        # so it belongs to a later (still open) day and does not change this one.
        with transaction.atomic():
            snapshot.save()
            record(actor, "audit.snapshot", Decision.ALLOW, scope="admin", target_type="audit_snapshot", target_id=day.isoformat(), details=summary.as_dict())
    except IntegrityError:  # another worker signed the day first: its row stands
        return AuditSnapshot.objects.get(date=day)
    return snapshot


def due_days(today: date | None = None) -> list[date]:
    """Every finished day without a snapshot, from the log's first day to yesterday (UTC):
    a hub that was off for three days catches up on all three."""
    start = first_day()
    if start is None:
        return []
    yesterday = (today or utc_today()) - timedelta(days=1)
    taken = set(AuditSnapshot.objects.filter(date__gte=start).values_list("date", flat=True))
    return [day for day in (start + timedelta(days=n) for n in range((yesterday - start).days + 1)) if day not in taken]


# --- verifying -----------------------------------------------------------------------


def verify_snapshot(snapshot: AuditSnapshot) -> str | None:
    """None when the snapshot holds, else why not.

    Holds means: the signature verifies with the stored public key; that key is one of the
    hub's signing keys (current or rotated out), so a forger cannot bring their own; the
    row's columns say what the signed payload says; and the day's events in the database
    still hash to the signed `last_hash` with the signed count, first and last seq.
    """
    try:
        signed = json.loads(snapshot.payload)
    except ValueError:
        return "the payload is not JSON"
    if not isinstance(signed, dict) or set(signed) != set(SNAPSHOT_FIELDS):
        return f"the payload does not hold exactly the fields {', '.join(SNAPSHOT_FIELDS)}"
    if not signature_valid(snapshot.payload, snapshot.signature, snapshot.public_key):
        return "the signature does not verify with the snapshot's public key"
    if not signing.holds_signing_key(snapshot.public_key):
        return "signed by a key that is not one of the hub's signing keys"
    if signed != snapshot.signed_fields():
        return "the row's columns differ from its signed payload"
    try:
        now = summarize_day(snapshot.date).as_dict()
    except SnapshotError as broken:
        return f"the day's events no longer hash: {broken.reason}"
    for name in ("count", "first_id", "last_id", "last_hash"):
        if now[name] != signed[name]:
            return f"{name} was {signed[name]} when signed but is {now[name]} now (events of the day were deleted, added or rewritten)"
    return None


@dataclass(frozen=True)
class SnapshotFailure:
    date: date
    reason: str


@dataclass(frozen=True)
class SnapshotReport:
    checked: int
    verified: int
    failures: list[SnapshotFailure] = field(default_factory=list)
    unsigned: list[date] = field(default_factory=list)  # finished days after the newest snapshot

    @property
    def ok(self) -> bool:
        return not self.failures


SIGNING_GRACE = timedelta(hours=2)  # the hourly beat task signs a finished day within this
MISSING = "no snapshot for this day (deleted, or it could not be signed)"


def verify_snapshots(now: datetime | None = None) -> SnapshotReport:
    """Check every snapshot, and that no day between the log's first day and the newest
    snapshot lacks one (the beat task fills every day, so a hole is a deleted snapshot or a
    day that could not be signed). Finished days after the newest snapshot are `unsigned`:
    a hub without its beat task, or the newest snapshots deleted; not a failure of what is
    signed (the chain can be intact), but named so that nobody takes them as attested."""
    failures: list[SnapshotFailure] = []
    checked = verified = 0
    taken: set[date] = set()
    for snapshot in AuditSnapshot.objects.order_by("date").iterator(chunk_size=500):
        reason = verify_snapshot(snapshot)
        if reason is None:
            verified += 1
        else:
            failures.append(SnapshotFailure(snapshot.date, reason))
        checked += 1
        taken.add(snapshot.date)
    missing = missing_days(taken, now)
    newest = max(taken, default=None)
    failures.extend(SnapshotFailure(day, MISSING) for day in missing if newest is not None and day < newest)
    failures.sort(key=lambda failure: failure.date)
    return SnapshotReport(checked, verified, failures, unsigned=[day for day in missing if newest is None or day > newest])


def missing_days(taken: set[date] | None = None, now: datetime | None = None) -> list[date]:
    """The finished days without a snapshot: from the log's first day (or the first
    snapshot's, if earlier) to the last day that ended more than SIGNING_GRACE ago."""
    if taken is None:
        taken = set(AuditSnapshot.objects.values_list("date", flat=True))
    starts = [day for day in (first_day(), min(taken, default=None)) if day is not None]
    if not starts:
        return []
    start = min(starts)
    last_due = utc_today((now or timezone.now()) - SIGNING_GRACE) - timedelta(days=1)
    every_day = (start + timedelta(days=n) for n in range((last_due - start).days + 1))
    return [day for day in every_day if day not in taken]
