"""Property-based fuzzing of the whole API with schemathesis, against the app's own schema.

Every operation of /api/schema/ is called through WSGI (no network) with a real API key: real
requests that succeed (explicit examples below, and the first of them again with a key lacking
the operation's scope), schemathesis's coverage cases (boundaries, missing and wrongly typed
values, unsupported media types, no key) and generated positive and negative data. Each
answer is checked: no 5xx, a documented status code and content type, and a body and headers
that match the documented schema. Each operation runs against its own fresh
organization holding real rows (both example flows run, a correction made), and path ids and the
ids inside bodies often name those rows — or another organization's — so the fuzzer gets past
"not found". The run is deterministic (derandomized) and bounded per operation; the summary
from tests/helpers/fuzz_report.py shows what it covered. What it found is kept in
tests/test_fuzz_regressions.py.

The engine is fuzzed too (`test_random_looped_dags_…`): random DAGs of pure tasks, plain and
looped (for_each over an upstream list, until loops), through random sequences of corrections
of a task or of one iteration and of upgrades to a changed definition, each checked against a
from-scratch evaluation in pure Python (tests/helpers/fuzz_dags.py): published outputs,
current attempts, the freshness invariant (inputs and definitions), and that exactly what has
a changed input or definition runs again.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.db import connection
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from executions.corrections import upgrade_jobs
from executions.corrections.task_executions import correct_task_execution
from executions.models import Correction, FlowExecution, TaskExecution, UpgradeJob
from executions.services import start_flow_execution
from flowplatform.tenancy.models import Organization
from flowplatform.tenancy.services import create_api_key, create_organization
from flowplatform.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint
from flowplatform.webhooks.services import create_endpoint
from flows.models import Flow
from flows.services import create_flow, update_flow
from outputs.models import TaskOutput
from tests.helpers.corrections import PROPERTY
from tests.helpers.fuzz_dags import drive, looped_dags, steps
from tests.helpers.fuzz_report import FUZZ_STATS

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Generated cases per operation (on top of the explicit and coverage ones): enough to find
# what the schema and the code disagree on, few enough to keep the run short on 2 cores.
# FUZZ_MAX_EXAMPLES=300 FUZZ_SEED=7 explore further (a seed replaces the derandomized run).
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "25"))
SEED = os.environ.get("FUZZ_SEED")
# Random DAGs (at most 8 tasks, 5 items, 2 to 5 steps each) the engine property runs: each
# example runs a flow and its steps, corrections and upgrades (about 0.5 s on SQLite).
# FUZZ_DAG_EXAMPLES=200 explores further; FUZZ_SEED applies to it too.
DAG_EXAMPLES = int(os.environ.get("FUZZ_DAG_EXAMPLES", "30"))
HOOK_URL = "http://127.0.0.1:9/hooks"
FLOW_INPUTS = {
    "document-review": {"document": "Quarterly report " * 50},
    "word-stats": {"text": "the quick brown fox jumps over the lazy dog"},
}


@dataclass
class Rows:
    """One organization's rows, in a stable order (ids are random, positions are not)."""

    organization: Organization
    flows: list[Flow] = field(default_factory=list)
    flow_executions: list[FlowExecution] = field(default_factory=list)
    task_executions: list[TaskExecution] = field(default_factory=list)
    task_outputs: list[TaskOutput] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    upgrade_jobs: list[UpgradeJob] = field(default_factory=list)
    webhook_endpoints: list[WebhookEndpoint] = field(default_factory=list)

    def named(self) -> dict[str, Any]:
        """`flow:word-stats`, `run:word-stats`, `te:review`, `out:extract`, … (task names are
        unique across the two example flows)."""
        names: dict[str, Any] = {"org": self.organization, "correction": self.corrections[0]}
        if self.upgrade_jobs:
            names["job"] = self.upgrade_jobs[0]
        names["hook"] = self.webhook_endpoints[0]
        names["delivery"] = WebhookDelivery.objects.filter(endpoint=names["hook"]).first()
        for flow, run in zip(self.flows, self.flow_executions, strict=True):
            names[f"flow:{flow.name}"] = flow
            names[f"run:{flow.name}"] = run
        names.update({f"te:{te.task_name}": te for te in self.task_executions})
        names.update({f"out:{out.task_name}": out for out in self.task_outputs})
        return names


