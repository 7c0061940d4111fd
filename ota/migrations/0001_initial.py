"""Firmware releases, rollouts, deployments and device firmware state (ota/models.py)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('devices', '0007_telemetry_sample_ts_index'),
    ]

    operations = [
        migrations.CreateModel(
            name='DeviceFirmware',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('version', models.CharField(blank=True, max_length=64)),
                ('slot', models.CharField(blank=True, help_text='A or B', max_length=1)),
                ('previous_version', models.CharField(blank=True, max_length=64)),
                ('safe_mode', models.BooleanField(default=False)),
                ('consecutive_fails', models.PositiveIntegerField(default=0)),
                ('last_boot_reason', models.CharField(blank=True, max_length=32)),
                ('last_boot_at', models.DateTimeField(blank=True, null=True)),
                ('pending_deployment', models.PositiveBigIntegerField(blank=True, help_text='The deployment whose image the device runs on trial, from its boot frame.', null=True)),
                ('boot_epoch', models.PositiveIntegerField(default=0, help_text="The device's boot count as of its last boot frame: an older one arriving late is ignored.")),
                ('last_rollback_at', models.DateTimeField(blank=True, null=True)),
                ('last_rollback_reason', models.CharField(blank=True, max_length=200)),
                ('diagnostic', models.JSONField(blank=True, default=dict, help_text='What the boot guard said when it entered safe mode.')),
                ('pending_order', models.JSONField(blank=True, help_text="A signed order waiting for the device's session: {id, kind (rollback, clear, bootguard.clear), reason, at}.", null=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('device', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='firmware', to='devices.device')),
            ],
        ),
        migrations.CreateModel(
            name='FirmwareRelease',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100)),
                ('version', models.CharField(max_length=64)),
                ('build_id', models.CharField(blank=True, max_length=100)),
                ('sha256', models.CharField(max_length=64)),
                ('size', models.PositiveBigIntegerField()),
                ('device_types', models.JSONField(help_text='Device types the image runs on.')),
                ('min_agent_version', models.CharField(blank=True, max_length=64)),
                ('migrations', models.JSONField(blank=True, default=list, help_text='Migration flags the image needs.')),
                ('security_counter', models.PositiveIntegerField(default=0, help_text='Anti-rollback: no release with a lower counter is accepted after this one.')),
                ('manifest_created_at', models.DateTimeField()),
                ('expires_at', models.DateTimeField()),
                ('document', models.JSONField(help_text='The signed manifest document as uploaded: manifest, signature, key_id.')),
                ('key_id', models.CharField(max_length=64)),
                ('blob', models.CharField(help_text='Name of the image in the firmware storage.', max_length=255)),
                ('uploaded_by', models.CharField(help_text='actor_type:actor_id', max_length=200)),
                ('uploaded_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'ordering': ['-uploaded_at'],
                'constraints': [models.UniqueConstraint(fields=('name', 'version'), name='release_name_version_unique'), models.UniqueConstraint(fields=('sha256',), name='release_sha256_unique'), models.CheckConstraint(condition=models.Q(('size__gt', 0)), name='release_size_positive')],
            },
        ),
        migrations.CreateModel(
            name='Rollout',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('targets', models.JSONField(help_text='{"devices": [...], "groups": [...], "device_type": T, "all": false}')),
                ('waves', models.JSONField(help_text='e.g. [1, "10%", "100%"]')),
                ('success_threshold', models.FloatField(default=0.9)),
                ('min_sample', models.PositiveIntegerField(default=1)),
                ('error_threshold', models.FloatField(default=0.2)),
                ('max_concurrent', models.PositiveIntegerField(default=50)),
                ('approval', models.BooleanField(default=False, help_text='An operator approves each wave after the first.')),
                ('health_beacons', models.PositiveIntegerField(default=3)),
                ('deadline_s', models.PositiveIntegerField(default=600)),
                ('state', models.CharField(choices=[('draft', 'Draft'), ('running', 'Running'), ('paused', 'Paused'), ('completed', 'Completed'), ('aborted', 'Aborted')], default='draft', max_length=16)),
                ('reason', models.CharField(blank=True, max_length=300)),
                ('wave', models.PositiveIntegerField(default=0, help_text='Index of the current wave.')),
                ('awaiting_approval', models.BooleanField(default=False)),
                ('created_by', models.CharField(max_length=200)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('release', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='rollouts', to='ota.firmwarerelease')),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='Deployment',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('wave', models.PositiveIntegerField()),
                ('state', models.CharField(choices=[('queued', 'Queued'), ('offered', 'Offered'), ('transferring', 'Transferring'), ('verifying', 'Verifying'), ('installing', 'Installing'), ('rebooting', 'Rebooting'), ('health_check', 'Health check'), ('succeeded', 'Succeeded'), ('rejected', 'Rejected'), ('failed', 'Failed'), ('rolled_back', 'Rolled back'), ('aborted', 'Aborted')], default='queued', max_length=16)),
                ('reason', models.CharField(blank=True, max_length=300)),
                ('offset', models.PositiveBigIntegerField(default=0, help_text='Bytes the device acknowledged.')),
                ('beacons', models.PositiveIntegerField(default=0, help_text='Healthy beacons since the new image booted.')),
                ('complete_received', models.BooleanField(default=False, help_text='A valid signed ota.complete arrived.')),
                ('abort_pending', models.BooleanField(default=False, help_text='It ended on the hub mid-transfer: the device is still to be told (ota.abort).')),
                ('offer_requested_at', models.DateTimeField(blank=True, help_text="The driver chose it for an offer; the device's gateway offers at its next sweep.", null=True)),
                ('holder', models.CharField(blank=True, help_text="The device session that transfers it (its token): only it writes the transfer's progress.", max_length=64)),
                ('state_changed_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('progress_at', models.DateTimeField(default=django.utils.timezone.now, help_text="Last word from the transfer's session (a state change or saved progress).")),
                ('deadline_at', models.DateTimeField(blank=True, help_text='When the current step times out.', null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('device', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deployments', to='devices.device')),
                ('rollout', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deployments', to='ota.rollout')),
            ],
            options={
                'ordering': ['rollout', 'wave', 'device__node_id'],
            },
        ),
        migrations.AddConstraint(
            model_name='rollout',
            constraint=models.CheckConstraint(condition=models.Q(('state__in', ['draft', 'running', 'paused', 'completed', 'aborted'])), name='rollout_state_valid'),
        ),
        migrations.AddConstraint(
            model_name='rollout',
            constraint=models.CheckConstraint(condition=models.Q(('success_threshold__gte', 0), ('success_threshold__lte', 1)), name='rollout_success_threshold_range'),
        ),
        migrations.AddConstraint(
            model_name='rollout',
            constraint=models.CheckConstraint(condition=models.Q(('error_threshold__gte', 0), ('error_threshold__lte', 1)), name='rollout_error_threshold_range'),
        ),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(fields=['state', 'deadline_at'], name='deployment_due_idx'),
        ),
        migrations.AddConstraint(
            model_name='deployment',
            constraint=models.UniqueConstraint(fields=('rollout', 'device'), name='deployment_once_per_rollout'),
        ),
        migrations.AddConstraint(
            model_name='deployment',
            constraint=models.CheckConstraint(condition=models.Q(('state__in', ['queued', 'offered', 'transferring', 'verifying', 'installing', 'rebooting', 'health_check', 'succeeded', 'rejected', 'failed', 'rolled_back', 'aborted'])), name='deployment_state_valid'),
        ),
    ]
