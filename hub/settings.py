"""meshhub settings: everything comes from the environment, with embedded defaults.

No environment at all gives the embedded deployment (SQLite in WAL mode, in-memory
channel layer, Celery on kombu's filesystem transport, all under MESHHUB_DATA_DIR).
DATABASE_URL switches to PostgreSQL, REDIS_URL to channels-redis and the Redis broker.
The table of variables lives in README.md; keep both in step.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if not value:
        return default
    return value.lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DATA_DIR = Path(env("MESHHUB_DATA_DIR", str(BASE_DIR / "var"))).resolve()
# Created private: it holds the database, the secret key and (later) encrypted CA keys.
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_private_file(path: Path, content: str) -> None:
    """Create `path` with mode 0600 from the start (no window where it is world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def _load_or_create_secret_key() -> str:
    explicit = env("MESHHUB_SECRET_KEY")
    if explicit:
        return explicit
    path = DATA_DIR / "secret_key"
    try:
        write_private_file(path, secrets.token_urlsafe(50))
    except FileExistsError:
        pass
    key = path.read_text().strip()
    if len(key) < 32:
        raise RuntimeError(f"{path} holds a secret key shorter than 32 characters; remove it to regenerate")
    return key


SECRET_KEY = _load_or_create_secret_key()
DEBUG = env_bool("MESHHUB_DEBUG")
ALLOWED_HOSTS = env_list("MESHHUB_ALLOWED_HOSTS", f"localhost,127.0.0.1,[::1],{socket.gethostname()}")
CSRF_TRUSTED_ORIGINS = env_list("MESHHUB_CSRF_TRUSTED_ORIGINS", "")

HTTP_HOST = env("MESHHUB_HTTP_HOST", "127.0.0.1")
HTTP_PORT = int(env("MESHHUB_HTTP_PORT", "8000"))
MESH_PORT = int(env("MESHHUB_MESH_PORT", "8883"))
ENROLL_PORT = int(env("MESHHUB_ENROLL_PORT", "8884"))
DISCOVERY_PORT = int(env("MESHHUB_DISCOVERY_PORT", "8885"))  # UDP; 0 turns discovery off
CA_PASSPHRASE = env("MESHHUB_CA_PASSPHRASE")
WORKER_CONCURRENCY = int(env("MESHHUB_WORKER_CONCURRENCY", "2"))

# Devices: where they connect and what they are told. The device listeners bind all
# interfaces (devices are on the LAN; mTLS guards the door); the address handed to
# devices at enrollment is MESHHUB_PUBLIC_HOST, which must be reachable from them.
DEVICE_BIND = env("MESHHUB_DEVICE_BIND", "0.0.0.0")  # noqa: S104
PUBLIC_HOST = env("MESHHUB_PUBLIC_HOST", "127.0.0.1")
TLS_SERVER_NAMES = sorted({"localhost", "127.0.0.1", socket.gethostname(), PUBLIC_HOST, *env_list("MESHHUB_TLS_SAN", "")})
PKI_DIR = DATA_DIR / "pki"
CERT_VALIDITY_DAYS = int(env("MESHHUB_CERT_VALIDITY_DAYS", "365"))
CERT_RENEW_BEFORE_DAYS = 30
UNUSED_CERT_DAYS = int(env("MESHHUB_UNUSED_CERT_DAYS", "7"))
ENROLLMENT_TTL_S = int(env("MESHHUB_ENROLLMENT_TTL_S", "900"))
ENROLL_MAX_FRAME = 16 * 1024
ENROLL_HANDSHAKE_TIMEOUT_S = float(env("MESHHUB_ENROLL_HANDSHAKE_TIMEOUT_S", "10"))
ENROLL_READ_TIMEOUT_S = float(env("MESHHUB_ENROLL_READ_TIMEOUT_S", "10"))
ENROLL_ATTEMPTS_PER_MINUTE = int(env("MESHHUB_ENROLL_ATTEMPTS_PER_MINUTE", "10"))
FACTORY_RESET_CONFIRM_S = 60
MESH_HEARTBEAT_S = int(env("MESHHUB_HEARTBEAT_S", "30"))
MESH_IDLE_TIMEOUT_S = float(env("MESHHUB_MESH_IDLE_TIMEOUT_S", str(3 * MESH_HEARTBEAT_S + 5)))  # 3 missed heartbeats
MESH_HANDSHAKE_TIMEOUT_S = float(env("MESHHUB_MESH_HANDSHAKE_TIMEOUT_S", "10"))
MESH_MAX_FRAME = 64 * 1024
MESH_FRAMES_PER_S = float(env("MESHHUB_MESH_FRAMES_PER_S", "50"))
MESH_FRAME_BURST = float(env("MESHHUB_MESH_FRAME_BURST", "200"))
# What a frame type costs in the rate limit (default 1). A firmware transfer makes the
# device answer every 4 KiB chunk: at full link speed that is hundreds of acks a second,
# paced by the hub's own window (it sends no more chunks than are acknowledged), so they
# must not starve the device's budget and stall the transfer. Flooding acks still hits
# the limit, at 20 per frame of budget.
MESH_FRAME_COSTS: dict[str, float] = {"ota.chunk_ack": 0.05}
MESH_MAX_OUTBOUND_BYTES = 256 * 1024
MESH_CLOCK_SKEW_S = int(env("MESHHUB_CLOCK_SKEW_S", "300"))
MESH_STATE_BATCH = 500
# How long a state report waits for others to share its transaction (group commit): the
# floor of report-to-rule latency at low load; under load batches fill (MESH_STATE_BATCH)
# or form while the previous flush runs.
MESH_STATE_FLUSH_S = float(env("MESHHUB_STATE_FLUSH_S", "0.01"))
MESH_STATE_IN_FLIGHT = 32  # reports of one session awaiting their batch's commit
MESH_OUTBOX_SWEEP_S = 1.0
# Gateway audit events held in memory while the database is away; past it the oldest are
# dropped, counted, and recorded as one `audit.gap` event once the database is back.
MESH_AUDIT_BACKLOG_MAX = int(env("MESHHUB_AUDIT_BACKLOG_MAX", "50000"))
GATEWAY_STAMP_S = 10.0  # how often a gateway stamps its Heartbeat row (system page)
# Committed state batches waiting for the state subscribers (automation, live pages) per
# process; beyond it the oldest waiting batch is dropped and counted (devices/events.py).
STATE_SUBSCRIBER_QUEUE = int(env("MESHHUB_STATE_SUBSCRIBER_QUEUE", "1000"))
MESH_STATE_MAX_AGE_S = 24 * 3600  # buffered reports older than this are refused

# Commands that nobody answers expire; a caller may ask for less, never more.
COMMAND_DEFAULT_TTL_S = int(env("MESHHUB_COMMAND_TTL_S", "300"))
COMMAND_MAX_TTL_S = 24 * 3600
# How long an API Idempotency-Key answers with its first response (hub.idempotency); beat
# prunes older keys and they may be used again.
IDEMPOTENCY_KEY_TTL_S = int(env("MESHHUB_IDEMPOTENCY_KEY_TTL_S", str(24 * 3600)))
# Telemetry retention (devices/retention.py): raw samples for RAW_DAYS, then folded into
# hourly rollups kept HOURLY_DAYS, folded into daily rollups kept DAILY_DAYS (0: forever).
# Each beat run moves at most RETENTION_BATCH rows per transaction, for at most
# RETENTION_BUDGET_S seconds; the rest waits for the next run.
TELEMETRY_RAW_DAYS = int(env("MESHHUB_TELEMETRY_RAW_DAYS", "7"))
TELEMETRY_HOURLY_DAYS = int(env("MESHHUB_TELEMETRY_HOURLY_DAYS", "90"))
TELEMETRY_DAILY_DAYS = int(env("MESHHUB_TELEMETRY_DAILY_DAYS", "1830"))
TELEMETRY_RETENTION_S = float(env("MESHHUB_TELEMETRY_RETENTION_S", "300"))
TELEMETRY_RETENTION_BATCH = int(env("MESHHUB_TELEMETRY_RETENTION_BATCH", "5000"))
TELEMETRY_RETENTION_BUDGET_S = float(env("MESHHUB_TELEMETRY_RETENTION_BUDGET_S", "120"))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "hub",
    "audit",
    "devices",
    "ota",
    "automation",
    "assistant",
    "industrial",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "hub.middleware.refuse_nul_characters",
    "hub.middleware.DependencyOutage",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hub.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "hub.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "hub.context_processors.roles",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL")
