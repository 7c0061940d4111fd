"""`manage.py automation export/import`: the document round-trips; import is whole or nothing
(a bad rule after good groups and scenes writes none of them, and names its path); importing
again replaces by name; --dry-run writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from automation.models import Rule, Scene
from devices.models import Device, Group
from tests.factories import relay, thermostat

pytestmark = pytest.mark.django_db

DOCUMENT: dict[str, Any] = {
    "groups": [{"name": "fans", "description": "ceiling fans", "members": ["relay-1", "relay-2"]}],
    "scenes": [{"name": "cool down", "members": [{"group": "fans", "capability": "on", "value": True}]}],
    "rules": [
        {"name": "hot", "when": {"device": "thermo-1", "capability": "temperature", "op": "gt", "value": 30, "for_s": 10}, "then": [{"scene": "cool down"}]},
        {
            "name": "cold",
            "when": {"device": "thermo-1", "capability": "temperature", "op": "lt", "value": 16},
            "then": [{"group": "fans", "capability": "on", "action": "set", "value": False}],
        },
    ],
}


@pytest.fixture
def fleet() -> None:
    thermostat("thermo-1")
    relay("relay-1")
    relay("relay-2")
    Device.objects.update(status="provisioned")


def run(tmp_path: Path, document: Any, *extra: str) -> str:
    path = tmp_path / "automation.json"
    path.write_text(json.dumps(document))
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        call_command("automation", "import", str(path), *extra, stdout=handle)
    return out.read_text()


def test_import_then_export_round_trips_and_a_second_import_replaces_by_name(fleet: None, tmp_path: Path) -> None:
    assert "rules: created 2, replaced 0" in run(tmp_path, DOCUMENT)
    assert set(Group.objects.get(name="fans").members.values_list("node_id", flat=True)) == {"relay-1", "relay-2"}
    exported = tmp_path / "export.json"
    call_command("automation", "export", "-o", str(exported))
    assert json.loads(exported.read_text()) == {**DOCUMENT, "rules": sorted(DOCUMENT["rules"], key=lambda r: r["name"])}
    assert "rules: created 0, replaced 2" in run(tmp_path, json.loads(exported.read_text()))
    assert Rule.objects.count() == 2 and Scene.objects.count() == 1
    assert AuditEvent.objects.filter(action="automation.import", decision="allow").count() == 2


def test_a_bad_item_writes_nothing_and_names_its_path(fleet: None, tmp_path: Path) -> None:
    bad = {
        **DOCUMENT,
        "rules": [DOCUMENT["rules"][0], {**DOCUMENT["rules"][1], "when": {"device": "thermo-9", "capability": "temperature", "op": "lt", "value": 16}}],
    }
    with pytest.raises(CommandError, match=r"rules\[1\]\.when\.device: no device 'thermo-9' \(nothing was written\)"):
        run(tmp_path, bad)
    assert not Group.objects.filter(name="fans").exists() and not Scene.objects.exists() and not Rule.objects.exists()
    assert AuditEvent.objects.filter(action="automation.import", decision="deny", details__field="rules[1].when.device").exists()
    with pytest.raises(CommandError, match=r"groups\[0\]\.members\[1\]: no device 'relay-9'"):
        run(tmp_path, {"groups": [{"name": "fans", "members": ["relay-1", "relay-9"]}]})
    with pytest.raises(CommandError, match=r"rules\[1\]\.name: 'hot' appears twice"):
        run(tmp_path, {"rules": [DOCUMENT["rules"][0], DOCUMENT["rules"][0]]})


def test_a_dry_run_checks_everything_and_writes_nothing(fleet: None, tmp_path: Path) -> None:
    assert "rules: would create 2, would replace 0" in run(tmp_path, DOCUMENT, "--dry-run")
    assert not Rule.objects.exists() and not Group.objects.filter(name="fans").exists()
