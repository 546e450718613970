"""Database faults: an outage answers 503 in the standard shape, and the product recovers alone.

The end-to-end test runs the product as production does (gunicorn, two worker processes,
DEBUG off, the application's role) with DATABASE_URL pointing at a TCP proxy to PostgreSQL that
the test controls: cutting it drops every connection and refuses new ones; restoring it accepts
again. The server is never restarted. The in-process tests reach the paths an outage takes
but a proxy cannot time (a failure at commit, while releasing an Idempotency-Key, in a
middleware) by making the database layer raise where the real failure would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.test import Client

from executions.models import Correction, FlowExecution, TaskExecution
from executions.services import start_flow_execution
from flowplatform.tenancy.models import IdempotencyKey
from flows.services import create_flow
from tests.helpers.corrections import correction
from tests.helpers.database import app_database_url, database_address, snapshot_tenant_tables
from tests.helpers.flows import start_extract_chain
from tests.helpers.proxy import DatabaseProxy, through_proxy

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2

CHAIN = """\
name: chain
tasks:
  - name: extract
    type: transform
    input: {pages: "${{ flow.input.pages }}"}
  - name: count
    type: transform
    input: {pages: "${{ tasks.extract.output.pages }}"}
"""

SERVICE_UNAVAILABLE = {
    "code": "service_unavailable",
    "message": "The database is unavailable; try again shortly.",
    "details": {},
}
NOT_READY = {
    "code": "not_ready",
    "message": "The database is unreachable.",
    "details": {"database": "unreachable"},
}


# The server -----------------------------------------------------------------------------------


@contextlib.contextmanager
def gunicorn(database_url: str, log: Path) -> Iterator[int]:
    """The product as production runs it; yields the port it listens on."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,  # the test's admin session must be valid there
        "ALLOWED_HOSTS": "127.0.0.1",
        "TASKS_BACKEND": "immediate",
        "LOG_LEVEL": "warning",
    }
    command = [
        sys.executable, "-m", "gunicorn", "flowplatform.wsgi", "--bind", "127.0.0.1:0",
        "--workers", str(WORKERS), "--timeout", "60", "--graceful-timeout", "5",
    ]  # fmt: skip
    with log.open("w") as output:
        server = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        port = _wait_for_port(server, log)
        yield port
    except BaseException:
        sys.stderr.write(f"gunicorn's log:\n{log.read_text()[-5000:]}\n")  # shown on failure
        raise
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_for_port(server: subprocess.Popen, log: Path) -> int:
    """The port gunicorn bound, once every worker has booted."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text()
        match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
        if match and text.count("Booting worker") >= WORKERS:
            return int(match.group(1))
        if server.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")


class Http:
    """Requests to the server with http.client, one connection each."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        sent = {"X-Request-ID": f"req-{uuid.uuid4().hex[:12]}", **(headers or {})}
        if auth:
            sent["Authorization"] = f"Bearer {self.key}"
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            client.request(method, path, body=payload, headers=sent)
            response = client.getresponse()
            data = response.read()
            received = {name.lower(): value for name, value in response.getheaders()}
        finally:
            client.close()
        received["x-sent-request-id"] = sent["X-Request-ID"]
        return response.status, received, data


# Assertions -----------------------------------------------------------------------------------


def assert_error(status: int, headers: dict[str, str], data: bytes, code: int, error: dict) -> None:
    """Exactly the standard error shape, with the request's id, and nothing else."""
    text = data.decode()
    assert status == code, text[:2000]
    assert headers["content-type"] == "application/json", text[:2000]
    assert json.loads(text) == {"error": error, "request_id": headers["x-sent-request-id"]}
    assert headers["x-request-id"] == headers["x-sent-request-id"]
    for leak in ("Traceback", "<html", "psycopg", "OperationalError", "5432"):
        assert leak not in text


