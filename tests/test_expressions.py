"""`${{ … }}` expressions in task inputs (`flows.expressions`): parsing, static deps, resolution."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.expressions import (
    ExpressionError,
    compile_expression,
    expressions_in,
    referenced_tasks,
    resolve,
)

# Derandomized and without an example database, so runs are repeatable and leave no files behind.
PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, database=None)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
plain_text = st.text().filter(lambda text: "${{" not in text)
templates_without_expressions = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | plain_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture
def context() -> dict[str, Any]:
    return {
        "flow": {"input": {"name": "report", "count": 3, "list": [{"x": 1}, {"x": 2}]}},
        "tasks": {
            "a": {
                "output": {
                    "pages": 10,
                    "meta": {"lang": "en", "draft": False},
                    "items": [{"name": "b"}, {"name": "a"}],
                    "nothing": None,
                }
            },
            "my task": {"output": {"ok": True}},
        },
    }


# --- compile_expression -----------------------------------------------------------------------


def test_compile_expression_ignores_surrounding_whitespace() -> None:
    parsed = compile_expression("  flow.input.name ")

    assert parsed.search({"flow": {"input": {"name": "x"}}}) == "x"


def test_compile_expression_caches_the_parsed_expression() -> None:
    assert compile_expression("tasks.a.output") is compile_expression("tasks.a.output")


def test_compile_expression_reports_syntax_errors_as_expression_errors() -> None:
    with pytest.raises(ExpressionError, match=r"'tasks\.a\.output\.\[' is not a valid"):
        compile_expression("tasks.a.output.[")


# --- expressions_in ---------------------------------------------------------------------------


def test_expressions_in_finds_every_expression_in_nested_values() -> None:
    value = {
        "title": "${{ flow.input.name }}",
        "parts": ["page ${{ tasks.a.output.pages }} of ${{ flow.input.count }}", 3, None],
        "options": {"deep": ["${{ tasks.b.output }}"], "flag": True},
    }

    found = sorted(source.strip() for source in expressions_in(value))

    assert found == [
        "flow.input.count",
        "flow.input.name",
        "tasks.a.output.pages",
        "tasks.b.output",
    ]


def test_expressions_in_yields_the_inside_of_a_whole_string_expression() -> None:
    assert list(expressions_in("  ${{ tasks.a.output }}  ")) == [" tasks.a.output "]


def test_expressions_in_finds_nothing_in_plain_values() -> None:
    assert list(expressions_in({"a": ["no expression", 1, {"b": "$ {{ nope }}"}]})) == []


# --- referenced_tasks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "tasks"),
    [
        ("tasks.a.output", ["a"]),
        ("tasks.a.output.pages", ["a"]),
        ("  tasks.a.output.meta.lang  ", ["a"]),
        ("tasks.a", ["a"]),
        ("tasks.a.output[0]", ["a"]),
        ('tasks."my task".output', ["my task"]),
        ("flow.input", []),
        ("flow.input.name", []),
        ("`3`", []),
    ],
)
def test_referenced_tasks_of_simple_paths(source: str, tasks: list[str]) -> None:
    assert referenced_tasks(source) == tasks


def test_referenced_tasks_of_a_multi_select_dict_names_every_task() -> None:
    source = "{x: tasks.a.output, y: tasks.b.output.n, z: flow.input}"

    assert sorted(referenced_tasks(source)) == ["a", "b"]


def test_referenced_tasks_of_a_multi_select_list_names_every_task() -> None:
    assert sorted(referenced_tasks("[tasks.a.output, tasks.c.output]")) == ["a", "c"]


def test_referenced_tasks_of_an_or_expression_names_both_sides() -> None:
    assert sorted(referenced_tasks("tasks.a.output.x || tasks.b.output")) == ["a", "b"]


def test_referenced_tasks_looks_inside_function_arguments() -> None:
    assert referenced_tasks("length(tasks.a.output.items)") == ["a"]


def test_referenced_tasks_treats_sort_by_key_expression_as_relative() -> None:
    assert referenced_tasks("sort_by(tasks.a.output.items, &tasks)") == ["a"]
    assert referenced_tasks("max_by(flow.input.rows, &tasks.b)") == []


@pytest.mark.parametrize(
    ("source", "tasks"),
    [
        ("tasks.a.output.items[*].name", ["a"]),
        ("tasks.a.output.items[*].tasks", ["a"]),
        ("tasks.a.output.*.tasks", ["a"]),
        ("tasks.a.output[].tasks", ["a"]),
        ("tasks.a.output | tasks", ["a"]),
        ("tasks.a.output.items[?tasks.b]", ["a"]),
        ("flow.input.list[?x > `1`].tasks", []),
        ("flow.input.tasks", []),
    ],
)
def test_fields_after_a_projection_or_pipe_are_not_roots(source: str, tasks: list[str]) -> None:
    assert referenced_tasks(source) == tasks


@pytest.mark.parametrize(
    "source",
    ["tasks", "tasks.*.output", "tasks[0]", "tasks[*].output", "tasks | a"],
)
def test_referenced_tasks_requires_a_task_name(source: str) -> None:
    with pytest.raises(ExpressionError, match="name a task"):
        referenced_tasks(source)


@pytest.mark.parametrize("source", ["flwo.input", "input.name", "output"])
def test_referenced_tasks_rejects_unknown_roots(source: str) -> None:
    root = source.split(".")[0]

    with pytest.raises(ExpressionError, match=f"not '{root}'"):
        referenced_tasks(source)


@pytest.mark.parametrize("source", ["tasks.a.output.[", "tasks.a.output[?", "{x: }", ""])
def test_referenced_tasks_rejects_syntax_errors(source: str) -> None:
    with pytest.raises(ExpressionError, match="is not a valid expression"):
        referenced_tasks(source)


@pytest.mark.parametrize("source", ["@.tasks.b.output", "*.b.output", "@.flwo"])
def test_reading_the_root_through_the_current_node_is_rejected(source: str) -> None:
    # Each of these reads the root context (and here `tasks.b`) without naming `flow` or
    # `tasks.NAME`, so the task it reads would silently get no edge in the DAG.
    with pytest.raises(ExpressionError):
        referenced_tasks(source)


# --- resolve: whole-string expressions keep their type ----------------------------------------


def test_whole_string_expression_keeps_an_int(context: dict[str, Any]) -> None:
    resolved = resolve("${{ tasks.a.output.pages }}", context)

    assert resolved == 10
    assert type(resolved) is int


def test_whole_string_expression_keeps_a_dict(context: dict[str, Any]) -> None:
    assert resolve("${{ tasks.a.output.meta }}", context) == {"lang": "en", "draft": False}


def test_whole_string_expression_keeps_a_list(context: dict[str, Any]) -> None:
    assert resolve("${{ tasks.a.output.items[*].name }}", context) == ["b", "a"]


def test_whole_string_expression_keeps_a_bool(context: dict[str, Any]) -> None:
    assert resolve('${{ tasks."my task".output.ok }}', context) is True


def test_whole_string_expression_keeps_none(context: dict[str, Any]) -> None:
    assert resolve("${{ tasks.a.output.nothing }}", context) is None


def test_whole_string_expression_may_be_surrounded_by_whitespace(
    context: dict[str, Any],
) -> None:
    assert resolve("  ${{tasks.a.output.pages}}\n", context) == 10


def test_whole_string_expression_can_use_functions(context: dict[str, Any]) -> None:
    assert resolve("${{ length(tasks.a.output.items) }}", context) == 2
    assert resolve("${{ sort_by(tasks.a.output.items, &name)[0].name }}", context) == "a"


@pytest.mark.parametrize(
    "template",
    [
        "${{ flow.input.missing }}",
        "${{ tasks.a.output.meta.missing.deeper }}",
        "${{ tasks.ghost.output }}",
        "${{ flow.input.list[5] }}",
    ],
)
def test_missing_paths_resolve_to_none(template: str, context: dict[str, Any]) -> None:
    assert resolve(template, context) is None


# --- resolve: interpolation -------------------------------------------------------------------


def test_expression_inside_text_is_interpolated(context: dict[str, Any]) -> None:
    assert resolve("pages: ${{ tasks.a.output.pages }}", context) == "pages: 10"


def test_several_expressions_in_one_string_are_each_interpolated(
    context: dict[str, Any],
) -> None:
    template = "${{ flow.input.name }} has ${{ tasks.a.output.pages }} pages"

    assert resolve(template, context) == "report has 10 pages"


def test_interpolated_strings_are_inserted_without_quotes(context: dict[str, Any]) -> None:
    assert resolve("name=${{ flow.input.name }}", context) == "name=report"


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("meta=${{ tasks.a.output.meta }}", 'meta={"draft": false, "lang": "en"}'),
        ("names=${{ tasks.a.output.items[*].name }}", 'names=["b", "a"]'),
        ("value=${{ tasks.a.output.nothing }}", "value=null"),
        ("missing=${{ flow.input.missing }}", "missing=null"),
        ('ok=${{ tasks."my task".output.ok }}', "ok=true"),
    ],
)
def test_interpolated_non_strings_are_written_as_json(
    template: str, text: str, context: dict[str, Any]
) -> None:
    assert resolve(template, context) == text


def test_nested_templates_are_resolved_everywhere(context: dict[str, Any]) -> None:
    template = {
        "pages": "${{ tasks.a.output.pages }}",
        "summary": ["${{ flow.input.name }}", {"line": "count ${{ flow.input.count }}"}],
        "fixed": 7,
    }

    assert resolve(template, context) == {
        "pages": 10,
        "summary": ["report", {"line": "count 3"}],
        "fixed": 7,
    }


def test_resolve_does_not_modify_the_template(context: dict[str, Any]) -> None:
    template = {"a": ["${{ tasks.a.output.pages }}"], "b": "x ${{ flow.input.name }}"}
    original = copy.deepcopy(template)

    resolve(template, context)

    assert template == original


@pytest.mark.parametrize(
    "template",
    ["plain text", "", "$ {{ flow.input.name }}", "{{ flow.input.name }}", "cost: ${{ unclosed"],
)
def test_strings_without_a_complete_expression_are_untouched(
    template: str, context: dict[str, Any]
) -> None:
    assert resolve(template, context) == template


@pytest.mark.parametrize("template", [None, 0, 2.5, True, False])
def test_non_string_scalars_are_untouched(template: object, context: dict[str, Any]) -> None:
    assert resolve(template, context) is template


def test_evaluation_errors_are_expression_errors(context: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match="failed"):
        resolve("${{ length(flow.input.count) }}", context)


def test_invalid_expression_in_a_template_is_an_expression_error(
    context: dict[str, Any],
) -> None:
    with pytest.raises(ExpressionError, match="is not a valid expression"):
        resolve("value: ${{ tasks.a.output.[ }}", context)


# --- properties -------------------------------------------------------------------------------


@PROPERTY
@given(templates_without_expressions)
def test_templates_without_expressions_resolve_to_themselves(template: Any) -> None:
    assert resolve(template, {"flow": {"input": {}}, "tasks": {}}) == template


@PROPERTY
@given(json_values)
def test_whole_string_expression_returns_the_value_unchanged(value: Any) -> None:
    resolved = resolve("${{ flow.input.value }}", {"flow": {"input": {"value": value}}})

    assert resolved == value
    assert type(resolved) is type(value)


@PROPERTY
@given(json_values, plain_text, plain_text)
def test_embedded_expression_is_text_for_strings_and_json_otherwise(
    value: Any, before: str, after: str
) -> None:
    template = f"{before}#${{{{ flow.input.value }}}}#{after}"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    resolved = resolve(template, {"flow": {"input": {"value": value}}})

    assert resolved == f"{before}#{text}#{after}"
