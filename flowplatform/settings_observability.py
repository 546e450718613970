"""Settings for logs and metrics, read from environment variables (imported by name into
flowplatform.settings): the log level and format, the metrics endpoint's token, and
prometheus_client's multiprocess directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(choices)}")
    return value


LOG_LEVEL = _choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
# text: one line per record as people read it; json: one JSON object per line, with the request
# id, organization and correction id as fields (flowplatform.logcontext), for a log pipeline.
LOG_FORMAT = _choice("LOG_FORMAT", "text", ("text", "json"))

# GET /metrics (flowplatform.metrics_endpoint) answers only `Authorization: Bearer <this>`;
# unset, the endpoint does not exist (a 404 like any unknown path).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "").strip()
if METRICS_TOKEN and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 characters long")

# prometheus_client's multiprocess mode (several gunicorn workers and db_workers on one host):
# each process writes its in-process metrics under this directory, and /metrics adds them up.
# prometheus_client reads the variable itself; it must name a directory, so it is created.
PROMETHEUS_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
if PROMETHEUS_MULTIPROC_DIR:
    try:
        Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} cannot be created: {exc}"
        ) from None

_FILTERS = ["request_id", "log_context"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "flowplatform.middleware.RequestIdLogFilter"},
        "log_context": {"()": "flowplatform.logcontext.LogContextFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"},
        # python-json-logger: these fields first, then any `extra=` a call passes.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": [
                "levelname",
                "name",
                "message",
                "request_id",
                "organization_id",
                "correction_id",
            ],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601, UTC
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": {"text": "plain", "json": "json"}[LOG_FORMAT],
            "filters": _FILTERS,
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        "django.tasks": {"level": "WARNING"},
    },
}