EMBEDDED = not DATABASE_URL
if DATABASE_URL:
    DATABASES: dict[str, Any] = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    # libpq waits for ever by default: a server that accepts TCP and never answers would hang
    # every new connection (docs/operations.md, Outages). A ?connect_timeout= in the URL wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", int(env("MESHHUB_DB_CONNECT_TIMEOUT_S", "5")))
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": Path(env("MESHHUB_SQLITE_PATH", str(DATA_DIR / "meshhub.sqlite3"))),
            "OPTIONS": {
                # WAL lets readers run beside the one writer; IMMEDIATE takes the write
                # lock at BEGIN so two writers queue on the busy timeout instead of failing
                # with "database is locked" half-way through a transaction.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                "transaction_mode": "IMMEDIATE",
                # Seconds a write waits for the lock before "database is locked".
                "timeout": float(env("MESHHUB_SQLITE_TIMEOUT_S", "20")),
            },
            "TEST": {"NAME": DATA_DIR / "test-meshhub.sqlite3"},
            # Kept open per thread: the gateway's database threads would otherwise open a
            # connection (and run init_command) for every call.
            "CONN_MAX_AGE": 600,
            "CONN_HEALTH_CHECKS": True,
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer and Celery ----------------------------------------------------------
REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    REDIS_MAX_CONNECTIONS = int(env("MESHHUB_REDIS_MAX_CONNECTIONS", "2000"))
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 defaults socket_timeout to 5 s, which aborts channels-redis's blocking
            # BZPOPMIN (also 5 s) and tears every idle consumer down (channels_redis#422).
            # redis-py 8's pool raises MaxConnectionsError past 100 connections instead of
            # waiting; a gateway's burst of group_add/group_discard (a reconnect storm) needs more.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5, "max_connections": REDIS_MAX_CONNECTIONS}],
                "prefix": "meshhub",
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"global_keyprefix": "meshhub:"}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    from hub.broker import folder_options

    BROKER_DIR = DATA_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://localhost//"  # the host is ignored; naming it spares a kombu warning
    # `filesystem` is hub.broker's transport: kombu's, with messages written whole (hub/celery.py).
    CELERY_BROKER_TRANSPORT_OPTIONS = folder_options(BROKER_DIR)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
