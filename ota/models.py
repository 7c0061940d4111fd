"""Firmware releases (a signed manifest and its image in storage), rollouts (which devices,
in which waves, with which thresholds), deployments (one device, one release, driven by
ota/statemachine.py) and each device's firmware state as the device last told it."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from devices.models import Device


class FirmwareRelease(models.Model):
    """A release the hub accepted: every field of the signed manifest, the document as it
    was uploaded (what devices are offered, byte for byte), and where the image is."""

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=64)
    build_id = models.CharField(max_length=100, blank=True)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    device_types = models.JSONField(help_text="Device types the image runs on.")
    min_agent_version = models.CharField(max_length=64, blank=True)
    migrations = models.JSONField(default=list, blank=True, help_text="Migration flags the image needs.")
    security_counter = models.PositiveIntegerField(default=0, help_text="Anti-rollback: no release with a lower counter is accepted after this one.")
    manifest_created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    document = models.JSONField(help_text="The signed manifest document as uploaded: manifest, signature, key_id.")
    key_id = models.CharField(max_length=64)
    blob = models.CharField(max_length=255, help_text="Name of the image in the firmware storage.")
    uploaded_by = models.CharField(max_length=200, help_text="actor_type:actor_id")
    uploaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="release_name_version_unique"),
            models.UniqueConstraint(fields=["sha256"], name="release_sha256_unique"),
            models.CheckConstraint(condition=models.Q(size__gt=0), name="release_size_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class RolloutState(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"


class Rollout(models.Model):
    release = models.ForeignKey(FirmwareRelease, on_delete=models.PROTECT, related_name="rollouts")
    targets = models.JSONField(help_text='{"devices": [...], "groups": [...], "device_type": T, "all": false}')
    waves = models.JSONField(help_text='e.g. [1, "10%", "100%"]')
    success_threshold = models.FloatField(default=0.9)
    min_sample = models.PositiveIntegerField(default=1)
    error_threshold = models.FloatField(default=0.2)
    max_concurrent = models.PositiveIntegerField(default=50)
    approval = models.BooleanField(default=False, help_text="An operator approves each wave after the first.")
    health_beacons = models.PositiveIntegerField(default=3)
    deadline_s = models.PositiveIntegerField(default=600)
    state = models.CharField(max_length=16, choices=RolloutState.choices, default=RolloutState.DRAFT)
    reason = models.CharField(max_length=300, blank=True)
    wave = models.PositiveIntegerField(default=0, help_text="Index of the current wave.")
    awaiting_approval = models.BooleanField(default=False)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(state__in=RolloutState.values), name="rollout_state_valid"),
            models.CheckConstraint(condition=models.Q(success_threshold__gte=0, success_threshold__lte=1), name="rollout_success_threshold_range"),
            models.CheckConstraint(condition=models.Q(error_threshold__gte=0, error_threshold__lte=1), name="rollout_error_threshold_range"),
        ]

    def __str__(self) -> str:
        return f"rollout {self.pk} of {self.release}"


class DeploymentState(models.TextChoices):
    QUEUED = "queued", "Queued"
    OFFERED = "offered", "Offered"
    TRANSFERRING = "transferring", "Transferring"
    VERIFYING = "verifying", "Verifying"
    INSTALLING = "installing", "Installing"
    REBOOTING = "rebooting", "Rebooting"
    HEALTH_CHECK = "health_check", "Health check"
    SUCCEEDED = "succeeded", "Succeeded"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ABORTED = "aborted", "Aborted"


class Deployment(models.Model):
    """One device and one release within a rollout. Every target gets its row when the rollout
    is created (never-offered ones `queued`), so the rollout lists its whole audience."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="deployments")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="deployments")
    wave = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=DeploymentState.choices, default=DeploymentState.QUEUED)
    reason = models.CharField(max_length=300, blank=True)
    offset = models.PositiveBigIntegerField(default=0, help_text="Bytes the device acknowledged.")
    beacons = models.PositiveIntegerField(default=0, help_text="Healthy beacons since the new image booted.")
    complete_received = models.BooleanField(default=False, help_text="A valid signed ota.complete arrived.")
    abort_pending = models.BooleanField(default=False, help_text="It ended on the hub mid-transfer: the device is still to be told (ota.abort).")
    offer_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="The driver chose it for an offer; the device's gateway offers at its next sweep."
    )
    holder = models.CharField(max_length=64, blank=True, help_text="The device session that transfers it (its token): only it writes the transfer's progress.")
    state_changed_at = models.DateTimeField(default=timezone.now)
    progress_at = models.DateTimeField(default=timezone.now, help_text="Last word from the transfer's session (a state change or saved progress).")
    deadline_at = models.DateTimeField(null=True, blank=True, help_text="When the current step times out.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rollout", "wave", "device__node_id"]
        constraints = [
            models.UniqueConstraint(fields=["rollout", "device"], name="deployment_once_per_rollout"),
            models.CheckConstraint(condition=models.Q(state__in=DeploymentState.values), name="deployment_state_valid"),
        ]
        indexes = [models.Index(fields=["state", "deadline_at"], name="deployment_due_idx")]

    def __str__(self) -> str:
        return f"{self.device_id} in rollout {self.rollout_id}: {self.state}"


class DeviceFirmware(models.Model):
    """A device's firmware as it last told the hub (`boot` frames, `health` beacons)."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, related_name="firmware")
    version = models.CharField(max_length=64, blank=True)
    slot = models.CharField(max_length=1, blank=True, help_text="A or B")
    previous_version = models.CharField(max_length=64, blank=True)
    safe_mode = models.BooleanField(default=False)
    consecutive_fails = models.PositiveIntegerField(default=0)
    last_boot_reason = models.CharField(max_length=32, blank=True)
    last_boot_at = models.DateTimeField(null=True, blank=True)
    pending_deployment = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The deployment whose image the device runs on trial, from its boot frame."
    )
    boot_epoch = models.PositiveIntegerField(default=0, help_text="The device's boot count as of its last boot frame: an older one arriving late is ignored.")
    last_rollback_at = models.DateTimeField(null=True, blank=True)
    last_rollback_reason = models.CharField(max_length=200, blank=True)
    diagnostic = models.JSONField(default=dict, blank=True, help_text="What the boot guard said when it entered safe mode.")
    pending_order = models.JSONField(
        null=True, blank=True, help_text="A signed order waiting for the device's session: {id, kind (rollback, clear, bootguard.clear), reason, at}."
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.device_id}: {self.version or '?'} ({self.slot or '?'})"
