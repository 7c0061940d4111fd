"""Prometheus metrics read from the database at scrape time, so every web process agrees."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector


class RegistryCollector(Collector):
    def describe(self) -> list[GaugeMetricFamily]:
        # Without describe(), register() would call collect() and hit the database at import.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from audit.models import AuditChainHead, AuditEvent
        from devices.models import Command, CommandStatus, Device

        devices = GaugeMetricFamily("meshhub_devices", "Devices by status and presence", labels=["status", "online"])
        for row in Device.objects.values("status", "online").annotate(n=Count("id")).order_by():
            devices.add_metric([row["status"], str(row["online"]).lower()], row["n"])
        yield devices

        online = GaugeMetricFamily("meshhub_devices_online", "Devices with a live session")
        online.add_metric([], Device.objects.filter(online=True).count())
        yield online

        commands = GaugeMetricFamily("meshhub_commands", "Commands in the outbox by status", labels=["status"])
        counts = {row["status"]: row["n"] for row in Command.objects.values("status").annotate(n=Count("id")).order_by()}
        for status in CommandStatus.values:
            commands.add_metric([status], counts.get(status, 0))
        yield commands

        audit = GaugeMetricFamily("meshhub_audit_events", "Audit events by decision", labels=["decision"])
        for decision, n in AuditEvent.objects.values_list("decision").annotate(n=Count("id")).order_by():
            audit.add_metric([decision], n)
        yield audit

        head = GaugeMetricFamily("meshhub_audit_chain_seq", "Sequence number of the last audit event")
        head.add_metric([], AuditChainHead.objects.filter(id=1).values_list("seq", flat=True).first() or 0)
        yield head


registry = CollectorRegistry(auto_describe=False)
registry.register(RegistryCollector())