# A task whose worker process died (SIGKILL, OOM) goes back to the queue instead of being
# acknowledged as failed; every task is safe to run twice (docs/operations.md, "Worker loss").
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # keep the JSON log format of LOGGING
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
WORKER_HEARTBEAT_S = 30.0  # hub.tasks.heartbeat: proves worker + beat; /system/ says "starting" until the first is due
# A PLC write's claim: how long a run may take before the sweep hands the command to another.
PLC_WRITE_LEASE_S = float(env("MESHHUB_PLC_WRITE_LEASE_S", "30"))
PLC_COMMAND_SWEEP_S = float(env("MESHHUB_PLC_COMMAND_SWEEP_S", "10"))
CELERY_BEAT_SCHEDULE = {
    "expire-commands": {"task": "devices.tasks.expire_commands", "schedule": 5.0},
    "worker-heartbeat": {"task": "hub.tasks.heartbeat", "schedule": WORKER_HEARTBEAT_S},
    "refresh-crl": {"task": "devices.tasks.refresh_crls", "schedule": 24 * 3600.0},
    "certificates-expiring": {"task": "devices.tasks.certificates_expiring", "schedule": 24 * 3600.0},
    "cleanup-provisioning": {"task": "devices.tasks.cleanup_provisioning", "schedule": 3600.0},
    "presence-watchdog": {"task": "devices.tasks.presence_watchdog", "schedule": 15.0},
    "prune-idempotency-keys": {"task": "hub.tasks.prune_idempotency_keys", "schedule": 3600.0},
    "sweep-plc-commands": {"task": "industrial.tasks.sweep_commands", "schedule": PLC_COMMAND_SWEEP_S},
    # Signs each finished UTC day once; hourly so a restarted hub catches up soon after.
    "audit-snapshot": {"task": "audit.tasks.snapshot_audit", "schedule": 3600.0},
    "telemetry-retention": {"task": "devices.tasks.apply_telemetry_retention", "schedule": TELEMETRY_RETENTION_S},
    # Timeouts, wave verdicts and offers of every running rollout (events drive them sooner).
    "drive-rollouts": {"task": "ota.tasks.drive_rollouts", "schedule": float(env("MESHHUB_OTA_DRIVE_S", "5"))},
    # Rules whose `for` duration ran out without new state (state batches evaluate at once),
    # and runs whose delay is over.
    "automation-recheck": {"task": "automation.tasks.recheck_due", "schedule": 1.0},
    "automation-prune-runs": {"task": "automation.tasks.prune_runs", "schedule": 3600.0},
}

