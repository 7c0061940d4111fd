"""Hourly and daily telemetry rollups (devices/retention.py)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('devices', '0005_telemetry_sample_unique'),
    ]

    operations = [
        migrations.CreateModel(
            name='TelemetryRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('capability', models.CharField(max_length=64)),
                ('resolution', models.CharField(choices=[('hour', 'Hourly'), ('day', 'Daily')], max_length=4)),
                ('bucket_start', models.DateTimeField()),
                ('count', models.PositiveIntegerField()),
                ('sum', models.FloatField()),
                ('min', models.FloatField()),
                ('max', models.FloatField()),
            ],
            options={
                'ordering': ['-bucket_start'],
            },
        ),
        migrations.AddField(
            model_name='telemetryrollup',
            name='device',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='telemetry_rollups', to='devices.device'),
        ),
        migrations.AddIndex(
            model_name='telemetryrollup',
            index=models.Index(fields=['resolution', 'bucket_start'], name='telemetry_rollup_age_idx'),
        ),
        migrations.AddConstraint(
            model_name='telemetryrollup',
            constraint=models.UniqueConstraint(fields=('device', 'capability', 'resolution', 'bucket_start'), name='telemetry_rollup_unique'),
        ),
        migrations.AddConstraint(
            model_name='telemetryrollup',
            constraint=models.CheckConstraint(condition=models.Q(('count__gt', 0)), name='telemetry_rollup_count_positive'),
        ),
    ]
