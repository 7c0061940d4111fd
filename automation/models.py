"""Rules, what they remember between evaluations, what each run did, and scenes.

A rule is stored as the document of ARCHITECTURE §9.2 (`document`), validated whole on
save; the columns beside it are what lists, indexes and the evaluator need without parsing
it. What the engine remembers (latched conditions, `for` timers, cooldown, runs in flight)
is in `RuleState`, written in the same transaction as the run it led to, so a restart
neither fires twice nor forgets a timer that was running.
"""

from __future__ import annotations

from django.db import models

from automation.disclosure import masked_url


class RuleMode(models.TextChoices):
    SINGLE = "single", "Single (skip while running)"
    RESTART = "restart", "Restart (cancel the running one)"
    QUEUED = "queued", "Queued (one after another)"
    PARALLEL = "parallel", "Parallel"


class RunOutcome(models.TextChoices):
    FIRED = "fired", "Fired"
    SKIPPED = "skipped", "Skipped"
    REFUSED = "refused", "Refused"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    # In flight: waiting at a `delay_s` (resumed by beat at `resume_at`), or queued behind
    # the rule's run in flight (mode `queued`); a restart or a change of the rule cancels.
    RUNNING = "running", "Running (in a delay)"
    QUEUED = "queued", "Queued"
    CANCELLED = "cancelled", "Cancelled"


IN_FLIGHT = (RunOutcome.RUNNING, RunOutcome.QUEUED)


class Rule(models.Model):
    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True)
    mode = models.CharField(max_length=16, choices=RuleMode.choices, default=RuleMode.SINGLE)
    cooldown_s = models.FloatField(default=0)
    document = models.JSONField(help_text="The rule as saved (ARCHITECTURE §9.2), validated whole.")
    disabled_reason = models.CharField(max_length=300, blank=True, help_text="Why the hub disabled it (a device lost a capability it uses).")
    created_by = models.CharField(max_length=160)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(mode__in=RuleMode.values), name="rule_mode_valid"),
            models.CheckConstraint(condition=models.Q(cooldown_s__gte=0), name="rule_cooldown_not_negative"),
        ]

    def __str__(self) -> str:
        return self.name


class RuleInput(models.Model):
    """The index of what each rule reads: a committed state batch looks up only the rules
    that read one of its (device, capability) pairs, or a group one of its devices is in."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="inputs")
    node_id = models.CharField(max_length=64, blank=True)
    group = models.CharField(max_length=100, blank=True)
    capability = models.CharField(max_length=64)

    class Meta:
        indexes = [
            models.Index(fields=["node_id", "capability"], name="ruleinput_device_idx"),
            models.Index(fields=["group", "capability"], name="ruleinput_group_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(node_id="") & ~models.Q(group="")) | (~models.Q(node_id="") & models.Q(group="")),
                name="ruleinput_device_or_group",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule_id}: {self.node_id or 'group ' + self.group}.{self.capability}"


class RuleState(models.Model):
    """The engine's memory of one rule (automation.engine.RuleState as JSON) and when it
    must look again without new state (a `for` duration running out)."""

    rule = models.OneToOneField(Rule, on_delete=models.CASCADE, primary_key=True, related_name="state")
    state = models.JSONField(default=dict)
    recheck_at = models.DateTimeField(null=True, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"state of rule {self.rule_id}"


class RuleRun(models.Model):
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="runs")
    started_at = models.DateTimeField(db_index=True)
    trigger = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=16, choices=RunOutcome.choices)
    reason = models.CharField(max_length=500, blank=True)
    actions = models.JSONField(default=list, blank=True)
    depth = models.PositiveSmallIntegerField(default=0, help_text="How many rule runs led to this one (a chain A → B → A stops at the bound).")
    next_action = models.PositiveSmallIntegerField(default=0, help_text="The action a run in flight goes on with.")
    resume_at = models.DateTimeField(null=True, blank=True, help_text="When a run waiting at a delay goes on.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [
            models.Index(fields=["rule", "-started_at"], name="rulerun_rule_started_idx"),
            models.Index(fields=["resume_at"], name="rulerun_resume_idx", condition=models.Q(resume_at__isnull=False)),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(outcome__in=RunOutcome.values), name="rulerun_outcome_valid")]

    def __str__(self) -> str:
        return f"run of rule {self.rule_id} at {self.started_at:%Y-%m-%d %H:%M:%S}: {self.outcome}"

    @property
    def trigger_text(self) -> str:
        """What made it fire, in a line (pages and live updates)."""
        trigger = self.trigger or {}
        if trigger.get("device"):
            return f"{trigger['device']}.{trigger.get('capability')} = {trigger.get('value')}"
        return "schedule" if trigger.get("schedule") else ""

    @property
    def actions_text(self) -> str:
        """Each action's target and status, in a line (shown to every reader: webhook
        addresses masked, automation.disclosure)."""
        parts = []
        for entry in self.actions or []:
            if "delay_s" in entry:
                parts.append(f"delay {entry['delay_s']:g} s")
                continue
            webhook = entry.get("webhook")
            label = entry.get("device") or entry.get("scene") or entry.get("group") or (masked_url(webhook) if isinstance(webhook, str) else "") or "action"
            parts.append(f"{label} {entry.get('status', '')}".strip())
        return ", ".join(parts)


class Scene(models.Model):
    name = models.CharField(max_length=100, unique=True)
    members = models.JSONField(default=list, help_text="[{device | group, capability, value}]")
    created_by = models.CharField(max_length=160)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
