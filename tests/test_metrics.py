"""GET /metrics: closed without METRICS_TOKEN, then only with it; after a run and a correction
the database's numbers are right; its queries do not grow with the attempts; request latency
is labelled by route pattern, never by raw path."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import resolve
from prometheus_client.parser import text_string_to_metric_families

from executions.models import TaskExecution

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-the-tests-0123456789"

# X; A runs after X but reads only the flow input (a correction of X reuses it: early cutoff);
# D reads X's output (it runs again).
DEFINITION = json.dumps(
    {
        "tasks": [
            {"name": "X", "type": "transform", "input": {"flow": "${{ flow.input }}"}},
            {
                "name": "A",
                "type": "python",
                "depends_on": ["X"],
                "config": {"callable": "examples.tasks:word_lengths"},
                "input": {"text": "${{ flow.input.text }}"},
            },
            {"name": "D", "type": "transform", "input": {"x": "${{ tasks.X.output }}"}},
        ]
    }
)


@pytest.fixture
def metrics_token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(token: str = TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics with the token: sample (name, sorted labels) → value."""
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def run_and_correct(tenant: Any) -> str:
    """A flow execution of DEFINITION, run, then X corrected with execute_flow=true."""
    flow = tenant.client.post("/flows", {"name": "f", "definition": DEFINITION}, format="json")
    assert flow.status_code == 201, flow.json()
    fe = tenant.client.post(
        "/flow-executions",
        {"flow_id": flow.json()["id"], "input": {"text": "two words"}},
        format="json",
    ).json()
    assert fe["status"] == "completed", fe
    found = tenant.client.get(f"/task-executions?flow_execution_id={fe['id']}&task_name=X")
    (body,) = found.json()["results"]
    body.update(output={"corrected": True}, status="completed")
    response = tenant.client.put(
        f"/task-executions/{body['id']}?execute_flow=true", body, format="json"
    )
    assert response.status_code == 200, response.json()
    return fe["id"]


def test_metrics_are_not_found_without_a_metrics_token(settings, tenant):
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert response.json()["request_id"]
    # An API key is not the metrics token either.
    assert tenant.client.get("/metrics").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN])
def test_metrics_refuse_a_missing_or_wrong_token(metrics_token, header):
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = Client().get("/metrics", **extra)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"flowplatform_" not in response.content


def test_metrics_answer_only_reads(metrics_token):
    response = Client().post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_a_scrape_after_a_run_and_a_correction_counts_them(metrics_token, tenant, other_tenant):
    run_and_correct(tenant)
    run_and_correct(other_tenant)  # the numbers are every organization's
    samples = scrape()
    attempts = "flowplatform_task_attempts"
    # Per organization: X#0 (corrected in place), D#1 (run again) and A#1 (reused) completed;
    # D#0 and A#0 stale.
    assert value(samples, attempts, task_type="transform", status="completed") == 4
    assert value(samples, attempts, task_type="transform", status="stale") == 2
    assert value(samples, attempts, task_type="python", status="completed") == 2
    assert value(samples, attempts, task_type="python", status="stale") == 2
    assert value(samples, attempts, task_type="python", status="failed") == 0
    corrections = "flowplatform_corrections_total"
    assert value(samples, corrections, operation="task_execution_update", source="api") == 2
    assert value(samples, corrections, operation="upgrade", source="api") == 0
    assert value(samples, "flowplatform_correction_reruns_total", task_type="transform") == 2
    assert value(samples, "flowplatform_correction_reruns_total", task_type="python") == 0
    assert value(samples, "flowplatform_early_cutoff_reuses_total", task_type="python") == 2
    assert value(samples, "flowplatform_early_cutoff_reuses_total", task_type="transform") == 0
    assert value(samples, "flowplatform_task_attempts_reaped_total", task_type="python") == 0
    assert value(samples, "flowplatform_queue_depth") == 0
    assert value(samples, "flowplatform_queue_oldest_age_seconds") == 0
    assert value(samples, "flowplatform_webhook_deliveries", state="failed") == 0
    # The executors' runs in this process: X, A, D, then D again (A was reused), twice.
    assert (
        value(
            samples,
            "flowplatform_task_duration_seconds_count",
            task_type="transform",
            outcome="completed",
        )
        >= 6
    )