def populate(organization: Organization, flows: tuple[str, ...] = tuple(FLOW_INPUTS)) -> Rows:
    """The example flows and one run of each (document-review waits for its human review), and
    a correction of word-stats' first task, which makes its dependents stale."""
    rows = Rows(organization)
    # An endpoint for every event, on a port where nothing listens: its deliveries fail fast.
    rows.webhook_endpoints.append(
        create_endpoint(organization, url=HOOK_URL, events=EventType.values).endpoint
    )
    for name in flows:
        flow_input = FLOW_INPUTS[name]
        definition = (EXAMPLES / f"{name}.yaml").read_text()
        flow = create_flow(organization, name=name, definition=definition, actor="fuzz")
        rows.flows.append(flow)
        rows.flow_executions.append(
            start_flow_execution(organization, flow_id=flow.id, input=flow_input, actor="fuzz")
        )
    correct_task_execution(
        TaskExecution.objects.get(flow_execution=rows.flow_executions[-1], task_name="lengths"),
        changes={"status": "completed", "output": [3, 5, 5, 3, 5, 4, 3, 4, 3]},
        identity={},
        expected_updated_at=None,
        actor="fuzz",
        reason="fixture correction",
    )
    runs = [run.id for run in rows.flow_executions]
    in_order = ("flow_execution__created_at", "task_name", "created_at")
    rows.task_executions = list(
        TaskExecution.objects.filter(flow_execution_id__in=runs).order_by(*in_order)
    )
    rows.task_outputs = list(
        TaskOutput.objects.filter(flow_execution_id__in=runs).order_by(*in_order)
    )
    rows.corrections = list(Correction.objects.filter(flow_execution_id__in=runs))
    return rows


@dataclass
class World:
    keys: dict[str, str]  # the secret of a key with all scopes, with only `read`, only `write`
    mine: Rows
    foreign: Rows  # another organization's rows: answered exactly like missing ones
    names: dict[str, Any]


# The world of the running test, for the generation hook (hooks take no fixtures).
CURRENT: dict[str, World] = {}


@pytest.fixture
def world(transactional_db: None, settings: Any) -> Iterator[World]:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["127.0.0.1:9"]  # HOOK_URL's, and nothing else
    organization = create_organization("fuzz")
    keys = {
        scope: create_api_key(organization, name=scope, scopes=scopes).secret
        for scope, scopes in {"all": None, "read": ["read"], "write": ["write"]}.items()
    }
    mine = populate(organization)
    # A version 2 of word-stats (its `longest` bumped) for the upgrade's examples.
    definition = (EXAMPLES / "word-stats.yaml").read_text()
    bumped = definition.replace(
        "    type: transform\n", "    type: transform\n    version: '2'\n", 1
    )
    update_flow(mine.flows[1], actor="fuzz", definition=bumped)
    # A dry-run upgrade job of it (the executions stay on version 1), for the jobs' examples.
    mine.upgrade_jobs.append(
        upgrade_jobs.create_job(mine.flows[1], actor="fuzz", to_version=2, dry_run=True)
    )
    foreign = populate(create_organization("other"), flows=("word-stats",))
    CURRENT["world"] = World(keys, mine, foreign, mine.named())
    yield CURRENT["world"]
    CURRENT.clear()


# Explicit examples: requests that do something real, which random data rarely does. They are
# built before any row exists, so values "@NAME.ATTR" stand for that attribute of the named row
# (Rows.named) and `Authorization: @key:SCOPE` for the key with only that scope.
REF = re.compile(r"^@([a-z]+(?::[a-z-]+)?)\.([a-z_]+)$")


