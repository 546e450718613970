"""Settings for flowplatform, read from environment variables.

Defaults give the embedded mode (SQLite under var/, tasks run in-process, DEBUG on) with no
configuration at all. Every variable is parsed strictly: a bad value stops start-up with a
message that names the variable, instead of running with a surprise.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

# Logs (text or JSON lines, LOGGING) and /metrics (its token): the settings of observability.
from flowplatform.settings_observability import LOGGING, METRICS_TOKEN  # noqa: F401

# Webhook deliveries: timeout, backoff, retry period (flowplatform.webhooks).
from flowplatform.settings_webhooks import (  # noqa: F401
    FLOWPLATFORM_WEBHOOK_BACKOFF_SECONDS,
    FLOWPLATFORM_WEBHOOK_MAX_BACKOFF_SECONDS,
    FLOWPLATFORM_WEBHOOK_RETRY_SECONDS,
    FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FLOWPLATFORM_VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of true/false/1/0/yes/no")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not value >= minimum or value == float("inf"):
        raise ImproperlyConfigured(f"{name}={raw!r} must be a finite number of at least {minimum}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not one of: {', '.join(choices)}",
        )
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Parse DATABASE_URL; only SQLite and PostgreSQL are supported."""
    try:
        config = dj_database_url.parse(url, conn_max_age=0)
    except Exception as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine == "django.db.backends.postgresql":
        config.setdefault("OPTIONS", {})
        config["CONN_HEALTH_CHECKS"] = True
        config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
        config["OPTIONS"].setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
    elif engine == "django.db.backends.sqlite3":
        # Several threads of the dev server share the file: wait for locks instead of failing.
        config.setdefault("OPTIONS", {})
        config["OPTIONS"].setdefault("timeout", 20)
        config["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
        # Write-ahead log: readers never wait for the writer, and a commit is an append, not
        # an fsync of the database (synchronous=NORMAL is durable across a crash of the
        # process; a power loss may lose the last commits, never corrupt the file).
        config["OPTIONS"].setdefault(
            "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"
        )
    else:
        raise ImproperlyConfigured(
            f"DATABASE_URL uses an unsupported database ({engine or 'unknown'}); "
            "use sqlite:///path or postgres://user:password@host:port/name",
        )
    return config


DEBUG = env_bool("DEBUG", True)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "insecure-dev-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS",
    ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else [],
)
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is false (comma-separated)")

DATABASES = {
    "default": database_from_url(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'flowplatform.sqlite3'}")
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
# PostgreSQL: the role the application connects as, when `migrate` runs as the tables' owner;
# migrate grants it data privileges (flowplatform.rls, README "Database roles").
DATABASE_APP_ROLE = os.environ.get("DATABASE_APP_ROLE", "").strip()

TASKS_BACKEND = env_choice("TASKS_BACKEND", "immediate", ("immediate", "database"))
TASKS = {
    "default": {
        "BACKEND": {
            "immediate": "flowplatform.tasks.InlineQueueBackend",
            "database": "django_tasks_db.DatabaseBackend",
        }[TASKS_BACKEND],
    }
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "flowplatform.tenancy",
    "flowplatform.webhooks",
    "flows",
    "executions",  # before django_tasks_db: its db_worker (leases, reaper, graceful stop) wins
    "outputs",
    "django_tasks_db",
]

MIDDLEWARE = [
    "flowplatform.metrics.RequestLatencyMiddleware",
    "flowplatform.middleware.RequestIdMiddleware",
    "flowplatform.middleware.JsonErrorMiddleware",
    "flowplatform.middleware.ContentLengthRequiredMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "flowplatform.middleware.AdminScopeMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "flowplatform.urls"
# Admin shows history; reverting from it would bypass the services (flowplatform.admin).
SIMPLE_HISTORY_REVERT_DISABLED = True
WSGI_APPLICATION = "flowplatform.wsgi.application"
# Paths are served with and without a trailing slash by the routes themselves; a redirect
# would turn a PUT into a GET and lose its body.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "flowplatform" / "templates"],  # admin's base_site: name, favicon
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "flowplatform" / "static"]  # the admin's favicon and stylesheet
# WhiteNoise serves static files (the offline API docs, admin) straight from the installed apps,
# and from STATIC_ROOT once `collectstatic` has put them there (production: README's env file
# sets it). Unset, nothing needs collecting.
STATIC_ROOT = os.environ.get("STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BODY_BYTES", 1024 * 1024, minimum=1024)
# Deepest nesting of arrays/objects in a JSON request body (or an http task's answer); deeper is
# refused before parsing, which recurses once per level.
MAX_JSON_DEPTH = env_int("MAX_JSON_DEPTH", 64, minimum=2)
if MAX_JSON_DEPTH > 500:
    raise ImproperlyConfigured("MAX_JSON_DEPTH must be at most 500 (JSON is parsed recursively)")

API_PAGE_SIZE = env_int("API_PAGE_SIZE", 50, minimum=1)
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 1000, minimum=1)
if API_PAGE_SIZE > API_MAX_PAGE_SIZE:
    raise ImproperlyConfigured("API_PAGE_SIZE must not exceed API_MAX_PAGE_SIZE")

