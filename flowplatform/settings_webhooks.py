"""Settings for webhook deliveries, read from environment variables (imported by name into
flowplatform.settings). Endpoint URLs obey the `http` task type's network rules too:
FLOWPLATFORM_HTTP_ALLOWED_HOSTS and FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured


def _seconds(name: str, default: float, minimum: float, maximum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number of seconds") from None
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be from {minimum:g} to {maximum:g}")
    return value


# One delivery's whole exchange (connect, send, answer); longer counts as a failure.
FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS = _seconds("FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS", 10, 0.1, 60)
# A failed delivery is tried again after this, then twice as long each time, at most
# FLOWPLATFORM_WEBHOOK_MAX_BACKOFF_SECONDS apart, until FLOWPLATFORM_WEBHOOK_RETRY_SECONDS
# have passed since the event: then it is given up (`failed`; "send again" still can).
FLOWPLATFORM_WEBHOOK_BACKOFF_SECONDS = _seconds(
    "FLOWPLATFORM_WEBHOOK_BACKOFF_SECONDS", 5, 0.001, 3600
)
FLOWPLATFORM_WEBHOOK_MAX_BACKOFF_SECONDS = _seconds(
    "FLOWPLATFORM_WEBHOOK_MAX_BACKOFF_SECONDS", 3600, 0.001, 86400
)
FLOWPLATFORM_WEBHOOK_RETRY_SECONDS = _seconds(
    "FLOWPLATFORM_WEBHOOK_RETRY_SECONDS", 86400, 0.0, 7 * 86400
)