def _identity(task: str) -> dict[str, str]:
    """The identity fields a PUT of the task's attempt must repeat."""
    names = ("id", "flow_execution_id", "organization_id", "task_name", "task_execution_idx")
    return {name: f"@te:{task}.{name}" for name in names}


def _at(ref: str, **example: Any) -> dict[str, Any]:
    return {"path_parameters": {"id": f"@{ref}.id"}, **example}


# Operations that need no key (the lacking-scope example makes no sense for them).
PUBLIC = {"GET /healthz", "GET /readyz"}

EXPLICIT = {
    "GET /healthz": [{}],
    "GET /readyz": [{}],
    "GET /flows": [{"query": {"ordering": "-name", "limit": 1, "name": "word-stats"}}],
    "POST /flows": [
        {"body": {"name": "fuzz-new", "definition": (EXAMPLES / "word-stats.yaml").read_text()}}
    ],
    "GET /flows/{id}": [_at("flow:document-review")],
    "PUT /flows/{id}": [
        _at(
            "flow:word-stats",
            body={"name": "renamed", "definition": (EXAMPLES / "word-stats.yaml").read_text()},
        )
    ],
    "PATCH /flows/{id}": [_at("flow:word-stats", body={"description": "counts words"})],
    "DELETE /flows/{id}": [_at("flow:word-stats")],
    "GET /flows/{id}/versions": [_at("flow:word-stats")],
    "GET /flow-executions": [{"query": {"status": "in_progress,stale", "ordering": "-status"}}],
    "POST /flow-executions": [
        {"body": {"flow_id": "@flow:word-stats.id", "input": {"text": "a bb ccc"}}}
    ],
    "GET /flow-executions/{id}": [_at("run:document-review")],
    "DELETE /flow-executions/{id}": [_at("run:document-review")],
    "POST /flow-executions/{id}/upgrade": [
        _at("run:word-stats", query={"dry_run": "true"}, body={"flow_version": 2}),
        _at("run:word-stats", query={"execute_flow": "true"}, body={"reason": "new longest"}),
    ],
    "POST /flows/{id}/upgrade-executions": [
        _at("flow:word-stats", query={"dry_run": "true"}, body={"from_version": 1}),
        _at(
            "flow:word-stats",
            query={"execute_flow": "true"},
            body={"to_version": 2, "status": ["completed", "stale"], "reason": "new longest"},
        ),
    ],
    "GET /upgrade-jobs": [{"query": {"flow_id": "@flow:word-stats.id", "status": "completed"}}],
    "GET /upgrade-jobs/{id}": [_at("job")],
    "GET /upgrade-jobs/{id}/executions": [_at("job", query={"limit": 1})],
    "POST /flow-executions/{id}/execute": [
        _at("run:word-stats", query={"only": "stale"}),
        _at("run:word-stats", query={"task": "total"}),
        _at("run:document-review"),
    ],
    "GET /task-executions": [
        {"query": {"flow_execution_id": "@run:word-stats.id", "ordering": "-task_name"}}
    ],
    "POST /task-executions": [
        {
            "body": {
                "flow_execution_id": "@run:document-review.id",
                "organization_id": "@org.id",
                "task_name": "review",
                "status": "running",
            }
        }
    ],
    "GET /task-executions/{id}": [_at("te:total")],
    "PUT /task-executions/{id}": [
        _at(
            "te:review",
            query={"dry_run": "true", "execute_flow": "true"},
            body={**_identity("review"), "status": "completed", "output": {"approved": True}},
        ),
        _at(
            "te:review",
            body={**_identity("review"), "status": "completed", "output": {"approved": True}},
            headers={"X-Correction-Reason": "looks right"},
        ),
    ],
    "PATCH /task-executions/{id}": [
        _at(
            "te:extract",
            query={"execute_flow": "true"},
            body={"status": "completed", "output": {"pages": 2, "title": "Quarterly"}},
        )
    ],
    "DELETE /task-executions/{id}": [_at("te:review")],
    "GET /task-outputs": [{"query": {"status": "completed,stale", "flow_version": 1}}],
    "POST /task-outputs": [
        {
            "body": {
                "flow_execution_id": "@run:word-stats.id",
                "organization_id": "@org.id",
                "task_name": "longest",
                "output": 9,
                "summary": {"longest": 9},
                "status": "completed",
                "reason": "counted by hand",
            }
        }
    ],
    "GET /task-outputs/{id}": [_at("out:extract")],
    "PUT /task-outputs/{id}": [
        _at(
            "out:extract",
            body={
                "id": "@out:extract.id",
                "flow_execution_id": "@out:extract.flow_execution_id",
                "organization_id": "@org.id",
                "task_name": "extract",
                "status": "completed",
                "summary": {"pages": 1},
                "output": {"pages": 1, "title": "Quarterly"},
            },
        )
    ],
    "PATCH /task-outputs/{id}": [_at("out:total", body={"tags": ["checked"]})],
    "DELETE /task-outputs/{id}": [_at("out:total", headers={"X-Correction-Reason": "wrong"})],
    "GET /corrections": [{"query": {"flow_execution_id": "@run:word-stats.id"}}],
    "GET /corrections/{id}": [_at("correction")],
    "GET /webhook-endpoints": [{"query": {"limit": 1, "offset": 0}}],
    "POST /webhook-endpoints": [
        {"body": {"url": HOOK_URL, "events": ["correction.applied"], "description": "new"}},
        {"body": {"url": "http://evil.example/", "events": ["nope"]}},
    ],
    "GET /webhook-endpoints/{id}": [_at("hook")],
    "PUT /webhook-endpoints/{id}": [
        _at("hook", body={"url": HOOK_URL, "events": ["flow_execution.settled"], "enabled": False})
    ],
    "PATCH /webhook-endpoints/{id}": [_at("hook", body={"events": ["upgrade_job.finished"]})],
    "DELETE /webhook-endpoints/{id}": [_at("hook")],
    "GET /webhook-endpoints/{id}/deliveries": [_at("hook", query={"limit": 2})],
    "POST /webhook-endpoints/{id}/deliveries/{delivery_id}/send-again": [
        {"path_parameters": {"id": "@hook.id", "delivery_id": "@delivery.id"}}
    ],
}