# Flow definitions larger than this are refused before they are parsed.
FLOWPLATFORM_MAX_DEFINITION_BYTES = env_int(
    "FLOWPLATFORM_MAX_DEFINITION_BYTES", 1024 * 1024, minimum=1
)
FLOWPLATFORM_MAX_TASKS = env_int("FLOWPLATFORM_MAX_TASKS", 10_000, minimum=1)
# The most iterations one looped task may have: items of a for_each, max_iterations of a loop
# (flows.loops). Refused at save time when the definition shows it, a failure at run time else.
FLOWPLATFORM_MAX_ITERATIONS = env_int("FLOWPLATFORM_MAX_ITERATIONS", 10_000, minimum=1)
# Upgrade jobs (POST /flows/{id}/upgrade-executions, manage.py upgrade_executions): the most
# executions one job may match, and how many it upgrades per transaction.
FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS = env_int(
    "FLOWPLATFORM_MAX_UPGRADE_EXECUTIONS", 10_000, minimum=1
)
FLOWPLATFORM_UPGRADE_BATCH = env_int("FLOWPLATFORM_UPGRADE_BATCH", 50, minimum=1)
# An upgrade job's lease, renewed as each batch commits: once it passes, the reaper hands the
# job to another worker (its runner is presumed lost). A batch must take less.
FLOWPLATFORM_UPGRADE_LEASE_SECONDS = env_float(
    "FLOWPLATFORM_UPGRADE_LEASE_SECONDS", 60.0, minimum=1.0
)