# --- auth, i18n, static -----------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = env("MESHHUB_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Release images (ota/releases.py) go through Django's storage API under the alias
# "firmware": the data dir by default; for scale-out another backend (django-storages' S3
# backend, say, once installed) with its options as JSON.
FIRMWARE_STORAGE_BACKEND = env("MESHHUB_FIRMWARE_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
FIRMWARE_STORAGE_OPTIONS = json.loads(env("MESHHUB_FIRMWARE_STORAGE_OPTIONS") or "null") or {"location": str(DATA_DIR / "firmware")}
OTA_MAX_IMAGE_BYTES = int(env("MESHHUB_OTA_MAX_IMAGE_BYTES", str(64 * 1024 * 1024)))
# Automation webhooks to loopback, link-local and unspecified addresses are refused unless
# this is set (a rule must not become a way into the hub's own machine or its neighbours).
AUTOMATION_WEBHOOK_PRIVATE = env_bool("MESHHUB_AUTOMATION_WEBHOOK_PRIVATE")
# Each POST waits at most TIMEOUT_S; a timeout, a connection failure or a 5xx/408/429 answer
# is tried again RETRIES times, BACKOFF_S * 2^n apart (automation/webhooks.py).
AUTOMATION_WEBHOOK_TIMEOUT_S = float(env("MESHHUB_AUTOMATION_WEBHOOK_TIMEOUT_S", "5"))
AUTOMATION_WEBHOOK_RETRIES = int(env("MESHHUB_AUTOMATION_WEBHOOK_RETRIES", "3"))
AUTOMATION_WEBHOOK_BACKOFF_S = float(env("MESHHUB_AUTOMATION_WEBHOOK_BACKOFF_S", "2"))
# Rule runs are kept this many days (beat prunes older ones hourly; runs in flight stay).
AUTOMATION_RUN_DAYS = int(env("MESHHUB_AUTOMATION_RUN_DAYS", "30"))
# Rule chains (A's command changes what B reads, B's what A reads): a run more than this
# many runs down a chain is stopped and says so. A value counts as caused by a rule's
# command sent to that device within the window before it.
AUTOMATION_MAX_CHAIN_DEPTH = int(env("MESHHUB_AUTOMATION_MAX_CHAIN_DEPTH", "5"))
AUTOMATION_CHAIN_WINDOW_S = float(env("MESHHUB_AUTOMATION_CHAIN_WINDOW_S", "60"))
# A dry-run replays at most this range and this many samples (it runs in the request).
AUTOMATION_DRY_RUN_MAX_DAYS = int(env("MESHHUB_AUTOMATION_DRY_RUN_MAX_DAYS", "31"))
AUTOMATION_DRY_RUN_MAX_SAMPLES = int(env("MESHHUB_AUTOMATION_DRY_RUN_MAX_SAMPLES", "500000"))
# The assistant's language models (docs/assistant.md): OpenAI-style base URLs including /v1.
# Text about the fleet reaches the cloud model only with LLM_CLOUD_FOR_DEVICES; a provider
# failing LLM_BREAKER_FAILURES times in a row is skipped for LLM_BREAKER_OPEN_S.
LLM_LOCAL_URL = env("MESHHUB_LLM_LOCAL_URL", "")
LLM_LOCAL_MODEL = env("MESHHUB_LLM_LOCAL_MODEL", "llama3.1")
LLM_CLOUD_URL = env("MESHHUB_LLM_CLOUD_URL", "")
LLM_CLOUD_MODEL = env("MESHHUB_LLM_CLOUD_MODEL", "gpt-4o-mini")
LLM_CLOUD_API_KEY = env("MESHHUB_LLM_CLOUD_API_KEY", "")
LLM_CLOUD_FOR_DEVICES = env_bool("MESHHUB_LLM_CLOUD_FOR_DEVICES")
LLM_BREAKER_FAILURES = int(env("MESHHUB_LLM_BREAKER_FAILURES", "3"))
LLM_BREAKER_OPEN_S = float(env("MESHHUB_LLM_BREAKER_OPEN_S", "300"))
LLM_TIMEOUT_S = float(env("MESHHUB_LLM_TIMEOUT_S", "20"))
# A rollout completes while a target is offline only once it has been away this long: a
# device rebooting (into the last release, say) is back within seconds and gets its offer.
OTA_OFFLINE_GRACE_S = float(env("MESHHUB_OTA_OFFLINE_GRACE_S", "120"))
# How often a transfer's acknowledged offset is written to its deployment row: what a
# resume after a gateway crash can start from (the device may hold more; never less).
OTA_PROGRESS_SAVE_S = float(env("MESHHUB_OTA_PROGRESS_SAVE_S", "1.0"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    "firmware": {"BACKEND": FIRMWARE_STORAGE_BACKEND, "OPTIONS": FIRMWARE_STORAGE_OPTIONS},
}
# Serve straight from the finders too, so a missed collectstatic never breaks the admin.
WHITENOISE_USE_FINDERS = True

# --- security headers and cookies --------------------------------------------------------
# The embedded hub speaks plain HTTP on a LAN; behind TLS set MESHHUB_HTTPS=1.
HTTPS = env_bool("MESHHUB_HTTPS")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 31536000
    SECURE_SSL_REDIRECT = env_bool("MESHHUB_SSL_REDIRECT", True)

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "hub.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["hub.permissions.HasScope"],
    # Bodies are JSON only: command values are JSON-typed, and a form would make them strings.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "hub.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "hub.api_errors.audited_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "meshhub API",
    "DESCRIPTION": "Devices, commands, groups and the audit log of a meshhub fleet. "
    "Authenticate with `Authorization: Token <token>` (see `manage.py createapitoken`).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models name a field `status` (and two name one choice set twice): name each
    # enum after its choices, so a generated client's types stay stable as the API grows.
    "ENUM_NAME_OVERRIDES": {
        "DeviceStatusEnum": "devices.models.DeviceStatus",
        "CommandStatusEnum": "devices.models.CommandStatus",
        "CertificateStatusEnum": "devices.models.CertificateStatus",
        "EnrollmentStatusEnum": "devices.models.EnrollmentStatus",
        "ByteOrderEnum": "industrial.models.ByteOrder",
    },
}

# --- logging: one JSON object per line on stdout ------------------------------------------
LOG_LEVEL = env("MESHHUB_LOG_LEVEL", "INFO").upper()
# Celery's per-task lines ("received", "succeeded", beat's "sending due task") come every
# few seconds from the housekeeping schedule and drown the hub's own log at INFO; they
# show at DEBUG. Failures stay visible: celery.app.trace logs them at ERROR.
ROUTINE_CELERY_LEVEL = "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "hub.logging.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}},
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "celery.app.trace": {"level": ROUTINE_CELERY_LEVEL},
        "celery.worker.strategy": {"level": ROUTINE_CELERY_LEVEL},
        "celery.beat": {"level": ROUTINE_CELERY_LEVEL},
    },
}