def _resolve(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: _resolve(item, names) for key, item in value.items()}
    match = REF.match(value) if isinstance(value, str) else None
    if match is None:
        return value
    resolved = getattr(names[match[1]], match[2])
    return resolved if isinstance(resolved, int) else str(resolved)


def _with_real(values: Any, real: dict[str, Any]) -> Any:
    """`values` (a body or a query) with the entries named in `real` replaced by real ids."""
    if not isinstance(values, dict):
        return values
    wire = {name: value if isinstance(value, int) else str(value) for name, value in real.items()}
    return {**values, **{name: wire[name] for name in values.keys() & wire.keys()}}


def _aimed_at(case: Any, world: World, row: Any | None) -> Any:
    """The case with its path id naming `row` and the identity fields of its body matching
    it; without a row, the ids its body and query refer to (flow_id, flow_execution_id, …)
    name real rows of the caller's organization."""
    aimed = case.derive(keep_auth=True)
    if row is not None:
        aimed.path_parameters = {**case.path_parameters, "id": str(row.id)}
        identity = ("id", "organization_id", "flow_execution_id", "task_name", "task_execution_idx")
        real = {name: getattr(row, name) for name in identity if hasattr(row, name)}
    else:
        run = world.mine.flow_executions[1]  # word-stats: corrected, with stale tasks
        correction = world.mine.corrections[0]
        real = {
            "flow_id": run.flow_id,
            "flow_execution_id": run.id,
            "organization_id": run.organization_id,
            "task_name": "total",
            "task_execution_id": correction.task_execution_id,
            "stale_correction_id": correction.id,
        }
        aimed.query = _with_real(case.query, real)
    if isinstance(case.body, dict):
        body = _with_real(case.body, real)
        body.pop("updated_at", None)  # a made-up optimistic lock would always be a 409
        aimed.body = body
    return aimed