@pytest.mark.postgresql
def test_a_scrape_counts_every_organization_under_row_level_security(
    tenant, other_tenant, strict_rls, metrics_token, caplog
):
    run_and_correct(tenant)
    run_and_correct(other_tenant)
    with caplog.at_level(logging.INFO, logger="flowplatform.audit"):
        samples = scrape()
    corrections = "flowplatform_corrections_total"
    assert value(samples, corrections, operation="task_execution_update", source="api") == 2
    assert value(samples, "flowplatform_early_cutoff_reuses_total", task_type="python") == 2
    assert "row-level security bypassed by metrics scrape" in caplog.text


def test_a_reaped_attempt_is_counted(metrics_token, tenant):
    """The reaper records a lost worker as the attempt's error type (leases.WORKER_LOST)."""
    from executions import leases

    tenant.task_execution(status=TaskExecution.Status.FAILED, error={"type": leases.WORKER_LOST})
    tenant.task_execution(
        task_name="review", task_execution_idx=0, status=TaskExecution.Status.QUEUED
    )
    samples = scrape()
    assert value(samples, "flowplatform_task_attempts_reaped_total", task_type="transform") == 1
    assert value(samples, "flowplatform_task_attempts", task_type="human", status="queued") == 1


def test_webhook_deliveries_are_counted_by_state(metrics_token, tenant):
    from django.utils import timezone

    from flowplatform.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

    endpoint = WebhookEndpoint.objects.create(
        organization=tenant.org, url="http://127.0.0.1:9/hook", secret="s", events=[]
    )
    for state in ["succeeded", "succeeded", "failed"]:
        event = WebhookEvent.objects.create(
            organization=tenant.org, type="correction.applied", resource_id=tenant.org.id, body="{}"
        )
        WebhookDelivery.objects.create(
            organization=tenant.org,
            endpoint=endpoint,
            event=event,
            state=state,
            retry_until=timezone.now(),
        )
    samples = scrape()
    assert value(samples, "flowplatform_webhook_deliveries", state="succeeded") == 2
    assert value(samples, "flowplatform_webhook_deliveries", state="failed") == 1
    assert value(samples, "flowplatform_webhook_deliveries", state="pending") == 0


def test_a_scrape_makes_as_many_queries_for_many_attempts_as_for_few(metrics_token, tenant):
    flow_execution = tenant.flow_execution()

    def add_attempts(first: int, n: int) -> None:
        statuses = [TaskExecution.Status.COMPLETED, TaskExecution.Status.STALE]
        for idx in range(first, first + n):
            tenant.task_execution(flow_execution, task_execution_idx=idx, status=statuses[idx % 2])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            scrape()
        return len(captured)

    add_attempts(0, 2)
    scrape()  # the version's task types are read once per process
    few = queries()
    add_attempts(2, 40)
    assert queries() == few
    assert few <= 8


def test_request_latency_is_labelled_by_route_pattern(metrics_token, tenant):
    fe = tenant.flow_execution()
    path = f"/flow-executions/{fe.id}"
    assert tenant.client.get(path).status_code == 200
    samples = scrape()
    route = resolve(path).route
    assert (
        value(
            samples,
            "flowplatform_http_request_duration_seconds_count",
            route=route,
            method="GET",
            status="200",
        )
        >= 1
    )
    routes = {
        dict(labels)["route"]
        for name, labels in samples
        if name == "flowplatform_http_request_duration_seconds_count"
    }
    assert not any(str(fe.id) in r for r in routes), routes