def assert_unavailable(response: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, data = response
    assert_error(status, headers, data, 503, SERVICE_UNAVAILABLE)
    assert headers["retry-after"] == "5"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


# The end-to-end test --------------------------------------------------------------------------


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_outage_answers_503_and_the_running_server_recovers_by_itself(tenant, tmp_path):
    flow = create_flow(tenant.org, name="chain", definition=CHAIN, actor="test")
    flow_execution = start_flow_execution(
        tenant.org, flow_id=flow.id, input={"pages": 1}, actor="test"
    )
    assert flow_execution.status == FlowExecution.Status.COMPLETED
    extract = TaskExecution.objects.get(flow_execution=flow_execution, task_name="extract")
    admin_user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    admin_session = Client()
    admin_session.force_login(admin_user)

    proxy = DatabaseProxy(database_address())
    try:
        with gunicorn(
            through_proxy(app_database_url(), proxy.port), tmp_path / "server.log"
        ) as port:
            api = Http(port, tenant.secret)
            admin = Http(port, "")
            name = settings.SESSION_COOKIE_NAME
            admin.cookies[name] = admin_session.cookies[name].value

            def correction_request(pages: int) -> tuple[str, str, dict]:
                identity = {
                    "id": str(extract.pk),
                    "flow_execution_id": str(flow_execution.pk),
                    "organization_id": str(tenant.org.pk),
                    "task_name": "extract",
                    "task_execution_idx": 0,
                }
                return (
                    "PUT",
                    f"/task-executions/{extract.pk}?execute_flow=true",
                    {**identity, "status": "completed", "output": {"pages": pages}},
                )

            def client_requests(pages: int, key: str) -> list[tuple[str, str, Any, dict]]:
                """Every kind of request a client makes: lists, details, a correction, a
                start with an Idempotency-Key, a re-execution."""
                method, path, body = correction_request(pages)
                return [
                    ("GET", "/flow-executions", None, {}),
                    ("GET", f"/flow-executions/{flow_execution.pk}", None, {}),
                    ("GET", f"/task-executions?flow_execution_id={flow_execution.pk}", None, {}),
                    ("GET", f"/task-executions/{extract.pk}", None, {}),
                    ("GET", "/flows", None, {}),
                    ("GET", "/corrections", None, {}),
                    (method, path, body, {}),
                    (
                        "POST",
                        "/flow-executions",
                        {"flow_id": str(flow.pk), "input": {"pages": pages}},
                        {"Idempotency-Key": key},
                    ),
                    ("POST", f"/flow-executions/{flow_execution.pk}/execute?task=count", None, {}),
                ]

            def warm_every_worker() -> None:
                """Until each worker holds a pooled connection (CONN_MAX_AGE), read."""

                def read() -> bool:
                    status, _, data = api.request("GET", "/flow-executions")
                    assert status == 200, data[:2000]
                    return proxy.live >= WORKERS

                wait_until(read, f"all {WORKERS} workers hold a database connection")

            # 1. A blip while the workers are idle: their pooled connections are dead when the
            # next requests come; each worker must notice and reconnect, not answer a 503.
            warm_every_worker()
            proxy.cut()
            proxy.restore()
            for method, path, body, headers in client_requests(2, str(uuid.uuid4())):
                status, _, data = api.request(method, path, body, headers)
                assert status in (200, 201, 202), (method, path, data[:2000])
            status, _, data = admin.request("GET", "/admin/", auth=False)
            assert status == 200, data[:2000]
            warm_every_worker()  # every request until each worker reconnected succeeds too

            # 2. An outage: every request is a 503 in the standard shape, readiness says not
            # ready, liveness still ok.
            proxy.cut()
            key = str(uuid.uuid4())
            for method, path, body, headers in client_requests(3, key):
                assert_unavailable(api.request(method, path, body, headers))
            assert_unavailable(
                Http(port, "fp_00000000_not-a-real-key").request("GET", "/flow-executions")
            )
            assert_unavailable(admin.request("GET", "/admin/", auth=False))
            assert_unavailable(
                admin.request(
                    "GET",
                    f"/admin/executions/flowexecution/{flow_execution.pk}/change/",
                    auth=False,
                )
            )
            status, headers, data = api.request("GET", "/readyz", auth=False)
            assert_error(status, headers, data, 503, NOT_READY)
            status, _, data = api.request("GET", "/healthz", auth=False)
            assert (status, json.loads(data)) == (200, {"status": "ok"})

            # 3. The database is back: the same server answers everything again.
            proxy.restore()
            status, _, data = api.request("GET", "/readyz", auth=False)
            assert (status, json.loads(data)) == (200, {"status": "ready", "database": "ok"})
            for method, path, body, headers in client_requests(3, key):
                status, response_headers, data = api.request(method, path, body, headers)
                assert status in (200, 201, 202), (method, path, data[:2000])
                assert "idempotent-replayed" not in response_headers  # the 503 was not kept
            status, _, data = admin.request("GET", "/admin/", auth=False)
            assert status == 200, data[:2000]
            warm_every_worker()
    finally:
        proxy.stop()

    # The outage changed nothing: the corrections are the two made while the database was up,
    # and the start sent during the outage and retried with its key ran once.
    corrections = Correction.objects.filter(flow_execution=flow_execution).order_by("created_at")
    assert [c.after["output"] for c in corrections] == [{"pages": 2}, {"pages": 3}]
    started = FlowExecution.objects.filter(flow=flow).exclude(pk=flow_execution.pk)
    assert sorted(fe.input["pages"] for fe in started) == [2, 3]
    assert IdempotencyKey.objects.filter(key=key).count() == 1


# In-process: the failures a proxy cannot time --------------------------------------------------

GONE = "server closed the connection unexpectedly"


def gone(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError(GONE)


def gone_recorded(fired: list[str], name: str) -> Callable[..., Any]:
    """`gone`, recording `name` in `fired` first, so a test can check the failure happened."""

    def gone_here(*args: Any, **kwargs: Any) -> Any:
        fired.append(name)
        return gone(*args, **kwargs)

    return gone_here


def assert_unavailable_response(response: Any) -> None:
    """A Django test client's answer: exactly the 503 shape, with Retry-After."""
    text = response.content.decode()
    assert response.status_code == 503, text[:2000]
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "5"
    assert response.json() == {"error": SERVICE_UNAVAILABLE, "request_id": response["X-Request-ID"]}
    assert GONE not in text
    assert "Traceback" not in text


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_a_database_failure_in_a_middleware_is_a_503_never_a_debug_page(
    settings, monkeypatch, debug
):
    """The admin's session is read by a middleware, outside any view: Django would answer its
    own 500 page there (a traceback with DEBUG on)."""
    settings.DEBUG = debug
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    browser = Client(raise_request_exception=False)
    browser.force_login(user)
    fired: list[str] = []
    monkeypatch.setattr(
        "django.contrib.sessions.backends.db.SessionStore._get_session_from_db",
        gone_recorded(fired, "_get_session_from_db"),
    )

    response = browser.get("/admin/", HTTP_X_REQUEST_ID="admin-outage")

    assert fired, "the injected failure did not happen"
    assert_unavailable_response(response)
    assert response.json()["request_id"] == "admin-outage"


def fail_on_commit(monkeypatch: pytest.MonkeyPatch, *, landed: bool) -> list[str]:
    """The commit that ends the correction's request fails: before it reached the database
    (`landed` False), or after the database committed (its acknowledgement was lost)."""
    from executions.corrections import task_executions

    real_correct, real_commit = task_executions.correct_task_execution, connection._commit
    armed: list[str] = []
    fired: list[str] = []

    def correct(*args: Any, **kwargs: Any) -> Any:
        result = real_correct(*args, **kwargs)
        armed.append("commit")
        return result

    def commit() -> None:
        if not armed or fired:
            return real_commit()
        fired.append("commit")
        if landed:
            real_commit()
        raise OperationalError(GONE)

    monkeypatch.setattr(task_executions, "correct_task_execution", correct)
    monkeypatch.setattr(connection, "_commit", commit)
    return fired


# stage → the injected failures that must happen at it.
STAGE_FAULTS = {
    "authentication": {"authenticate_key"},
    "idempotency claim": {"claim_key"},
    "handler": {"correct_task_execution"},
    "commit": {"commit"},
    "handler and key release": {"correct_task_execution", "release_key"},
}


def fail_in(monkeypatch: pytest.MonkeyPatch, stage: str) -> list[str]:
    """The database goes away at `stage` of a PUT with an Idempotency-Key. Returns a list that
    records each injected failure as it happens."""
    from executions.corrections import task_executions
    from flowplatform import idempotency
    from flowplatform.tenancy import authentication

    fired: list[str] = []
    if stage == "authentication":
        # defined in flowplatform.tenancy.services; authentication imported the name and
        # looks it up in its own namespace, so that is where the replacement must go
        monkeypatch.setattr(
            authentication, "authenticate_key", gone_recorded(fired, "authenticate_key")
        )
    elif stage == "idempotency claim":
        monkeypatch.setattr(idempotency, "claim_key", gone_recorded(fired, "claim_key"))
    elif stage in ("handler", "handler and key release"):
        real = task_executions.correct_task_execution

        def correct_then_lose_the_connection(*args: Any, **kwargs: Any) -> Any:
            real(*args, **kwargs)
            fired.append("correct_task_execution")
            raise OperationalError(GONE)

        monkeypatch.setattr(
            task_executions, "correct_task_execution", correct_then_lose_the_connection
        )
        if stage == "handler and key release":
            monkeypatch.setattr(idempotency, "release_key", gone_recorded(fired, "release_key"))
    elif stage == "commit":
        return fail_on_commit(monkeypatch, landed=False)
    return fired


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "stage",
    ["authentication", "idempotency claim", "handler", "commit", "handler and key release"],
)
def test_a_database_failure_at_any_stage_of_a_write_is_a_503_that_writes_nothing(
    tenant, monkeypatch, settings, stage
):

    settings.IDEMPOTENCY_WAIT_SECONDS = 0
    flow_execution = start_extract_chain(tenant)
    send = correction(tenant, flow_execution, execute_flow=True)
    before = snapshot_tenant_tables()
    fired = fail_in(monkeypatch, stage)

    assert_unavailable_response(send())
    assert set(fired) == STAGE_FAULTS[stage], "the injected failure did not happen"

    after = snapshot_tenant_tables()
    keys = after.pop("tenancy_idempotencykey")
    assert before.pop("tenancy_idempotencykey") == []
    assert after == before, "the failed request left partial state"
    monkeypatch.undo()
    retried = send()
    if stage == "handler and key release":
        # The key could not be released while the database was away: it stays claimed, as
        # for a process that died mid-request, and a retry with it is told so.
        assert [k["state"] for k in keys] == [IdempotencyKey.State.IN_PROGRESS]
        assert retried.status_code == 409
        assert retried.json()["error"]["code"] == "idempotency_key_in_progress"
        assert not Correction.objects.exists()
    elif stage != "commit":  # after a failed commit the outcome is unknown: see below
        assert keys == []
        assert retried.status_code == 200, retried.content[:2000]
        assert Correction.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_retry_after_a_commit_whose_answer_was_lost_does_not_do_the_work_twice(
    tenant, monkeypatch, settings
):

    settings.IDEMPOTENCY_WAIT_SECONDS = 0
    flow_execution = start_extract_chain(tenant)
    send = correction(tenant, flow_execution, execute_flow=True, locked=False)
    fired = fail_on_commit(monkeypatch, landed=True)

    assert_unavailable_response(send())
    assert fired
    assert Correction.objects.count() == 1  # the commit did land
    retried = send()

    assert Correction.objects.count() == 1, "the retry did the correction a second time"
    assert retried.status_code in (200, 409)


@pytest.mark.django_db(transaction=True)
def test_a_failure_to_store_the_answer_after_the_commit_still_answers_the_committed_work(
    tenant, monkeypatch
):
    from flowplatform import idempotency

    flow_execution = start_extract_chain(tenant)
    send = correction(tenant, flow_execution, execute_flow=True)
    fired: list[str] = []
    monkeypatch.setattr(idempotency, "settle_key", gone_recorded(fired, "settle_key"))

    response = send()

    assert fired, "the injected failure did not happen"
    assert Correction.objects.count() == 1  # the work committed
    assert response.status_code == 200, response.content[:2000]