def env_mapping(name: str) -> dict[str, str]:
    """`a=x.y.Z,b=p.q.R` → {"a": "x.y.Z", "b": "p.q.R"}."""
    mapping = {}
    for item in env_list(name, []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ImproperlyConfigured(f"{name}: '{item}' is not NAME=dotted.path.Class")
        mapping[key.strip()] = value.strip()
    return mapping


# Task types beyond the built-ins (transform, python, http, human): name → Executor subclass.
FLOWPLATFORM_EXECUTORS = env_mapping("FLOWPLATFORM_EXECUTORS")
# Module prefixes whose functions `python` tasks may call; nothing else runs.
FLOWPLATFORM_PYTHON_CALLABLES = env_list("FLOWPLATFORM_PYTHON_CALLABLES", ["examples"])
# Hosts (or host:port) `http` tasks may call; none by default.
FLOWPLATFORM_HTTP_ALLOWED_HOSTS = env_list("FLOWPLATFORM_HTTP_ALLOWED_HOSTS", [])
FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES = env_int(
    "FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES", 1024 * 1024, minimum=1
)
# The whole exchange of an `http` task (connect, send, answer) unless its config sets `timeout`.
FLOWPLATFORM_HTTP_TIMEOUT_SECONDS = env_int("FLOWPLATFORM_HTTP_TIMEOUT_SECONDS", 10, minimum=1)
if FLOWPLATFORM_HTTP_TIMEOUT_SECONDS > 60:
    raise ImproperlyConfigured("FLOWPLATFORM_HTTP_TIMEOUT_SECONDS must be at most 60")

# Worker faults (executions.leases): a worker's claim on an attempt is a lease it renews every
# third of FLOWPLATFORM_LEASE_SECONDS while the task runs; the reaper (every db_worker, every
# FLOWPLATFORM_REAP_INTERVAL_SECONDS, and `manage.py reap_expired`) fails an attempt whose lease
# expired (its worker was lost) and retries it if retries remain. On SIGTERM a db_worker finishes
# its current task, waiting at most FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS.
# Pure task types (transform, and executors that declare `pure = True`) run in waves: one job
# runs the ready ones and those they make ready, at most FLOWPLATFORM_WAVE_TASKS per transaction
# (executions.engine.waves), embedded or on a db_worker; off, every task is a job of its own.
FLOWPLATFORM_INLINE_PURE_TASKS = env_bool("FLOWPLATFORM_INLINE_PURE_TASKS", True)
FLOWPLATFORM_WAVE_TASKS = env_int("FLOWPLATFORM_WAVE_TASKS", 1000, minimum=1)
# A dry run predicts the values of the pure tasks its correction makes run again by running
# them in its rolled-back transaction (executions.engine.predicting): at most this many
# attempts; beyond them the predictions say "unknown".
FLOWPLATFORM_PREDICTION_TASKS = env_int("FLOWPLATFORM_PREDICTION_TASKS", 5000, minimum=0)
FLOWPLATFORM_LEASE_SECONDS = env_float("FLOWPLATFORM_LEASE_SECONDS", 60.0, minimum=1.0)
FLOWPLATFORM_REAP_INTERVAL_SECONDS = env_float(
    "FLOWPLATFORM_REAP_INTERVAL_SECONDS", 15.0, minimum=0.1
)
FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS = env_float(
    "FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS", 30.0, minimum=0.0
)

# An API key's last_used_at is written at most this often, so reads do not become writes.
FLOWPLATFORM_KEY_USAGE_RESOLUTION_SECONDS = 60

# Idempotency-Key: how long a key's first response is replayed, and how long a duplicate waits
# for the first request to finish before it is answered 409.
IDEMPOTENCY_TTL_HOURS = env_int("IDEMPOTENCY_TTL_HOURS", 24, minimum=1)
IDEMPOTENCY_WAIT_SECONDS = env_int("IDEMPOTENCY_WAIT_SECONDS", 10)

# A transaction PostgreSQL aborts for a deadlock or a serialization failure is run again this
# many times (flowplatform.dbretry) before the error reaches the client as a 503.
FLOWPLATFORM_DB_RETRIES = env_int("FLOWPLATFORM_DB_RETRIES", 3)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["flowplatform.tenancy.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["flowplatform.tenancy.authentication.HasApiKey"],
    "DEFAULT_PARSER_CLASSES": ["flowplatform.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["flowplatform.api.filters.StrictFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "flowplatform.api.pagination.LimitOffsetPagination",
    "DEFAULT_SCHEMA_CLASS": "flowplatform.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "flowplatform.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
    "COERCE_DECIMAL_TO_STRING": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "flowplatform API",
    "DESCRIPTION": (
        "Multi-tenant flow platform. Every endpoint except /healthz, /readyz and the API docs "
        "needs `Authorization: Bearer <api key>`. Errors share one shape: "
        '`{"error": {"code", "message", "details"}, "request_id"}`; 422 validation errors also '
        'carry `"detail": [{"loc", "msg", "type"}]`.\n\n'
        "**Key scopes.** A key has the scopes `read` (GET, HEAD, OPTIONS) and/or `write` (POST, "
        "PUT, PATCH, DELETE, including `POST /flow-executions/{id}/execute`); both unless it was "
        "issued with fewer. A request its key has no scope for is answered **403** with "
        "`error.code` `insufficient_scope` (and `error.details.required_scope`), and changes "
        "nothing.\n\n"
        "**Limits.** A body over MAX_REQUEST_BODY_BYTES (default 1 MiB) is a 413 "
        "`payload_too_large`; a body sent without Content-Length (chunked) a 411 "
        "`length_required`; JSON nested deeper than MAX_JSON_DEPTH (default 64) a 422 at "
        '`["body"]` (`json_too_deep`); `limit` must be 1 to 1000 and `offset` at least 0 (else a '
        "422 naming the parameter); an empty query value (`?limit=`) is a 422 too; a body "
        "shorter than its Content-Length is a 400 `malformed_request`; an id in a path that is "
        "not a UUID is a 404.\n\n"
        "**Before the application.** The production server (gunicorn, `gunicorn.conf.py`) "
        "answers some requests itself, as a short HTML page without `X-Request-ID`: a request "
        "line over 8,190 bytes is a **414**, a header over 8,190 bytes (or more than 100 "
        "headers) a **431**, a request that is not HTTP a **400**."
    ),
    "VERSION": "0.1.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "flowplatform.api.schema.seed_paths",
        "flowplatform.api.schema.nullable_any_values",
        "flowplatform.api.schema.health_paths",
    ],
    "ENUM_NAME_OVERRIDES": {
        "TaskExecutionStatusEnum": "executions.models.TaskExecution.Status",
        "FlowExecutionStatusEnum": "executions.models.FlowExecution.Status",
        "PredictionActionEnum": "executions.correction_serializers.PREDICTION_ACTIONS",
    },
}

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", True)
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
