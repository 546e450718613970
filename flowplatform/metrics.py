"""The numbers each process measures itself (request latency by route, task duration), and the
exposition of those with the database's numbers (executions.metrics) for GET /metrics.

These live in the process that measured them. With several processes on a host (gunicorn
workers, db_workers), set PROMETHEUS_MULTIPROC_DIR for all of them: each writes its numbers
there and /metrics adds up every process's (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

REQUEST_DURATION = Histogram(
    "flowplatform_http_request_duration_seconds",
    "Time from a request reaching Django to its response, by route (the URL pattern that "
    "matched, not the path), method and status code.",
    ["route", "method", "status"],
)
TASK_DURATION = Histogram(
    "flowplatform_task_duration_seconds",
    "Time a task's executor ran on one attempt, by task type and outcome (completed, failed).",
    ["task_type", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)

# A request that matched no URL pattern (a middleware answered first, e.g. a 411).
UNRESOLVED = "<unresolved>"


def route_of(request: HttpRequest) -> str:
    """The pattern of the URL that matched (`flow-executions/<pk>` style, whatever the ids),
    so the label has as many values as there are routes."""
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route else UNRESOLVED


class RequestLatencyMiddleware:
    """Observes every request's duration in REQUEST_DURATION (outermost: what a client waits
    for, the embedded backend's jobs included)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        REQUEST_DURATION.labels(
            route=route_of(request), method=request.method, status=str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response


@contextmanager
def timed_task(task_type: str) -> Iterator[None]:
    """Observe an executor's run in TASK_DURATION: `completed` unless it raises."""
    started = time.perf_counter()
    outcome = "failed"
    try:
        yield
        outcome = "completed"
    finally:
        TASK_DURATION.labels(task_type=task_type, outcome=outcome).observe(
            time.perf_counter() - started
        )


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class _ThisProcess:
    """The default registry's metrics (ours, and the process' own: CPU, memory, GC), for a
    scrape registry of its own that also holds the database's collector."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


def exposition(collectors: Iterable[Any], accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type (Prometheus text, or OpenMetrics when `accept`
    asks for it): the in-process numbers, every process's in multiprocess mode, and
    `collectors`' (collected now)."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    for collector in collectors:
        registry.register(collector)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
