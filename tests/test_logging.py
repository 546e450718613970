"""Logs: today's text lines by default; with LOG_FORMAT=json one JSON object per line carrying
the request id, the organization and the correction id (flowplatform.logcontext)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from pythonjsonlogger.json import JsonFormatter

from executions.models import Correction, TaskExecution
from flowplatform.logcontext import LogContextFilter
from flowplatform.middleware import RequestIdLogFilter
from tests.helpers.callables import allow_test_callables  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parent.parent

# X; then L, a python task that logs a line as it runs (tests.helpers.callables:logs_a_line).
DEFINITION = json.dumps(
    {
        "tasks": [
            {"name": "X", "type": "transform", "input": {"flow": "${{ flow.input }}"}},
            {
                "name": "L",
                "type": "python",
                "config": {"callable": "tests.helpers.callables:logs_a_line"},
                "input": {"x": "${{ tasks.X.output }}"},
            },
        ]
    }
)


def start(code: str, **env: str) -> subprocess.CompletedProcess:
    """Set Django up in a fresh interpreter, as a process start-up does, and run `code`."""
    clean = {k: v for k, v in os.environ.items() if k not in {"LOG_FORMAT", "LOG_LEVEL"}}
    clean["FLOWPLATFORM_VAR_DIR"] = "/tmp/flowplatform-logging-test"
    setup = (
        "import django, logging, os; "
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'flowplatform.settings'); "
        "django.setup(); "
    )
    return subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", setup + code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )


LOG_A_LINE = "logging.getLogger('flowplatform.test').warning('hello %s', 'there')"


def test_logs_are_text_lines_by_default():
    result = start(LOG_A_LINE)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.endswith(" WARNING [-] flowplatform.test: hello there")


def test_log_format_json_writes_one_json_object_per_line():
    result = start(LOG_A_LINE, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert record["message"] == "hello there"
    assert record["level"] == "WARNING"
    assert record["logger"] == "flowplatform.test"
    assert record["request_id"] == "-"
    assert record["organization_id"] is None
    assert record["correction_id"] is None
    assert record["time"].startswith("20")


def test_an_unknown_log_format_stops_start_up_naming_the_variable():
    result = start("", LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT" in result.stderr


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger also writes JSON lines, as LOG_FORMAT=json configures them, here."""
    options = dict(settings.LOGGING["formatters"]["json"])
    options.pop("()")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(**options))
    handler.addFilter(RequestIdLogFilter())
    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def lines_of(stream: io.StringIO, message: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [record for record in records if record["message"] == message]


@pytest.mark.django_db(transaction=True)
def test_a_job_started_by_a_correction_logs_request_organization_and_correction(tenant, json_lines):
    flow = tenant.client.post("/flows", {"name": "f", "definition": DEFINITION}, format="json")
    assert flow.status_code == 201, flow.json()
    started = tenant.client.post(
        "/flow-executions",
        {"flow_id": flow.json()["id"], "input": 1},
        format="json",
        HTTP_X_REQUEST_ID="start-1",
    )
    assert started.status_code == 201, started.json()
    (first,) = lines_of(json_lines, "logs_a_line ran")
    assert first["request_id"] == "start-1"
    assert first["organization_id"] == str(tenant.org.id)
    assert first["correction_id"] is None

    x = TaskExecution.objects.get(flow_execution_id=started.json()["id"], task_name="X")
    body = tenant.client.get(f"/task-executions/{x.id}").json()
    body.update(output={"corrected": True}, status="completed")
    response = tenant.client.put(
        f"/task-executions/{x.id}?execute_flow=true",
        body,
        format="json",
        HTTP_X_REQUEST_ID="correct-1",
    )
    assert response.status_code == 200, response.json()
    correction = Correction.objects.get(task_execution_id=x.id)
    _, rerun = lines_of(json_lines, "logs_a_line ran")
    assert rerun["request_id"] == "correct-1"
    assert rerun["organization_id"] == str(tenant.org.id)
    assert rerun["correction_id"] == str(correction.id)


@pytest.mark.django_db(transaction=True)
def test_log_fields_end_with_their_request(tenant, json_lines):
    """Nothing a request bound (its organization) is on the next request's lines."""
    assert tenant.client.get("/flows").status_code == 200
    logging.getLogger("flowplatform.test").warning("after the request")
    (line,) = lines_of(json_lines, "after the request")
    assert line["request_id"] == "-"
    assert line["organization_id"] is None