def _aimed_at_real_rows(case: Any) -> st.SearchStrategy:
    world = CURRENT["world"]
    if "{id}" not in case.path:
        return st.just(None).map(lambda _: _aimed_at(case, world, None))
    resource = case.path.split("/")[1].replace("-", "_")  # /task-outputs/{id}: task_outputs
    rows = [*getattr(world.mine, resource), *getattr(world.foreign, resource)[:1]]
    return st.sampled_from(rows).map(lambda row: _aimed_at(case, world, row))


SCHEMA = schemathesis.openapi.from_wsgi(
    "/api/schema/",
    get_wsgi_application(),
    config=schemathesis.Config.from_dict(
        {
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": SEED is None,
                "database": "none",
            },
            **({"seed": int(SEED)} if SEED is not None else {}),
        }
    ),
)


@SCHEMA.hook
def flatmap_case(context: Any, case: Any) -> Any:
    """Half of the generated cases are aimed at real rows (see _aimed_at)."""
    return st.one_of(st.just(case), _aimed_at_real_rows(case))


@SCHEMA.hook
def before_add_examples(context: Any, examples: list[Any]) -> None:
    """The explicit examples, and the first of them again with a key that lacks the scope the
    operation needs (`read` for GET, `write` for the rest)."""
    operation = context.operation
    explicit = EXPLICIT.get(operation.label, [])
    lacking = "@key:write" if operation.method.upper() == "GET" else "@key:read"
    scoped = (
        []
        if operation.label in PUBLIC
        else [{**explicit[0], "headers": {"Authorization": lacking}}]
    )
    for example in [*explicit, *scoped]:
        media_type = "application/json" if "body" in example else None
        examples.append(operation.Case(media_type=media_type, **example))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each operation's test is also parametrized by the database backend, which gives every
    operation its own node id: pytest 9.2 builds ids from `originalname`, the bare test name
    for schemathesis 4.32's per-operation items, so they would otherwise all share one."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", [connection.vendor])


@SCHEMA.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # one world per operation
def test_api_conforms_to_its_schema(case: Any, world: World, backend: str) -> None:
    started = time.monotonic()
    for container in ("path_parameters", "query", "body"):
        value = getattr(case, container)
        resolved = _resolve(value, world.names)
        if resolved != value:
            setattr(case, container, resolved)
    key = (case.headers or {}).get("Authorization", "")
    secret = world.keys[key.removeprefix("@key:") if key.startswith("@key:") else "all"]
    response = case.call(headers={"Authorization": f"Bearer {secret}"})
    label = case.operation.label
    FUZZ_STATS.record_call(label, response.status_code)
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        FUZZ_STATS.record_failures(label, [failure.title for failure in group.exceptions])
        raise
    finally:
        FUZZ_STATS.seconds += time.monotonic() - started


# The engine: random DAGs with loops and random corrections, against a from-scratch evaluation.


def _dag_settings(test: Any) -> Any:
    tuned = settings(PROPERTY, max_examples=DAG_EXAMPLES, derandomize=SEED is None)
    return tuned(test) if SEED is None else seed(int(SEED))(tuned(test))


@_dag_settings
@given(tasks=looped_dags(), plan=steps)
def test_random_looped_dags_match_a_from_scratch_evaluation_after_any_corrections(
    tenant: Any, tasks: list, plan: list
) -> None:
    """After the first run and after each correction or upgrade to a changed definition (with
    execute_flow, or without it and then ?only=stale): the flow completed, each task's
    published output and each current attempt is what evaluating the definition in force from
    scratch over the corrections gives, the freshness invariant holds (inputs and
    definitions), and exactly the tasks and iterations whose own input or definition changed
    ran again (tests/helpers/fuzz_dags.py)."""
    drive(tenant, tasks, plan)
