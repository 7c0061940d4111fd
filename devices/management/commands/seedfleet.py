"""`manage.py seedfleet --devices N --days D`: a fleet at scale, for the benchmark and for
trying the operator pages with thousands of devices. Never part of `make run`.

What it makes (deterministic for a given `--seed`):

- N devices `<prefix><type>-<n>`, a fixed mix per 20 devices: 7 climate sensors
  (temperature, humidity), 3 thermostats (temperature, setpoint, mode), 5 smart relays
  (on, power), 3 dimmers (level), 2 energy meters (power, energy): 2 capabilities per
  device on average. About 1 % revoked, 85 % of the rest online; named by site and room;
  `reported` holds each capability's last sample, some actuators a `desired` value.
- `--groups K` groups `<prefix>group-<k>` (default N / 500, at least 1, at most N); 70 % of
  the devices in one group (neighbouring devices together, as rooms are), 10 % in a second.
- D days of telemetry per capability, one sample every `--interval` seconds, each device
  at its own phase; an offline device's history ends when it was last seen. The default
  interval is the one that makes about 1,000,000 samples in all, but never under 60 s:
  10,000 devices x 1 day -> every 1,728 s, 50 samples per capability, 1,000,000 rows.

Seeded devices are not enrolled (no certificate; `metadata.enrolled` is false) and cannot
connect; they are rows for the pages. Rows go in with bulk inserts (telemetry through
`devices.state.insert_samples`: unnest INSERT on PostgreSQL, executemany on SQLite) in one
transaction, with one `fleet.seed` audit event for the whole run. On PostgreSQL the tables
are ANALYZEd afterwards, as autovacuum would soon do, so the planner sees the new rows.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.models import Decision
from audit.services import Actor, record
from devices.models import Capability, CapabilityKind, Device, DeviceStatus, Group, TelemetrySample, ValueType
from devices.state import SampleRow, insert_samples

TARGET_SAMPLES = 1_000_000  # what the default interval aims at
MIN_INTERVAL_S = 60
DEVICE_BATCH = 1000
SAMPLE_BATCH = 50_000
REVOKED_SHARE = 0.01
ONLINE_SHARE = 0.85
DAY_S = 86_400.0
SITES = ("North wing", "South wing", "Lab", "Warehouse", "Office", "Workshop")

# value(phase, t): the sample at unix time t of a device whose daily cycle is shifted by
# phase (radians). A pure function, so `reported` (the last value) is known before any sample is written.
ValueFn = Callable[[float, float], Any]


def _daily(phase: float, t: float) -> float:
    return math.sin(2 * math.pi * t / DAY_S + phase)


def _noise(phase: float, t: float) -> float:
    """Deterministic jitter in [-1, 1) from (phase, t): the usual fract(sin(x) * 43758.5453) hash."""
    x = math.sin(t * 12.9898 + phase * 78.233) * 43758.5453
    return 2 * (x - math.floor(x)) - 1


def _temperature(phase: float, t: float) -> float:
    return round(21.0 + 2.5 * _daily(phase, t) + 0.3 * _noise(phase, t), 2)


def _humidity(phase: float, t: float) -> float:
    return round(min(100.0, max(0.0, 45.0 - 12.0 * _daily(phase, t) + 2.0 * _noise(phase, t))), 1)


def _relay_on(phase: float, t: float) -> bool:
    return _daily(phase, t) > 0.2


def _relay_power(phase: float, t: float) -> float:
    return round(60.0 + 5.0 * _noise(phase, t), 1) if _relay_on(phase, t) else 0.4


def _level(phase: float, t: float) -> int:
    return (0, 30, 60, 100)[int((_daily(phase, t) + 1) * 1.999)]


def _setpoint(phase: float, t: float) -> float:
    return 21.0 if _daily(phase, t) > -0.5 else 18.0


def _mode(phase: float, t: float) -> str:
    return "heat" if _daily(phase, t) < 0 else "auto"


def _meter_power(phase: float, t: float) -> float:
    return round(800.0 + 600.0 * _daily(phase, t) + 50.0 * _noise(phase, t), 1)


def _energy(phase: float, t: float) -> float:
    return round(t / 3600.0 * 0.8 % 100_000, 3)  # kWh, about 0.8 kW on average


@dataclass(frozen=True)
class Cap:
    name: str
    kind: str
    value_type: str
    value: ValueFn
    unit: str = ""
    min_value: float | None = None
    max_value: float | None = None
    enum_values: tuple[str, ...] = ()

    @property
    def writable(self) -> bool:
        return self.kind != CapabilityKind.SENSOR


@dataclass(frozen=True)
class Profile:
    device_type: str
    label: str
    per_20: int  # devices of this type in every 20
    caps: tuple[Cap, ...]
    firmware: tuple[str, ...]


TEMPERATURE = Cap("temperature", CapabilityKind.SENSOR, ValueType.FLOAT, _temperature, "°C")
PROFILES = (
    Profile("climate", "Climate sensor", 7, (TEMPERATURE, Cap("humidity", CapabilityKind.SENSOR, ValueType.FLOAT, _humidity, "%")), ("2.1.0", "2.2.1")),
    Profile(
        "thermostat",
        "Thermostat",
        3,
        (
            TEMPERATURE,
            Cap("setpoint", CapabilityKind.ACTUATOR, ValueType.FLOAT, _setpoint, "°C", 5, 35),
            Cap("mode", CapabilityKind.PROPERTY, ValueType.ENUM, _mode, enum_values=("off", "heat", "auto")),
        ),
        ("1.4.2", "1.5.0"),
    ),
    Profile(
        "relay",
        "Smart relay",
        5,
        (Cap("on", CapabilityKind.ACTUATOR, ValueType.BOOL, _relay_on), Cap("power", CapabilityKind.SENSOR, ValueType.FLOAT, _relay_power, "W")),
        ("3.0.1",),
    ),
    Profile("dimmer", "Dimmer", 3, (Cap("level", CapabilityKind.ACTUATOR, ValueType.INT, _level, "%", 0, 100),), ("1.0.7", "1.1.0")),
    Profile(
        "meter",
        "Energy meter",
        2,
        (Cap("power", CapabilityKind.SENSOR, ValueType.FLOAT, _meter_power, "W"), Cap("energy", CapabilityKind.SENSOR, ValueType.FLOAT, _energy, "kWh")),
        ("0.9.4",),
    ),
)
assert sum(p.per_20 for p in PROFILES) == 20


@dataclass
class Planned:
    """One device as planned, before it has a primary key."""

    index: int
    node_id: str
    profile: Profile
    phase: float  # radians: its daily cycle's shift
    offset: float  # its samples' phase within the interval, 0..1
    last_seen: datetime
    online: bool
    revoked: bool
    pk: int = 0

    def sample_times(self, days: float, interval: int) -> list[float]:
        """Unix times of its samples, oldest first, the last no later than when it was last seen."""
        count = int(days * DAY_S // interval)
        end = self.last_seen.timestamp() - self.offset * interval
        return [end - (count - 1 - k) * interval for k in range(count)]

    def reported(self, days: float, interval: int) -> dict[str, Any]:
        """Its last values: those of its last sample (or, without telemetry, of when it was last seen)."""
        times = self.sample_times(days, interval)
        t = times[-1] if times else self.last_seen.timestamp()
        return {cap.name: cap.value(self.phase, t) for cap in self.profile.caps}

    def samples(self, days: float, interval: int) -> list[SampleRow]:
        times = self.sample_times(days, interval)
        stamps = [datetime.fromtimestamp(t, tz=UTC) for t in times]
        rows: list[SampleRow] = []
        for cap in self.profile.caps:
            fn, name, pk, phase = cap.value, cap.name, self.pk, self.phase
            if cap.value_type == ValueType.ENUM:
                rows.extend((pk, name, ts, None, fn(phase, t)) for t, ts in zip(times, stamps, strict=True))
            else:
                rows.extend((pk, name, ts, float(fn(phase, t)), "") for t, ts in zip(times, stamps, strict=True))
        return rows


def default_interval(days: float, capabilities: int) -> int:
    """The interval that makes about TARGET_SAMPLES samples in all, never under MIN_INTERVAL_S."""
    if days <= 0 or capabilities <= 0:
        return MIN_INTERVAL_S
    return max(MIN_INTERVAL_S, math.ceil(days * DAY_S * capabilities / TARGET_SAMPLES))


SEEDED_BY = "seedfleet"  # metadata.seeded_by of every device it makes
SEEDED_GROUP_MARK = ", seeded"  # the end of every group description it writes


def group_name(prefix: str, k: int) -> str:
    return f"{prefix}group-{k:03d}"


def seeded_devices(prefix: str) -> QuerySet[Device]:
    """This prefix's seeded fleet: marked, and named `<prefix><type>-<n>` exactly, so a
    shorter prefix never takes another fleet along (--prefix s beside the seed- fleet)."""
    types = "|".join(sorted({re.escape(p.device_type) for p in PROFILES}))
    return Device.objects.filter(node_id__regex=rf"^{re.escape(prefix)}({types})-[0-9]+$", metadata__seeded_by=SEEDED_BY)


def seeded_groups(prefix: str) -> QuerySet[Group]:
    return Group.objects.filter(name__regex=rf"^{re.escape(prefix)}group-[0-9]+$", description__endswith=SEEDED_GROUP_MARK)


def plan_fleet(count: int, prefix: str, rng: random.Random, now: datetime) -> list[Planned]:
    """The fixed mix per 20 devices, shuffled within each block of 20."""
    slots = [p for p in PROFILES for _ in range(p.per_20)]
    width = max(5, len(str(count - 1)))
    planned: list[Planned] = []
    for start in range(0, count, 20):
        block = slots[:]
        rng.shuffle(block)
        for index, profile in zip(range(start, min(start + 20, count)), block, strict=False):
            revoked = rng.random() < REVOKED_SHARE
            online = not revoked and rng.random() < ONLINE_SHARE
            silent_s = rng.uniform(0, 60) if online else rng.uniform(600, 3 * DAY_S)
            planned.append(
                Planned(
                    index=index,
                    node_id=f"{prefix}{profile.device_type}-{index:0{width}d}",
                    profile=profile,
                    phase=rng.uniform(-0.6, 0.6),
                    offset=rng.random(),
                    last_seen=now - timedelta(seconds=silent_s),
                    online=online,
                    revoked=revoked,
                )
            )
    return planned


class Command(BaseCommand):
    help = "Create N devices with capabilities, groups and D days of telemetry (bulk inserts), for benchmarks and trying the pages at scale."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--devices", type=int, required=True, metavar="N")
        parser.add_argument("--days", type=float, required=True, metavar="D", help="days of telemetry per capability (0: none)")
        parser.add_argument(
            "--interval",
            type=int,
            metavar="SECONDS",
            help=f"seconds between samples (default: about {TARGET_SAMPLES:,} samples in all, at least {MIN_INTERVAL_S} s)",
        )
        parser.add_argument("--prefix", default="seed-", help="node id and group name prefix (default seed-)")
        parser.add_argument("--groups", type=int, metavar="K", help="groups to spread the devices over (default N/500, at least 1)")
        parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
        parser.add_argument("--replace", action="store_true", help="delete the devices and groups with this prefix (and their telemetry) first")
        parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        count, days, prefix = options["devices"], options["days"], options["prefix"]
        if count < 1:
            raise CommandError("--devices must be at least 1")
        if days < 0:
            raise CommandError("--days cannot be negative")
        if options["interval"] is not None and options["interval"] < 1:
            raise CommandError("--interval must be at least 1 second")
        if options["groups"] is not None and options["groups"] < 0:
            raise CommandError("--groups cannot be negative")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", prefix):
            raise CommandError("--prefix must be 1-31 lowercase letters, digits and hyphens, starting with a letter or digit")
        groups = min(count, options["groups"] if options["groups"] is not None else max(1, count // 500))

        # Only what seedfleet made is ever replaced: a real device or group that happens to
        # share the prefix (--prefix green, a real greenhouse-sensor-3) is never deleted, and
        # its presence refuses the run, since seeded names could collide with it.
        existing = seeded_devices(prefix).count()
        foreign = list(Device.objects.filter(node_id__startswith=prefix).exclude(pk__in=seeded_devices(prefix)).values_list("node_id", flat=True)[:3])
        if foreign:
            raise CommandError(
                f"devices that are not this prefix's seeded fleet have node ids starting with '{prefix}' ({', '.join(foreign)}…): "
                "choose another --prefix; seedfleet never touches them"
            )
        existing_groups = seeded_groups(prefix).count()
        clashing = Group.objects.filter(name__in=[group_name(prefix, k) for k in range(groups)]).exclude(pk__in=seeded_groups(prefix))
        if clashing.exists():
            raise CommandError(f"group '{clashing.first()}' was not made by seedfleet and has a name it would use: choose another --prefix")
        if (existing or existing_groups) and not options["replace"]:
            raise CommandError(
                f"{existing:,} devices and {existing_groups:,} groups with prefix '{prefix}' exist already; "
                "--replace deletes them (with their telemetry) first, or choose another --prefix"
            )

        rng = random.Random(options["seed"])
        now = timezone.now()
        started = time.perf_counter()
        planned = plan_fleet(count, prefix, rng, now)
        capabilities = sum(len(d.profile.caps) for d in planned)
        interval = options["interval"] or default_interval(days, capabilities)
        timings: dict[str, float] = {}

        # One transaction: a failed seed leaves nothing half-made behind (and on SQLite one
        # commit instead of hundreds is most of the speed).
        with transaction.atomic():
            if existing or existing_groups:
                t0 = time.perf_counter()
                self._delete(prefix)
                timings["delete_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            self._create_devices(planned, prefix, days, interval, rng)
            timings["devices_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            memberships = self._create_groups(planned, prefix, groups, rng)
            timings["groups_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            samples = self._create_telemetry(planned, days, interval)
            timings["telemetry_s"] = time.perf_counter() - t0
            summary: dict[str, Any] = {
                "prefix": prefix,
                "devices": count,
                "capabilities": capabilities,
                "groups": groups,
                "memberships": memberships,
                "online": sum(d.online for d in planned),
                "revoked": sum(d.revoked for d in planned),
                "days": days,
                "interval_s": interval,
                "samples": samples,
                "replaced_devices": existing,
                "seed": options["seed"],
                "database": connection.vendor,
            }
            record(Actor.system("manage.py seedfleet"), "fleet.seed", Decision.ALLOW, target_type="fleet", target_id=prefix, details=summary)
            t0 = time.perf_counter()
        timings["commit_s"] = time.perf_counter() - t0  # PostgreSQL checks the deferred foreign keys here
        if connection.vendor == "postgresql":
            t0 = time.perf_counter()
            with connection.cursor() as cursor:
                for model in (Device, Capability, Group.members.through, TelemetrySample):
                    cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
            timings["analyze_s"] = time.perf_counter() - t0
        summary.update({key: round(value, 2) for key, value in timings.items()}, total_s=round(time.perf_counter() - started, 2))
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        replaced = f" (replacing {existing:,})" if existing else ""
        self.stdout.write(
            f"Seeded {count:,} devices{replaced} with {capabilities:,} capabilities ({summary['online']:,} online, {summary['revoked']:,} revoked), "
            f"{groups:,} groups ({memberships:,} memberships) and {samples:,} telemetry samples ({days:g} day{'' if days == 1 else 's'}, one every {interval:,} s) "
            f"on {connection.vendor} in {summary['total_s']:.1f} s (devices {timings['devices_s']:.1f} s, telemetry {timings['telemetry_s']:.1f} s)."
        )

    def _delete(self, prefix: str) -> None:
        """Telemetry first, in one statement: the devices' cascade would collect every sample's id."""
        doomed = seeded_devices(prefix)
        TelemetrySample.objects.filter(device__in=doomed).delete()
        doomed.delete()
        seeded_groups(prefix).delete()

    def _create_devices(self, planned: list[Planned], prefix: str, days: float, interval: int, rng: random.Random) -> None:
        for start in range(0, len(planned), DEVICE_BATCH):
            rows = []
            for d in planned[start : start + DEVICE_BATCH]:
                reported = d.reported(days, interval)
                desired = {cap.name: reported[cap.name] for cap in d.profile.caps if cap.writable and rng.random() < 0.3}
                rows.append(
                    Device(
                        node_id=d.node_id,
                        name=f"{d.profile.label}, {SITES[d.index % len(SITES)]} {1 + d.index // 97 % 5}.{d.index % 40:02d}",
                        device_type=d.profile.device_type,
                        firmware_version=d.profile.firmware[d.index % len(d.profile.firmware)],
                        status=DeviceStatus.REVOKED if d.revoked else DeviceStatus.PROVISIONED,
                        online=d.online,
                        last_seen=d.last_seen,
                        reported=reported,
                        desired=desired,
                        metadata={"seeded_by": SEEDED_BY, "enrolled": False},
                    )
                )
            Device.objects.bulk_create(rows)
        pks = dict(Device.objects.filter(node_id__startswith=prefix).values_list("node_id", "pk"))
        for d in planned:
            d.pk = pks[d.node_id]
        Capability.objects.bulk_create(
            [
                Capability(
                    device_id=d.pk,
                    name=cap.name,
                    kind=cap.kind,
                    value_type=cap.value_type,
                    unit=cap.unit,
                    min_value=cap.min_value,
                    max_value=cap.max_value,
                    enum_values=list(cap.enum_values),
                    writable=cap.writable,
                )
                for d in planned
                for cap in d.profile.caps
            ],
            batch_size=DEVICE_BATCH,
        )

    def _create_groups(self, planned: list[Planned], prefix: str, count: int, rng: random.Random) -> int:
        """70 % of the devices in one group, neighbours together as the devices of a room are; 10 % in a second one."""
        if count == 0:
            return 0
        Group.objects.bulk_create([Group(name=group_name(prefix, k), description=f"{SITES[k % len(SITES)]}{SEEDED_GROUP_MARK}") for k in range(count)])
        groups = list(seeded_groups(prefix).order_by("name").values_list("pk", flat=True))
        size = math.ceil(len(planned) / count)
        membership = Group.members.through
        links = []
        for d in planned:
            roll = rng.random()
            if roll < 0.7:
                home = d.index // size
                links.append(membership(group_id=groups[home], device_id=d.pk))
                if roll < 0.1 and count > 1:
                    links.append(membership(group_id=groups[(home + 1 + rng.randrange(count - 1)) % count], device_id=d.pk))
        membership.objects.bulk_create(links, batch_size=DEVICE_BATCH)
        return len(links)

    def _create_telemetry(self, planned: list[Planned], days: float, interval: int) -> int:
        written = 0
        pending: list[SampleRow] = []
        for d in planned:
            pending.extend(d.samples(days, interval))
            if len(pending) >= SAMPLE_BATCH:
                insert_samples(pending)
                written += len(pending)
                pending = []
        insert_samples(pending)
        return written + len(pending)
