"""What every log line says about the work it belongs to, besides the request id: the
organization a request or job is scoped to, and the correction it carries out (or started).

Entry points open a `scope()` (a request: flowplatform.middleware.RequestIdMiddleware; a job:
executions.jobs), so nothing bound inside it outlives it; code that learns a field inside the
scope `bind`s it (an API key's organization, a correction's id). `LogContextFilter` puts the
fields on each record, for the JSON log lines (LOG_FORMAT=json, settings_observability).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FIELDS = ("organization_id", "correction_id")

_fields: contextvars.ContextVar[dict[str, str | None] | None] = contextvars.ContextVar(
    "flowplatform_log_fields", default=None
)


def _merged(fields: dict[str, Any]) -> dict[str, str | None]:
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log fields: {sorted(unknown)}")
    given = {name: None if value is None else str(value) for name, value in fields.items()}
    return {**(_fields.get() or {}), **given}


@contextmanager
def scope(**fields: Any) -> Iterator[None]:
    """Log fields for the duration (`organization_id=…`, `correction_id=…`); on the way out
    every field, those bound inside included, is what it was before."""
    token = _fields.set(_merged(fields))
    try:
        yield
    finally:
        _fields.reset(token)


def bind(**fields: Any) -> None:
    """Set log fields until the enclosing `scope()` ends (or, outside any, for the process: a
    management command)."""
    _fields.set(_merged(fields))


def current() -> dict[str, str | None]:
    """Every field, None where unset."""
    found = _fields.get() or {}
    return {name: found.get(name) for name in FIELDS}


class LogContextFilter(logging.Filter):
    """Puts `organization_id` and `correction_id` (None where there is none) on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current().items():
            setattr(record, name, value)
        return True
