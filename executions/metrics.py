"""The product's numbers that live in the database, counted when /metrics is scraped: the same
answer from whichever process (gunicorn worker, db_worker host) serves the scrape.

Four set-based queries however many rows there are (a fifth, once per flow version new to the
process, reads its task types), across every organization: the numbers are the
operator's, so they are read in an audited row-level security bypass (flowplatform.rls), one
audit line per scrape. Each is a full count (a GROUP BY over the attempts, the corrections and
the job queue's ready rows, the webhook deliveries).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import Any

from django.db import connection
from django.db.models import Count, Min, Q
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from executions import leases
from executions.models import Correction, TaskExecution
from flowplatform import rls
from flowplatform.webhooks.models import WebhookDelivery
from flows.definitions import spec_for
from flows.models import FlowVersion

# An attempt whose task is not in its flow execution's version (a task an upgrade removed), or
# whose version's definition no longer loads.
UNKNOWN_TYPE = "unknown"

# Flow versions are immutable: their task types are read once per process.
_TASK_TYPES: OrderedDict[Any, dict[str, str]] = OrderedDict()
_TASK_TYPES_SIZE = 10_000


def task_types(version_ids: Iterable[Any]) -> dict[Any, dict[str, str]]:
    """version id → {task name: task type}: one query for the versions not read before."""
    wanted = set(version_ids)
    missing = wanted - _TASK_TYPES.keys()
    if missing:
        for version in FlowVersion.objects.filter(pk__in=missing).order_by().only("pk", "parsed"):
            try:
                found = {name: task.type for name, task in spec_for(version).tasks.items()}
            except Exception:
                found = {}
            _TASK_TYPES[version.pk] = found
        while len(_TASK_TYPES) > _TASK_TYPES_SIZE:
            _TASK_TYPES.popitem(last=False)
    return {pk: _TASK_TYPES.get(pk, {}) for pk in wanted}


def attempt_counts() -> dict[tuple[str, str], dict[str, int]]:
    """(task type, status) → the attempts in that status, and among them those the reaper
    failed (their worker was lost), those a correction's re-execution ran again (not reused)
    and those that reused an earlier result (early cutoff). Two queries at most."""
    rows = list(
        TaskExecution.objects.order_by()
        .values_list("flow_execution__flow_version_id", "task_name", "status")
        .annotate(
            attempts=Count("id"),
            reaped=Count("id", filter=Q(error__type=leases.WORKER_LOST)),
            reruns=Count(
                "id", filter=Q(started_by_correction__isnull=False, reused_from__isnull=True)
            ),
            reuses=Count("id", filter=Q(reused_from__isnull=False)),
        )
    )
    types = task_types(version for version, *_ in rows)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for version, task_name, status, attempts, reaped, reruns, reuses in rows:
        group = counts[types[version].get(task_name, UNKNOWN_TYPE), status]
        group["attempts"] += attempts
        group["reaped"] += reaped
        group["reruns"] += reruns
        group["reuses"] += reuses
    return counts


def correction_counts() -> dict[tuple[str, str], int]:
    """(operation, source) → corrections recorded. One query."""
    return {
        (operation, source): n
        for operation, source, n in Correction.objects.order_by()
        .values_list("operation", "source")
        .annotate(n=Count("id"))
    }


def delivery_counts() -> dict[str, int]:
    """Webhook deliveries in each state (flowplatform.webhooks). One query."""
    return dict(WebhookDelivery.objects.order_by().values_list("state").annotate(n=Count("id")))


def queue() -> tuple[int, float]:
    """django-tasks-db's jobs ready to run now, and how long the oldest has waited (seconds;
    0 when there is none). One query. Always empty with the embedded backend."""
    found = DBTaskResult.objects.ready().aggregate(depth=Count("id"), oldest=Min("enqueued_at"))
    oldest = found["oldest"]
    age = max((timezone.now() - oldest).total_seconds(), 0.0) if oldest else 0.0
    return found["depth"], age


def every_organization() -> Any:
    """PostgreSQL: an audited bypass of row-level security. SQLite has none, and no
    transaction either: a scrape must not take SQLite's write lock (BEGIN IMMEDIATE)."""
    if connection.vendor != "postgresql":
        return nullcontext()
    return rls.bypass("metrics scrape", "counting attempts, corrections and queued jobs")


class DatabaseCollector:
    """prometheus_client's custom collector of the numbers above (no `describe`: registering
    it runs no query; only a scrape does)."""

    def collect(self) -> Iterator[Metric]:
        with every_organization():
            attempts = attempt_counts()
            corrections = correction_counts()
            depth, age = queue()
            deliveries = delivery_counts()
        yield from attempt_metrics(attempts)
        yield from correction_metrics(corrections)
        webhooks = GaugeMetricFamily(
            "flowplatform_webhook_deliveries",
            "Webhook deliveries in each state: pending and sending (not finished), succeeded "
            "(the endpoint answered 2xx), failed (given up after the retry period).",
            labels=["state"],
        )
        for state in WebhookDelivery.State.values:
            webhooks.add_metric([state], deliveries.get(state, 0))
        yield webhooks
        yield GaugeMetricFamily(
            "flowplatform_queue_depth", "Jobs in the tasks queue ready to run now.", value=depth
        )
        yield GaugeMetricFamily(
            "flowplatform_queue_oldest_age_seconds",
            "How long the oldest job ready to run has waited since it was enqueued (0 when "
            "none waits).",
            value=age,
        )


def attempt_metrics(counts: dict[tuple[str, str], dict[str, int]]) -> Iterator[Metric]:
    """Every status of every task type seen, zeros included, so no series comes and goes."""
    by_status = GaugeMetricFamily(
        "flowplatform_task_attempts",
        "Task attempts now in each status, by task type.",
        labels=["task_type", "status"],
    )
    per_type = {
        "reaped": CounterMetricFamily(
            "flowplatform_task_attempts_reaped",
            "Attempts the reaper failed because their worker stopped renewing its lease.",
            labels=["task_type"],
        ),
        "reruns": CounterMetricFamily(
            "flowplatform_correction_reruns",
            "Attempts a correction's re-execution ran again (not reused).",
            labels=["task_type"],
        ),
        "reuses": CounterMetricFamily(
            "flowplatform_early_cutoff_reuses",
            "Attempts that reused an earlier attempt's result because their input was "
            "unchanged (early cutoff).",
            labels=["task_type"],
        ),
    }
    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(per_type, 0))
    for (task_type, _), group in counts.items():
        for name in per_type:
            totals[task_type][name] += group[name]
    for task_type in sorted(totals):
        for status in TaskExecution.Status.values:
            group = counts.get((task_type, status))
            by_status.add_metric([task_type, status], group["attempts"] if group else 0)
        for name, family in per_type.items():
            family.add_metric([task_type], totals[task_type][name])
    yield by_status
    yield from per_type.values()


def correction_metrics(counts: dict[tuple[str, str], int]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "flowplatform_corrections",
        "Corrections applied, by operation (task_execution_update, task_output_*, upgrade) and "
        "source (api, admin, command).",
        labels=["operation", "source"],
    )
    for operation in Correction.Operation.values:
        for source in Correction.Source.values:
            family.add_metric([operation, source], counts.get((operation, source), 0))
    yield family
