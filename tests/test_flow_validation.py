"""/flows: a definition is validated before anything is stored; every problem is a 422 that says
where it is (task index and field) and which task it is about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.models import Flow, FlowVersion
from tests.helpers.tenants import Tenant

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KNOWN_TYPES = ("http", "human", "python", "transform")  # as the message lists them


def task(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "transform", **fields}


def flow_yaml(*tasks: Any, **top: Any) -> str:
    document = {"name": "checks", **top, "tasks": list(tasks)}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)


def post_flow(tenant: Tenant, definition: str, name: str = "checks"):  # type: ignore[no-untyped-def]
    return tenant.client.post("/flows", {"name": name, "definition": definition}, format="json")


def accepted(tenant: Tenant, definition: str) -> dict[str, Any]:
    response = post_flow(tenant, definition)
    assert response.status_code == 201, response.content
    return response.json()


def assert_validation_error(response) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.content
    body = response.json()
    assert set(body) == {"error", "request_id", "detail"}
    assert body["error"]["code"] == "validation_error"
    assert body["request_id"]
    return body["detail"]


def refused(tenant: Tenant, definition: str) -> list[dict[str, Any]]:
    """POST the definition, check it is a 422 that wrote nothing, and return its detail items."""
    flows, versions = Flow.objects.count(), FlowVersion.objects.count()
    detail = assert_validation_error(post_flow(tenant, definition))
    assert Flow.objects.count() == flows
    assert FlowVersion.objects.count() == versions
    return detail


def problem_at(detail: list[dict[str, Any]], *loc: str | int) -> dict[str, Any]:
    """The one detail item whose loc is ("body", "definition", *loc)."""
    wanted = ["body", "definition", *loc]
    matches = [item for item in detail if item["loc"] == wanted]
    assert len(matches) == 1, f"expected one problem at {wanted}, got {detail}"
    return matches[0]


# --- the document ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("name: [unclosed\ntasks: []\n", id="unclosed-list"),
        pytest.param("tasks:\n  - name: a\n bad-indent: 1\n", id="bad-indentation"),
        pytest.param("!!python/object/apply:os.system ['true']\n", id="python-tag"),
    ],
)
def test_text_that_is_not_yaml_is_refused(tenant: Tenant, text: str) -> None:
    problem = problem_at(refused(tenant, text))

    assert "not valid YAML" in problem["msg"]
    assert problem["type"] == "invalid_definition"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("- name: a\n  type: transform\n", id="list"),
        pytest.param("just some words\n", id="scalar"),
        pytest.param("42\n", id="number"),
    ],
)
def test_yaml_that_is_not_a_mapping_is_refused(tenant: Tenant, text: str) -> None:
    problem = problem_at(refused(tenant, text))

    assert "must be a YAML mapping" in problem["msg"]


def test_an_unknown_top_level_key_is_refused_naming_the_allowed_ones(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), version=2))

    problem = problem_at(detail, "version")
    assert "unknown key 'version'" in problem["msg"]
    assert "description, name, tasks" in problem["msg"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("name: checks\n", id="missing"),
        pytest.param("name: checks\ntasks: []\n", id="empty"),
        pytest.param("name: checks\ntasks: a\n", id="string"),
        pytest.param("name: checks\ntasks: {name: a, type: transform}\n", id="mapping"),
    ],
)
def test_tasks_must_be_a_non_empty_list(tenant: Tenant, text: str) -> None:
    problem = problem_at(refused(tenant, text), "tasks")

    assert "non-empty list" in problem["msg"]


def test_a_task_that_is_not_a_mapping_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), "b"))

    problem = problem_at(detail, "tasks", 1)
    assert "tasks[1]" in problem["msg"]  # named as `loc` names it
    assert "must be a mapping" in problem["msg"]


# --- task keys and names --------------------------------------------------------------------


def test_an_unknown_task_key_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("fetch", timeout=5)))

    problem = problem_at(detail, "tasks", 1, "timeout")
    assert "task 'fetch'" in problem["msg"]
    assert "unknown key 'timeout'" in problem["msg"]


def test_a_task_without_a_name_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), {"type": "transform"}))

    problem = problem_at(detail, "tasks", 1, "name")
    assert "tasks[1]" in problem["msg"]
    assert "'name' is required" in problem["msg"]


def test_duplicate_task_names_are_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b"), task("a")))

    problem = problem_at(detail, "tasks", 2, "name")
    assert "task 'a'" in problem["msg"]
    assert "duplicate name (also tasks[0])" in problem["msg"]


def test_task_names_are_case_sensitive(tenant: Tenant) -> None:
    accepted(tenant, flow_yaml(task("A"), task("a", depends_on=["A"])))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 201, id="201-characters"),
        pytest.param(" extract", id="leading-space"),
        pytest.param("extract ", id="trailing-space"),
    ],
)
def test_invalid_task_names_are_refused(tenant: Tenant, name: str) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task(name)))

    problem = problem_at(detail, "tasks", 1, "name")
    assert f"task '{name}'" in problem["msg"]
    assert "1 to 200 characters without surrounding spaces" in problem["msg"]


def test_a_200_character_task_name_is_accepted(tenant: Tenant) -> None:
    name = "x" * 200

    accepted(tenant, flow_yaml(task(name), task("b", depends_on=[name])))


# --- types ----------------------------------------------------------------------------------


def test_a_task_without_a_type_is_refused_listing_the_known_types(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), {"name": "b"}))

    problem = problem_at(detail, "tasks", 1, "type")
    assert "task 'b'" in problem["msg"]
    assert "'type' is required" in problem["msg"]  # not "unknown type None"
    assert problem["type"] == "required"
    assert f"known: {', '.join(KNOWN_TYPES)}" in problem["msg"]


def test_a_cycle_is_reported_with_the_other_problems(tenant: Tenant) -> None:
    """Every problem at once: a cycle is not held back until the rest is fixed."""
    detail = refused(
        tenant,
        flow_yaml(
            task("a", depends_on=["b"]),
            task("b", depends_on=["a"]),
            {"name": "c", "type": "no-such-type"},
        ),
    )

    assert "unknown type 'no-such-type'" in problem_at(detail, "tasks", 2, "type")["msg"]
    cycle = problem_at(detail, "tasks", 0, "depends_on")
    assert cycle["type"] == "cycle"
    assert "a → b → a" in cycle["msg"]


@pytest.mark.parametrize(
    "task_type",
    [
        pytest.param("shell", id="unknown"),
        pytest.param("Transform", id="wrong-case"),
        pytest.param(["transform"], id="list"),
        pytest.param({"name": "transform"}, id="mapping"),
    ],
)
def test_an_unknown_type_is_refused_listing_the_known_types(tenant: Tenant, task_type: Any) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", type=task_type)))

    problem = problem_at(detail, "tasks", 1, "type")
    assert "task 'b'" in problem["msg"]
    assert "unknown type" in problem["msg"]
    assert f"known: {', '.join(KNOWN_TYPES)}" in problem["msg"]


# --- dependencies ---------------------------------------------------------------------------


def test_depends_on_a_missing_task_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", depends_on=["a", "ghost"])))

    problem = problem_at(detail, "tasks", 1, "depends_on")
    assert "task 'b'" in problem["msg"]
    assert "'ghost'" in problem["msg"]
    assert problem["type"] == "unknown_task"


@pytest.mark.parametrize(
    "depends_on",
    [
        pytest.param("a", id="string"),
        pytest.param([1], id="number-in-list"),
        pytest.param({"a": True}, id="mapping"),
    ],
)
def test_depends_on_must_be_a_list_of_task_names(tenant: Tenant, depends_on: Any) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", depends_on=depends_on)))

    problem = problem_at(detail, "tasks", 1, "depends_on")
    assert "task 'b'" in problem["msg"]
    assert "must be a list of task names" in problem["msg"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("${{ tasks.ghost.output }}", id="whole"),
        pytest.param("Pages: ${{ tasks.ghost.output.pages }}", id="embedded"),
        pytest.param({"pages": ["${{ tasks.ghost.output.pages }}"]}, id="nested"),
        pytest.param("${{ tasks.a.output || tasks.ghost.output }}", id="second-operand"),
    ],
)
def test_an_expression_naming_a_missing_task_is_refused_at_its_input(
    tenant: Tenant, value: Any
) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", input=value)))

    problem = problem_at(detail, "tasks", 1, "input")
    assert "task 'b'" in problem["msg"]
    assert "'ghost'" in problem["msg"]
    assert problem["type"] == "unknown_task"


def test_an_expression_cannot_read_a_missing_task_through_the_current_node(
    tenant: Tenant,
) -> None:
    # At the root `@` is the whole context, so `@.tasks.ghost` reads a task like `tasks.ghost`.
    detail = refused(tenant, flow_yaml(task("a"), task("b", input="${{ @.tasks.ghost.output }}")))

    about_b = [item for item in detail if item["loc"][:4] == ["body", "definition", "tasks", 1]]
    assert len(about_b) == 1, detail
    assert "task 'b'" in about_b[0]["msg"]


def test_a_cycle_is_refused_naming_its_tasks_in_order(tenant: Tenant) -> None:
    definition = flow_yaml(
        task("archive", depends_on=["publish"]),
        task("extract", depends_on=["publish"]),
        task("review", depends_on=["extract"]),
        task("publish", depends_on=["review"]),
    )

    detail = refused(tenant, definition)

    assert len(detail) == 1, detail
    problem = detail[0]
    assert problem["type"] == "cycle"
    assert problem["loc"][:3] == ["body", "definition", "tasks"]
    assert problem["loc"][3] in {1, 2, 3}  # a task on the cycle, not 'archive'
    assert problem["loc"][4:] == ["depends_on"]
    cycle = ["extract", "review", "publish"]
    rotations = [" → ".join([*cycle[i:], *cycle[:i], cycle[i]]) for i in range(len(cycle))]
    assert any(rotation in problem["msg"] for rotation in rotations), problem["msg"]
    assert "archive" not in problem["msg"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"depends_on": ["b"]}, "depends_on", id="depends_on"),
        pytest.param({"input": "${{ tasks.b.output }}"}, "input", id="expression"),
    ],
)
def test_a_task_depending_on_itself_is_refused(
    tenant: Tenant, fields: dict[str, Any], field: str
) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", **fields)))

    problem = problem_at(detail, "tasks", 1, field)
    assert "task 'b' depends on itself" in problem["msg"]
    assert problem["type"] == "cycle"


# --- expressions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("${{ flow.input. }}", id="trailing-dot"),
        pytest.param("${{ tasks.a.output[ }}", id="unclosed-bracket"),
        pytest.param("Title: ${{ ]] }}", id="embedded"),
        pytest.param({"list": ["${{ flow.input.x == }}"]}, id="nested"),
    ],
)
def test_an_expression_that_does_not_parse_is_refused(tenant: Tenant, value: Any) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", input=value)))

    problem = problem_at(detail, "tasks", 1, "input")
    assert "task 'b'" in problem["msg"]
    assert "is not a valid expression" in problem["msg"]
    assert problem["type"] == "invalid_expression"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("${{ flwo.input.x }}", id="typo"),
        pytest.param("${{ input.x }}", id="input"),
        pytest.param("${{ tasks }}", id="all-tasks"),
        pytest.param("${{ tasks[0].output }}", id="task-by-index"),
        pytest.param("${{ @.flwo.input.x }}", id="through-current-node"),
    ],
)
def test_an_expression_reading_an_unknown_root_is_refused(tenant: Tenant, value: str) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", input=value)))

    problem = problem_at(detail, "tasks", 1, "input")
    assert "task 'b'" in problem["msg"]
    assert problem["type"] == "invalid_expression"


# --- retries and config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "retries",
    [
        pytest.param(-1, id="negative"),
        pytest.param(101, id="over-100"),
        pytest.param("3", id="string"),
        pytest.param(True, id="boolean"),
        pytest.param(2.5, id="float"),
    ],
)
def test_invalid_retries_are_refused(tenant: Tenant, retries: Any) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", retries=retries)))

    problem = problem_at(detail, "tasks", 1, "retries")
    assert "task 'b'" in problem["msg"]
    assert "integer from 0 to 100" in problem["msg"]


def test_retries_from_0_to_100_are_accepted(tenant: Tenant) -> None:
    accepted(tenant, flow_yaml(task("a", retries=0), task("b", retries=100)))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param("expression: x", id="string"),
        pytest.param(["expression"], id="list"),
        pytest.param(5, id="number"),
    ],
)
def test_config_that_is_not_a_mapping_is_refused(tenant: Tenant, config: Any) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", config=config)))

    problem = problem_at(detail, "tasks", 1, "config")
    assert "task 'b'" in problem["msg"]
    assert "'config' must be a mapping" in problem["msg"]


def test_an_unknown_config_key_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", config={"expresion": "x"})))

    problem = problem_at(detail, "tasks", 1, "config", "expresion")
    assert "task 'b'" in problem["msg"]
    assert "unknown config key" in problem["msg"]


@pytest.mark.parametrize("expression", ["max(@", "[?", "a..b"])
def test_a_transform_with_a_bad_expression_is_refused(tenant: Tenant, expression: str) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", config={"expression": expression})))

    problem = problem_at(detail, "tasks", 1, "config", "expression")
    assert "task 'b'" in problem["msg"]
    assert "not a valid JMESPath expression" in problem["msg"]


# --- python tasks ---------------------------------------------------------------------------


def python_task(name: str, callable_path: Any) -> dict[str, Any]:
    return task(name, type="python", config={"callable": callable_path})


@pytest.mark.parametrize(
    "callable_path",
    [
        pytest.param("os:system", id="os-system"),
        pytest.param("subprocess:run", id="subprocess"),
        pytest.param("examples_extra.tasks:extract", id="look-alike-prefix"),
    ],
)
def test_a_python_callable_outside_the_allowed_prefixes_is_refused_at_save_time(
    tenant: Tenant, callable_path: str
) -> None:
    detail = refused(tenant, flow_yaml(task("a"), python_task("b", callable_path)))

    problem = problem_at(detail, "tasks", 1, "config", "callable")
    assert "task 'b'" in problem["msg"]
    assert f"'{callable_path}' is not under an allowed prefix" in problem["msg"]


@pytest.mark.parametrize(
    "callable_path",
    [
        pytest.param("examples.tasks.extract", id="no-colon"),
        pytest.param("examples:tasks:extract", id="two-colons"),
        pytest.param(5, id="number"),
    ],
)
def test_a_python_callable_must_be_module_colon_function(
    tenant: Tenant, callable_path: Any
) -> None:
    detail = refused(tenant, flow_yaml(task("a"), python_task("b", callable_path)))

    problem = problem_at(detail, "tasks", 1, "config", "callable")
    assert "task 'b'" in problem["msg"]
    assert "must be 'package.module:function'" in problem["msg"]


@pytest.mark.parametrize(
    "callable_path",
    [
        pytest.param("examples.tasks:nope", id="missing-function"),
        pytest.param("examples.nothing:extract", id="missing-module"),
        pytest.param("examples:tasks", id="module-not-callable"),
    ],
)
def test_a_python_callable_under_the_prefix_that_does_not_exist_is_refused(
    tenant: Tenant, callable_path: str
) -> None:
    detail = refused(tenant, flow_yaml(task("a"), python_task("b", callable_path)))

    problem = problem_at(detail, "tasks", 1, "config", "callable")
    assert "task 'b'" in problem["msg"]
    assert "cannot be imported" in problem["msg"]


def test_a_python_task_without_a_callable_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", type="python")))

    problem = problem_at(detail, "tasks", 1, "config", "callable")
    assert "task 'b'" in problem["msg"]
    assert "is required" in problem["msg"]


def test_the_python_allow_list_is_read_from_settings_at_save_time(tenant: Tenant, settings) -> None:
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["json"]

    detail = refused(tenant, flow_yaml(python_task("a", "examples.tasks:extract")))
    accepted(tenant, flow_yaml(python_task("a", "json:dumps")))

    assert (
        "not under an allowed prefix" in problem_at(detail, "tasks", 0, "config", "callable")["msg"]
    )


# --- http tasks -----------------------------------------------------------------------------


def http_task(name: str, **config: Any) -> dict[str, Any]:
    return task(name, type="http", config={"url": "https://api.example.com/hook", **config})


def test_an_http_url_whose_host_is_not_allowed_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), http_task("b")))

    problem = problem_at(detail, "tasks", 1, "config", "url")
    assert "task 'b'" in problem["msg"]
    assert "host of 'https://api.example.com/hook' is not allowed" in problem["msg"]


def test_an_http_url_is_accepted_once_its_host_is_allowed(tenant: Tenant, settings) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["api.example.com"]

    accepted(tenant, flow_yaml(task("a"), http_task("b", method="get", timeout=60)))


ALLOWED_HOSTS = ["api.example.com", "hooks.example.com:8443"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://api.example.com/hook", id="host"),
        pytest.param("https://api.example.com:9000/hook", id="host-allows-any-port"),
        pytest.param("https://hooks.example.com:8443/hook", id="host-and-port"),
    ],
)
def test_http_urls_on_allowed_hosts_are_accepted(tenant: Tenant, settings, url: str) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ALLOWED_HOSTS

    accepted(tenant, flow_yaml(http_task("a", url=url)))


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://hooks.example.com:9000/hook", id="other-port"),
        pytest.param("https://hooks.example.com/hook", id="no-port"),
        pytest.param("https://other.example.com/hook", id="other-host"),
        pytest.param("https://api.example.com@evil.example/hook", id="userinfo"),
    ],
)
def test_http_urls_on_other_hosts_or_ports_are_refused(tenant: Tenant, settings, url: str) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ALLOWED_HOSTS

    detail = refused(tenant, flow_yaml(http_task("a", url=url)))

    assert "is not allowed" in problem_at(detail, "tasks", 0, "config", "url")["msg"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://api.example.com/hook", id="ftp"),
        pytest.param("file:///etc/passwd", id="file"),
        pytest.param("api.example.com/hook", id="no-scheme"),
        pytest.param(["https://api.example.com/hook"], id="list"),
    ],
)
def test_an_http_url_without_an_http_scheme_is_refused(tenant: Tenant, settings, url: Any) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["api.example.com"]

    detail = refused(tenant, flow_yaml(task("a"), http_task("b", url=url)))

    problem = problem_at(detail, "tasks", 1, "config", "url")
    assert "task 'b'" in problem["msg"]
    assert "must be an http:// or https:// URL" in problem["msg"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://[::1/hook", id="unclosed-ipv6"),
        pytest.param("https://other.example.com:port/hook", id="non-numeric-port"),
    ],
)
def test_a_malformed_http_url_is_refused(tenant: Tenant, url: str) -> None:
    response = post_flow(tenant, flow_yaml(task("a"), http_task("b", url=url)))

    problem = problem_at(assert_validation_error(response), "tasks", 1, "config", "url")
    assert "task 'b'" in problem["msg"]


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        pytest.param({"method": "FETCH"}, "method", "must be one of", id="method-unknown"),
        pytest.param({"method": ""}, "method", "must be one of", id="method-empty"),
        pytest.param({"timeout": 0}, "timeout", "more than 0 and at most 60", id="timeout-0"),
        pytest.param({"timeout": -1}, "timeout", "more than 0 and at most 60", id="timeout-neg"),
        pytest.param({"timeout": 61}, "timeout", "more than 0 and at most 60", id="timeout-61"),
        pytest.param({"timeout": "10"}, "timeout", "more than 0", id="timeout-string"),
        pytest.param({"timeout": True}, "timeout", "more than 0", id="timeout-boolean"),
        pytest.param({"headers": ["X-A"]}, "headers", "must map header names", id="headers"),
        pytest.param({"body": "x"}, "body", "unknown config key", id="unknown-key"),
    ],
)
def test_invalid_http_config_is_refused(
    tenant: Tenant, settings, config: dict[str, Any], field: str, message: str
) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["api.example.com"]

    detail = refused(tenant, flow_yaml(task("a"), http_task("b", **config)))

    problem = problem_at(detail, "tasks", 1, "config", field)
    assert "task 'b'" in problem["msg"]
    assert message in problem["msg"]


def test_an_http_task_without_a_url_is_refused(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a"), task("b", type="http")))

    problem = problem_at(detail, "tasks", 1, "config", "url")
    assert "task 'b'" in problem["msg"]
    assert "is required" in problem["msg"]


# --- limits ---------------------------------------------------------------------------------


def test_more_tasks_than_the_limit_are_refused(tenant: Tenant, settings) -> None:
    settings.FLOWPLATFORM_MAX_TASKS = 5

    accepted(tenant, flow_yaml(*(task(f"t{i}") for i in range(5))))
    detail = refused(tenant, flow_yaml(*(task(f"t{i}") for i in range(6))))

    problem = problem_at(detail, "tasks")
    assert "6 tasks is more than the limit of 5" in problem["msg"]


def test_a_definition_over_the_byte_limit_is_refused(tenant: Tenant, settings) -> None:
    definition = flow_yaml(task("a"), description="café")
    settings.FLOWPLATFORM_MAX_DEFINITION_BYTES = len(definition.encode())

    accepted(tenant, definition)
    # One more byte: "é" is two bytes in UTF-8, so the limit counts bytes, not characters.
    longer = definition.replace("café", "cafée")
    assert len(longer) <= len(definition.encode())
    detail = refused(tenant, longer)

    problem = problem_at(detail)
    assert f"larger than {len(definition.encode())} bytes" in problem["msg"]


# --- several problems -----------------------------------------------------------------------


def test_every_problem_of_a_definition_is_reported_in_one_answer(tenant: Tenant) -> None:
    definition = flow_yaml(
        task("a", type="shell"),
        task("b", retries=-1, input="${{ flwo.input }}"),
        task("c", config="x", colour="red"),
        task("a"),
        owner="me",
    )

    detail = refused(tenant, definition)

    assert sorted(tuple(map(str, item["loc"][2:])) for item in detail) == [
        ("owner",),
        ("tasks", "0", "type"),
        ("tasks", "1", "input"),
        ("tasks", "1", "retries"),
        ("tasks", "2", "colour"),
        ("tasks", "2", "config"),
        ("tasks", "3", "name"),
    ]


def test_a_missing_dependency_is_reported_with_the_other_problems(tenant: Tenant) -> None:
    definition = flow_yaml(task("a", retries=-1), task("b", depends_on=["ghost"]))

    detail = refused(tenant, definition)

    assert problem_at(detail, "tasks", 0, "retries")
    assert problem_at(detail, "tasks", 1, "depends_on")


# --- updates --------------------------------------------------------------------------------

VALID = flow_yaml(task("extract"), task("review", type="human", depends_on=["extract"]))
SECOND_VALID = flow_yaml(task("extract"))


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize(
    ("definition", "loc"),
    [
        pytest.param(flow_yaml(task("a", type="shell")), ("tasks", 0, "type"), id="type"),
        pytest.param(
            flow_yaml(task("a"), python_task("b", "os:system")),
            ("tasks", 1, "config", "callable"),
            id="callable",
        ),
        pytest.param(
            flow_yaml(task("a", depends_on=["b"]), task("b", depends_on=["a"])),
            ("tasks", 0, "depends_on"),
            id="cycle",
        ),
        pytest.param("tasks: [", (), id="not-yaml"),
    ],
)
def test_an_invalid_definition_in_an_update_is_refused_and_adds_no_version(
    tenant: Tenant, method: str, definition: str, loc: tuple[str | int, ...]
) -> None:
    flow = accepted(tenant, VALID)
    versions_url = f"/flows/{flow['id']}/versions"
    before = tenant.client.get(versions_url).json()["count"]

    response = getattr(tenant.client, method)(
        f"/flows/{flow['id']}", {"name": "renamed", "definition": definition}, format="json"
    )

    problem_at(assert_validation_error(response), *loc)
    assert tenant.client.get(versions_url).json()["count"] == before
    assert tenant.client.get(f"/flows/{flow['id']}").json() == flow


def test_a_valid_definition_in_an_update_adds_a_version(tenant: Tenant) -> None:
    flow = accepted(tenant, VALID)

    response = tenant.client.patch(
        f"/flows/{flow['id']}", {"definition": SECOND_VALID}, format="json"
    )

    assert response.status_code == 200, response.content
    assert tenant.client.get(f"/flows/{flow['id']}/versions").json()["count"] == 2


# --- valid definitions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "file_name", ["document-pages.yaml", "document-review.yaml", "word-stats.yaml"]
)
def test_the_example_definitions_are_accepted(tenant: Tenant, file_name: str) -> None:
    text = (EXAMPLES / file_name).read_text()

    body = accepted(tenant, text)

    assert body["definition"] == text
    assert body["version"] == 1


def test_the_examples_directory_holds_the_tested_definitions() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.yaml")) == [
        "document-pages.yaml",
        "document-review.yaml",
        "word-stats.yaml",
    ]


def test_a_definition_using_every_field_is_accepted(tenant: Tenant, settings) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["api.example.com"]
    definition = flow_yaml(
        python_task("extract", "examples.tasks:extract")
        | {"description": "Read the document", "input": {"document": "${{ flow.input.text }}"}},
        task(
            "review",
            type="human",
            depends_on=["extract"],
            config={"instructions": "Check it"},
            retries=0,
        ),
        http_task("notify", headers={"X-Token": "t"}, timeout=2.5)
        | {"input": {"pages": "${{ tasks.extract.output.pages }}"}, "retries": 3},
        task(
            "publish",
            config={"expression": "{pages: pages, ok: approved}"},
            input={
                "pages": "${{ tasks.extract.output.pages }}",
                "approved": "${{ tasks.review.output.approved }}",
                "headline": "${{ tasks.extract.output.title }} (${{ flow.input.source }})",
            },
            depends_on=["notify"],
        ),
        description="Every field a definition may use",
    )

    accepted(tenant, definition)


# --- task types from settings ---------------------------------------------------------------


def test_an_executor_registered_in_settings_is_a_valid_type(tenant: Tenant, settings) -> None:
    settings.FLOWPLATFORM_EXECUTORS = {"shout": "tests.helpers.callables.ShoutWithVolumeExecutor"}

    accepted(tenant, flow_yaml(task("a"), task("b", type="shout", config={"volume": 11})))


def test_a_registered_executor_checks_its_config(tenant: Tenant, settings) -> None:
    settings.FLOWPLATFORM_EXECUTORS = {"shout": "tests.helpers.callables.ShoutWithVolumeExecutor"}

    detail = refused(tenant, flow_yaml(task("a", type="shout", config={"pitch": "high"})))

    problem = problem_at(detail, "tasks", 0, "config", "pitch")
    assert "task 'a'" in problem["msg"]
    assert "unknown config key" in problem["msg"]


def test_an_unregistered_type_is_refused_listing_the_registered_ones(
    tenant: Tenant, settings
) -> None:
    settings.FLOWPLATFORM_EXECUTORS = {"shout": "tests.helpers.callables.ShoutWithVolumeExecutor"}

    detail = refused(tenant, flow_yaml(task("a", type="whisper")))

    problem = problem_at(detail, "tasks", 0, "type")
    assert "task 'a'" in problem["msg"]
    assert "unknown type 'whisper'" in problem["msg"]
    assert f"known: {', '.join(sorted([*KNOWN_TYPES, 'shout']))}" in problem["msg"]


def test_a_type_is_unknown_without_its_executor_setting(tenant: Tenant) -> None:
    detail = refused(tenant, flow_yaml(task("a", type="shout")))

    assert "unknown type 'shout'" in problem_at(detail, "tasks", 0, "type")["msg"]
