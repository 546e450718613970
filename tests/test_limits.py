"""Limits and hostile input: each answers in the one error shape with its documented status,
names what was wrong (`loc`), and writes nothing. README "Limits" lists them."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
import yaml
from django.core.exceptions import RequestDataTooBig
from rest_framework.test import APIClient

from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.api.parsers import LimitedJSONParser
from flowplatform.jsonlimits import nesting_depth
from flowplatform.tenancy.models import IdempotencyKey
from flows.models import Flow, FlowVersion
from outputs.models import TaskOutput
from tests.helpers.contract import assert_error, problems
from tests.helpers.tenants import DEFINITION, Tenant

pytestmark = pytest.mark.django_db

LISTS = ["/flows", "/flow-executions", "/task-executions", "/task-outputs", "/corrections"]


@pytest.fixture
def rows(tenant: Tenant) -> dict[str, Any]:
    flow = tenant.flow()
    fe = tenant.flow_execution(flow)
    te = tenant.task_execution(fe, output={"pages": 1})
    output = tenant.task_output(fe, status="completed")
    return {"flow": flow, "fe": fe, "te": te, "output": output, "org": str(tenant.org.id)}


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row the API can write, as stored."""
    models = [Flow, FlowVersion, FlowExecution, TaskExecution, TaskOutput, Correction]
    return {
        model.__name__: sorted(model.objects.values(), key=lambda row: str(row["id"]))
        for model in [*models, IdempotencyKey]
    }


def output_body(rows: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "flow_execution_id": str(rows["fe"].id),
        "organization_id": rows["org"],
        "task_name": "extract",
        "summary": {"pages": 1},
        **fields,
    }


