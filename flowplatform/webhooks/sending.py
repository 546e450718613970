"""One delivery attempt over the network, by the `http` task type's rules (the same code):
an allow-listed host only (FLOWPLATFORM_HTTP_ALLOWED_HOSTS, exact match), no redirects, one
deadline for the whole exchange, the answer read up to a size limit."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from executions.executors.base import TaskFailed
from executions.executors.http import exchange, host_allowed, http_target
from flowplatform.webhooks import signing


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str  # empty when ok
    latency_ms: int


def url_problem(url: str) -> str | None:
    """Why an endpoint URL is refused (None if it is allowed): checked when it is saved and
    again before every attempt, as for an http task."""
    target = http_target(url)
    if isinstance(target, str):
        return target
    if not host_allowed(target):
        return f"host of '{url}' is not allowed (FLOWPLATFORM_HTTP_ALLOWED_HOSTS)"
    return None


def send(url: str, secret: str, message_id: str, body: bytes) -> Outcome:
    """POST `body`, signed; ok when the endpoint answers 2xx in time."""
    started = time.monotonic()
    target = http_target(url)
    if isinstance(target, str) or not host_allowed(target):
        return Outcome(False, f"not sent: {url_problem(url)}", 0)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "flowplatform-webhooks",
        **signing.headers(secret, message_id, int(time.time()), body),
    }
    timeout = settings.FLOWPLATFORM_WEBHOOK_TIMEOUT_SECONDS
    try:
        exchange(target, "POST", body, headers, timeout, f"POST {url}")
    except TaskFailed as exc:
        return Outcome(False, str(exc), _ms(started))
    return Outcome(True, "", _ms(started))


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