# Writes that take a body, each valid apart from what a test puts into `pad`.
def writes(rows: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    te, output = rows["te"], rows["output"]
    return {
        "POST /flows": ("post", "/flows", {"name": "f", "definition": DEFINITION}),
        "PATCH /flows/{id}": ("patch", f"/flows/{rows['flow'].id}", {"description": "d"}),
        "POST /flow-executions": ("post", "/flow-executions", {"flow_id": str(rows["flow"].id)}),
        "POST /task-outputs": ("post", "/task-outputs", output_body(rows)),
        "PATCH /task-outputs/{id}": ("patch", f"/task-outputs/{output.id}", {"output": None}),
        "PATCH /task-executions/{id}": ("patch", f"/task-executions/{te.id}", {"output": 1}),
    }


WRITES = [
    "POST /flows",
    "PATCH /flows/{id}",
    "POST /flow-executions",
    "POST /task-outputs",
    "PATCH /task-outputs/{id}",
    "PATCH /task-executions/{id}",
]
# Where each write above accepts an arbitrary JSON value, to make a body big or deep.
PAD_FIELD = {
    "POST /flows": "description",
    "PATCH /flows/{id}": "description",
    "POST /flow-executions": "input",
    "POST /task-outputs": "output",
    "PATCH /task-outputs/{id}": "output",
    "PATCH /task-executions/{id}": "output",
}


def send_raw(client: APIClient, method: str, path: str, body: bytes | str, **extra: Any):  # type: ignore[no-untyped-def]
    return getattr(client, method)(path, data=body, content_type="application/json", **extra)


# --- request body size: MAX_REQUEST_BODY_BYTES → 413 ----------------------------------------


@pytest.mark.parametrize("write", WRITES)
def test_a_body_over_the_size_limit_is_a_413_and_writes_nothing(
    tenant: Tenant, rows: dict[str, Any], settings: Any, write: str
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    method, path, body = writes(rows)[write]
    body[PAD_FIELD[write]] = "x" * 10_000
    before = snapshot()

    response = send_raw(
        tenant.client, method, path, json.dumps(body), HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )

    assert_error(response, 413, "payload_too_large")
    assert snapshot() == before


def test_a_body_of_exactly_the_size_limit_is_accepted(
    tenant: Tenant, rows: dict[str, Any], settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = output_body(rows, output="")
    padding = 10_000 - len(json.dumps(body))
    text = json.dumps(output_body(rows, output="x" * padding))
    assert len(text.encode()) == 10_000

    response = send_raw(tenant.client, "post", "/task-outputs", text)

    assert response.status_code == 201, response.content


class TrackingStream(io.BytesIO):
    """A request body that remembers whether anybody read it."""

    read_calls = 0

    def read(self, *args: Any) -> bytes:
        self.read_calls += 1
        return super().read(*args)


def test_a_chunked_body_without_content_length_is_a_411_and_is_never_read(
    tenant: Tenant, rows: dict[str, Any]
) -> None:
    """DRF (and Django under WSGI) read no body without Content-Length: acting on an empty body
    instead would be a surprise, so such a request is refused before anything reads it."""
    stream = TrackingStream(b"x" * 5_000_000)
    before = snapshot()

    response = tenant.client.generic(
        "POST",
        "/task-outputs",
        json.dumps(output_body(rows)),
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": stream},
    )

    assert_error(response, 411, "length_required")
    assert stream.read_calls == 0
    assert snapshot() == before


def test_the_parser_reads_no_more_than_the_limit_from_any_stream(settings: Any) -> None:
    """Whatever Content-Length claimed, at most limit + 1 bytes are taken from the stream."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    stream = io.BytesIO(b'{"a": "' + b"x" * 50_000 + b'"}')

    with pytest.raises(RequestDataTooBig):
        LimitedJSONParser().parse(stream, "application/json", {})

    assert stream.tell() == 1_001


# --- JSON nesting depth: MAX_JSON_DEPTH → 422 at ["body"] --------------------------------------


def assert_too_deep(response: Any, depth: int = 64) -> None:
    body = assert_error(response, 422, "validation_error")
    assert body["detail"] == [
        {
            "loc": ["body"],
            "msg": f"the JSON body is nested deeper than {depth} levels",
            "type": "json_too_deep",
        }
    ]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[" * 100_000, id="100k-open-brackets"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="100k-nested-arrays"),
        pytest.param('{"a":' * 100_000 + "1" + "}" * 100_000, id="100k-nested-objects"),
        pytest.param('{"output": ' + "[" * 5_000 + "]" * 5_000 + "}", id="deep-field"),
    ],
)
def test_deeply_nested_json_is_a_clean_422_not_a_crash(tenant: Tenant, text: str) -> None:
    before = snapshot()
    started = time.monotonic()

    response = send_raw(tenant.client, "post", "/task-outputs", text)

    assert_too_deep(response)
    assert time.monotonic() - started < 2
    assert snapshot() == before


@pytest.mark.parametrize("write", WRITES)
def test_json_nested_deeper_than_the_limit_is_refused_on_every_write(
    tenant: Tenant, rows: dict[str, Any], write: str
) -> None:
    method, path, body = writes(rows)[write]
    body[PAD_FIELD[write]] = json.loads("[" * 64 + "]" * 64)  # the body object makes it 65
    before = snapshot()

    response = send_raw(
        tenant.client, method, path, json.dumps(body), HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )

    assert_too_deep(response)
    assert snapshot() == before


def test_json_nested_exactly_to_the_limit_is_accepted(tenant: Tenant, rows: dict[str, Any]) -> None:
    deepest = json.loads("[" * 63 + "]" * 63)  # 63 levels inside the body object: 64

    response = tenant.client.post("/task-outputs", output_body(rows, output=deepest), format="json")

    assert response.status_code == 201, response.content
    assert TaskOutput.objects.get(pk=response.json()["id"]).output == deepest


def test_the_depth_limit_is_a_setting(tenant: Tenant, rows: dict[str, Any], settings: Any) -> None:
    settings.MAX_JSON_DEPTH = 3

    deep = tenant.client.post("/task-outputs", output_body(rows, output=[[[1]]]), format="json")
    shallow = tenant.client.post("/task-outputs", output_body(rows, output=[[1]]), format="json")

    assert_too_deep(deep, depth=3)
    assert shallow.status_code == 201


def test_brackets_inside_strings_do_not_count(tenant: Tenant, rows: dict[str, Any]) -> None:
    text = '[[[{{{ \\" \\\\ ' * 1000

    response = tenant.client.post("/task-outputs", output_body(rows, output=text), format="json")

    assert response.status_code == 201, response.content
    assert TaskOutput.objects.get(pk=response.json()["id"]).output == text


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[["', 0),
        ("[]", 1),
        ('{"a": [1, {"b": "]]]"}]}', 3),
        (r'["\"[[", "\\", [[]]]', 3),
        (r'["\\\"[", [1]]', 2),
        ("]]]", 0),
    ],
)
def test_nesting_depth_is_measured_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "malformed_request"),
        ('{"output": NaN}', "malformed_request"),
        ('{"a": "\\ud800"', "malformed_request"),
    ],
)
def test_json_that_does_not_parse_is_still_a_400(tenant: Tenant, text: str, code: str) -> None:
    assert_error(send_raw(tenant.client, "post", "/task-outputs", text), 400, code)


def test_a_body_that_is_not_utf8_is_a_400(tenant: Tenant) -> None:
    response = send_raw(tenant.client, "post", "/task-outputs", b'{"a": "\xff"}')

    assert_error(response, 400, "malformed_request")


# --- string lengths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_"),
    [("", "blank"), ("x" * 201, "max_length")],
)
def test_task_name_must_be_1_to_200_characters(
    tenant: Tenant, rows: dict[str, Any], value: str, type_: str
) -> None:
    before = snapshot()
    bodies = {
        "/task-outputs": output_body(rows, task_name=value),
        "/task-executions": {
            "flow_execution_id": str(rows["fe"].id),
            "organization_id": rows["org"],
            "task_name": value,
        },
    }

    for path, body in bodies.items():
        response = tenant.client.post(path, body, format="json")
        assert problems(assert_error(response, 422, "validation_error")) == {
            ("body", "task_name"): type_
        }
    assert snapshot() == before


def test_a_200_character_task_name_is_accepted(tenant: Tenant, rows: dict[str, Any]) -> None:
    response = tenant.client.post(
        "/task-outputs", output_body(rows, task_name="t" * 200), format="json"
    )

    assert response.status_code == 201, response.content


@pytest.mark.parametrize(("value", "type_"), [("", "blank"), ("n" * 201, "max_length")])
def test_a_flow_name_must_be_1_to_200_characters(
    tenant: Tenant, rows: dict[str, Any], value: str, type_: str
) -> None:
    before = snapshot()

    created = tenant.client.post("/flows", {"name": value, "definition": DEFINITION}, format="json")
    renamed = tenant.client.patch(f"/flows/{rows['flow'].id}", {"name": value}, format="json")

    for response in (created, renamed):
        assert problems(assert_error(response, 422, "validation_error")) == {
            ("body", "name"): type_
        }
    assert snapshot() == before
    assert (
        tenant.client.post(
            "/flows", {"name": "n" * 200, "definition": DEFINITION}, format="json"
        ).status_code
        == 201
    )


def test_modified_by_is_at_most_200_characters(tenant: Tenant, rows: dict[str, Any]) -> None:
    before = snapshot()

    response = tenant.client.patch(
        f"/task-executions/{rows['te'].id}", {"output": 2, "modified_by": "m" * 201}, format="json"
    )

    assert ("body", "modified_by") in problems(assert_error(response, 422, "validation_error"))
    assert snapshot() == before


def test_a_reason_is_at_most_1000_characters_in_the_body_or_the_header(
    tenant: Tenant, rows: dict[str, Any]
) -> None:
    path = f"/task-executions/{rows['te'].id}"
    before = snapshot()

    in_body = tenant.client.patch(path, {"output": 2, "reason": "r" * 1001}, format="json")
    in_header = tenant.client.patch(
        path, {"output": 2}, format="json", HTTP_X_CORRECTION_REASON="r" * 1001
    )

    assert ("body", "reason") in problems(assert_error(in_body, 422, "validation_error"))
    assert ("header", "X-Correction-Reason") in problems(
        assert_error(in_header, 422, "validation_error")
    )
    assert snapshot() == before


@pytest.mark.parametrize(
    ("tags", "type_"),
    [
        pytest.param([f"t{i}" for i in range(101)], "too_many_tags", id="101-tags"),
        pytest.param({f"k{i}": i for i in range(101)}, "too_many_tags", id="101-keys"),
        pytest.param(["t" * 201], "tag_too_long", id="long-tag"),
        pytest.param({"k" * 201: 1}, "tag_too_long", id="long-key"),
        pytest.param({"k": "v" * 201}, "tag_too_long", id="long-value"),
    ],
)
def test_tags_are_at_most_100_of_at_most_200_characters(
    tenant: Tenant, rows: dict[str, Any], tags: Any, type_: str
) -> None:
    before = snapshot()

    response = tenant.client.post("/task-outputs", output_body(rows, tags=tags), format="json")

    assert problems(assert_error(response, 422, "validation_error")) == {("body", "tags"): type_}
    assert snapshot() == before


def test_100_tags_of_200_characters_are_accepted(tenant: Tenant, rows: dict[str, Any]) -> None:
    tags = [f"{i:03d}" + "t" * 197 for i in range(100)]

    response = tenant.client.post("/task-outputs", output_body(rows, tags=tags), format="json")

    assert response.status_code == 201, response.content


def test_the_task_to_reexecute_is_at_most_200_characters(
    tenant: Tenant, rows: dict[str, Any]
) -> None:
    before = snapshot()

    response = tenant.client.post(f"/flow-executions/{rows['fe'].id}/execute?task={'t' * 201}")

    assert ("query", "task") in problems(assert_error(response, 422, "validation_error"))
    assert snapshot() == before


# --- flow size: FLOWPLATFORM_MAX_DEFINITION_BYTES and FLOWPLATFORM_MAX_TASKS → 422 -----------


def definition_with(tasks: int) -> str:
    return yaml.safe_dump({"tasks": [{"name": f"t{i}", "type": "transform"} for i in range(tasks)]})


@pytest.mark.parametrize("change", ["create", "new version"])
def test_a_definition_over_the_byte_limit_is_a_422_and_adds_nothing(
    tenant: Tenant, rows: dict[str, Any], settings: Any, change: str
) -> None:
    settings.FLOWPLATFORM_MAX_DEFINITION_BYTES = 2_000
    definition = DEFINITION + "#" * 2_000
    before = snapshot()

    if change == "create":
        response = tenant.client.post(
            "/flows", {"name": "big", "definition": definition}, format="json"
        )
    else:
        response = tenant.client.patch(
            f"/flows/{rows['flow'].id}", {"definition": definition}, format="json"
        )

    body = assert_error(response, 422, "validation_error")
    assert ("body", "definition") in problems(body)
    assert "larger than 2000 bytes" in str(body["detail"])
    assert snapshot() == before


def test_a_definition_with_more_tasks_than_the_limit_is_a_422(
    tenant: Tenant, settings: Any
) -> None:
    settings.FLOWPLATFORM_MAX_TASKS = 5
    before = snapshot()

    refused = tenant.client.post(
        "/flows", {"name": "six", "definition": definition_with(6)}, format="json"
    )
    accepted = tenant.client.post(
        "/flows", {"name": "five", "definition": definition_with(5)}, format="json"
    )

    detail = assert_error(refused, 422, "validation_error")["detail"]
    assert detail[0]["loc"] == ["body", "definition", "tasks"]
    assert "more than the limit of 5" in detail[0]["msg"]
    assert accepted.status_code == 201
    assert Flow.objects.count() == len(before["Flow"]) + 1


# --- pagination: limit 1..1000, offset >= 0 → else 422 naming the parameter -------------------

PAGINATED = [*LISTS, "/flows/{flow}/versions"]


def list_path(path: str, rows: dict[str, Any]) -> str:
    return path.format(flow=rows["flow"].id)


@pytest.mark.parametrize("path", PAGINATED)
@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("limit", "0"),
        ("limit", "-1"),
        ("limit", "1001"),
        ("limit", "abc"),
        ("limit", "1.5"),
        ("limit", "1e3"),
        ("limit", "99999999999999999999999999"),
        ("offset", "-1"),
        ("offset", "abc"),
        ("offset", "2.0"),
        ("offset", "99999999999999999999999999"),
    ],
)
def test_a_bad_limit_or_offset_is_a_422_naming_it(
    tenant: Tenant, rows: dict[str, Any], path: str, parameter: str, value: str
) -> None:
    response = tenant.client.get(list_path(path, rows), {parameter: value})

    assert problems(assert_error(response, 422, "validation_error")) == {
        ("query", parameter): "invalid"
    }


@pytest.mark.parametrize("path", PAGINATED)
def test_limits_from_1_to_1000_and_any_offset_are_accepted(
    tenant: Tenant, rows: dict[str, Any], path: str
) -> None:
    for query in ({"limit": "1"}, {"limit": "1000"}, {"offset": "0"}, {"offset": "2147483647"}):
        assert tenant.client.get(list_path(path, rows), query).status_code == 200, query


# --- ids in paths: anything but a UUID is a 404 -----------------------------------------------

BAD_IDS = [
    "not-a-uuid",
    "1",
    "00000000-0000-0000-0000-00000000000g",
    "%00",
    "%27%20OR%201%3D1%20--",
    "x" * 5000,
    "..%2F..%2Fetc%2Fpasswd",
]
DETAIL_ROUTES = [
    ("get", "/flows/{}"),
    ("put", "/flows/{}"),
    ("patch", "/flows/{}"),
    ("delete", "/flows/{}"),
    ("get", "/flows/{}/versions"),
    ("get", "/flow-executions/{}"),
    ("delete", "/flow-executions/{}"),
    ("post", "/flow-executions/{}/execute"),
    ("get", "/task-executions/{}"),
    ("put", "/task-executions/{}"),
    ("patch", "/task-executions/{}"),
    ("delete", "/task-executions/{}"),
    ("get", "/task-outputs/{}"),
    ("put", "/task-outputs/{}"),
    ("patch", "/task-outputs/{}"),
    ("delete", "/task-outputs/{}"),
    ("get", "/corrections/{}"),
]


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=lambda value: value[:24])
@pytest.mark.parametrize(("method", "route"), DETAIL_ROUTES)
def test_an_id_that_is_not_a_uuid_is_a_404_on_every_detail_route(
    tenant: Tenant, rows: dict[str, Any], method: str, route: str, bad_id: str
) -> None:
    before = snapshot()

    response = getattr(tenant.client, method)(route.format(bad_id), {}, format="json")

    assert_error(response, 404, "not_found")
    assert snapshot() == before


ID_FILTERS = {
    "/flow-executions": ["flow_id"],
    "/task-executions": ["flow_execution_id", "stale_correction_id", "started_by_correction_id"],
    "/task-outputs": ["flow_execution_id"],
    "/corrections": ["flow_execution_id", "task_execution_id"],
}


@pytest.mark.parametrize("value", ["not-a-uuid", "1", "%00", "x" * 300])
@pytest.mark.parametrize(
    ("path", "parameter"),
    [(path, parameter) for path, parameters in ID_FILTERS.items() for parameter in parameters],
)
def test_an_id_filter_that_is_not_a_uuid_is_a_422_naming_it(
    tenant: Tenant, path: str, parameter: str, value: str
) -> None:
    response = tenant.client.get(path, {parameter: value})

    assert ("query", parameter) in problems(assert_error(response, 422, "validation_error"))


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/task-outputs", "flow_execution_id"),
        ("/task-outputs", "organization_id"),
        ("/task-executions", "flow_execution_id"),
        ("/task-executions", "organization_id"),
        ("/flow-executions", "flow_id"),
    ],
)
def test_an_id_in_a_body_that_is_not_a_uuid_is_a_422_naming_it(
    tenant: Tenant, rows: dict[str, Any], path: str, field: str
) -> None:
    body = {
        "/task-outputs": output_body(rows),
        "/task-executions": {
            "flow_execution_id": str(rows["fe"].id),
            "organization_id": rows["org"],
            "task_name": "review",
        },
        "/flow-executions": {"flow_id": str(rows["flow"].id)},
    }[path]
    before = snapshot()

    response = tenant.client.post(path, {**body, field: "not-a-uuid"}, format="json")

    assert problems(assert_error(response, 422, "validation_error")) == {("body", field): "invalid"}
    assert snapshot() == before


# --- filter and ordering values: 422 naming the parameter, on every list ---------------------

COMMON = [
    ("ordering", "nonexistent"),
    ("ordering", "-nonexistent"),
    ("ordering", "created_at,organization"),
    ("created_at_after", "notadate"),
    ("created_at_before", "2030-13-45"),
    ("created_at_after", "%00"),
]
SOFT_DELETED = [
    ("include_deleted", "maybe"),
    ("include_deleted", "yes"),
    ("updated_at_after", "notadate"),
    ("updated_at_before", "tomorrow"),
]
BAD_FILTERS = {
    "/flows": [*COMMON, *SOFT_DELETED, ("name", "a\x00b"), ("modified_by", "a\x00b")],
    "/flow-executions": [*COMMON, *SOFT_DELETED, ("status", "bogus"), ("status", "queued,nope")],
    "/task-executions": [
        *COMMON,
        *SOFT_DELETED,
        ("status", "bogus"),
        ("status", "in_progress"),
        ("task_execution_idx", "-1"),
        ("task_execution_idx", "abc"),
        ("task_execution_idx", "1.5"),
        ("task_execution_idx", "1e3"),
        ("task_execution_idx", "99999999999999999999"),
        ("task_name", "a\x00b"),
    ],
    "/task-outputs": [
        *COMMON,
        *SOFT_DELETED,
        ("status", "bogus"),
        ("flow_version", "0"),
        ("flow_version", "-1"),
        ("flow_version", "v1"),
        ("flow_version", "99999999999999999999"),
    ],
    "/corrections": [*COMMON, ("task_name", "a\x00b"), ("modified_by", "a\x00b")],
}


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [(path, p, v) for path, cases in BAD_FILTERS.items() for p, v in cases],
    ids=lambda value: str(value)[:20],
)
def test_a_bad_filter_or_ordering_value_is_a_422_naming_the_parameter(
    tenant: Tenant, rows: dict[str, Any], path: str, parameter: str, value: str
) -> None:
    response = tenant.client.get(path, {parameter: value})

    body = assert_error(response, 422, "validation_error")
    assert [item["loc"] for item in body["detail"]] == [["query", parameter]]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/task-executions", {"task_execution_idx": "0"}),
        ("/task-executions", {"task_execution_idx": "2147483647"}),
        ("/task-outputs", {"flow_version": "1"}),
        ("/flows", {"include_deleted": "TRUE", "ordering": "-name"}),
        ("/corrections", {"ordering": "-created_at", "created_at_after": "2030-01-01T00:00:00Z"}),
    ],
)
def test_valid_filter_values_at_the_edges_are_accepted(
    tenant: Tenant, rows: dict[str, Any], path: str, query: dict[str, str]
) -> None:
    assert tenant.client.get(path, query).status_code == 200
