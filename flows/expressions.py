"""`${{ … }}` expressions in task inputs: JMESPath over {flow: {input}, tasks: {NAME: {output}}}.

A string that is one whole expression keeps the value's type (`"${{ tasks.a.output.pages }}"` →
10); expressions embedded in longer text are interpolated as text. Pure functions, no ORM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
WHOLE = re.compile(r"^\s*\$\{\{(.*)\}\}\s*$", re.DOTALL)

# Node types whose later children are evaluated against the left side's result, not the root.
_RELATIVE_AFTER_FIRST = {
    "subexpression",
    "index_expression",
    "projection",
    "value_projection",
    "filter_projection",
    "flatten",
    "pipe",
}


class ExpressionError(ValueError):
    pass


# Deepest nesting of (…), […] and {…} an expression may have. jmespath's parser recurses once
# per level, so a few hundred levels would exhaust Python's stack.
MAX_EXPRESSION_NESTING = 64
_QUOTES = {"'", '"', "`"}


def nesting_depth(source: str) -> int:
    """How deeply (…), […] and {…} nest in a JMESPath expression, outside quoted literals."""
    depth = deepest = 0
    quote = None
    escaped = False
    for char in source:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in _QUOTES:
            quote = char
        elif char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def compile_jmespath(source: str) -> ParsedResult:
    """jmespath.compile, refusing an expression nested more deeply than the parser can follow
    (ExpressionError); a syntax error is jmespath's JMESPathError."""
    depth = nesting_depth(source)
    if depth > MAX_EXPRESSION_NESTING:
        raise ExpressionError(
            f"is nested {depth} levels deep; at most {MAX_EXPRESSION_NESTING} are allowed"
        )
    try:
        return jmespath.compile(source)
    except RecursionError:
        raise ExpressionError("is nested too deeply to be read") from None


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> ParsedResult:
    try:
        return compile_jmespath(source.strip())
    except ExpressionError as exc:
        raise ExpressionError(f"'{_shown(source)}' {exc}") from None
    except JMESPathError as exc:
        raise ExpressionError(f"'{source.strip()}' is not a valid expression: {exc}") from None


def _shown(source: str) -> str:
    source = source.strip()
    return source if len(source) <= 80 else f"{source[:77]}..."


def expressions_in(value: Any) -> Iterator[str]:
    """Every expression source inside a JSON-like value (strings in dicts and lists)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            whole = WHOLE.match(item)
            if whole and "${{" not in whole.group(1):
                yield whole.group(1)
            else:
                yield from (match.group(1) for match in EXPRESSION.finditer(item))
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# What a looped task's input may read under `loop`, by kind of loop (flows.loops).
LOOP_FIELDS = {"for_each": ("item", "index"), "until": ("previous", "index")}


def referenced_tasks(
    source: str, *, loop: str | None = None, roots: frozenset[str] = frozenset({"flow"})
) -> list[str]:
    """Tasks an expression reads (`tasks.NAME…`). Raises ExpressionError for a bad expression.

    Only `flow…` and `tasks.NAME…` may be read from the root (`roots`, and `loop.…` in a
    looped task: `loop` is its kind), so a typo is an error at save time and every task an
    expression depends on is known statically (it becomes an edge of the DAG).
    """
    parsed = compile_expression(source).parsed
    found: list[str] = []
    stack: list[tuple[dict, bool]] = [(parsed, True)]
    while stack:
        node, at_root = stack.pop()
        kind, children = node["type"], node.get("children", [])
        if kind in {"current", "identity"} and at_root:
            raise ExpressionError(
                f"'{source.strip()}': read flow.input… or tasks.NAME.output… by name, "
                "not the whole context (@ or *)"
            )
        if kind == "field" and at_root:
            if node["value"] == "tasks":
                raise ExpressionError(f"'{source.strip()}': name a task, as tasks.NAME.output")
            if node["value"] == "loop":
                raise _loop_error(source, loop)
            if node["value"] not in roots:
                raise ExpressionError(
                    f"'{source.strip()}': expressions read "
                    f"{' or '.join(_ROOT_WORDS.get(r, r + '…') for r in sorted(roots))} or "
                    f"tasks.NAME.output…, not '{node['value']}'"
                )
            continue
        if kind == "subexpression" and at_root and children[0] == _field("loop"):
            if loop is None or children[1] != _field(children[1].get("value")):
                raise _loop_error(source, loop)
            if children[1]["value"] not in LOOP_FIELDS[loop]:
                raise _loop_error(source, loop)
            continue
        if kind == "subexpression" and at_root and children[0] == _field("tasks"):
            if children[1]["type"] != "field":
                raise ExpressionError(f"'{source.strip()}': name a task, as tasks.NAME.output")
            found.append(children[1]["value"])
            continue
        if kind in _RELATIVE_AFTER_FIRST:
            stack.extend((child, i == 0 and at_root) for i, child in enumerate(children))
        elif kind == "expref":
            stack.extend((child, False) for child in children)
        else:
            stack.extend((child, at_root) for child in children)
    return found


_ROOT_WORDS = {"flow": "flow.input…", "output": "output…"}


def _loop_error(source: str, loop: str | None) -> ExpressionError:
    if loop is None:
        return ExpressionError(
            f"'{source.strip()}': loop.… is read only in a task with for_each or loop"
        )
    fields = " or ".join(f"loop.{name}" for name in LOOP_FIELDS[loop])
    return ExpressionError(f"'{source.strip()}': a {loop} task's input reads {fields}")


def _field(name: str) -> dict:
    return {"type": "field", "children": [], "value": name}


def resolve(template: Any, context: dict[str, Any]) -> Any:
    """The template with every expression evaluated against `context`."""
    if isinstance(template, dict):
        return {key: resolve(value, context) for key, value in template.items()}
    if isinstance(template, list):
        return [resolve(value, context) for value in template]
    if not isinstance(template, str) or "${{" not in template:
        return template
    whole = WHOLE.match(template)
    if whole and "${{" not in whole.group(1):
        return _evaluate(whole.group(1), context)
    return EXPRESSION.sub(lambda m: _as_text(_evaluate(m.group(1), context)), template)


def _evaluate(source: str, context: dict[str, Any]) -> Any:
    try:
        return compile_expression(source).search(context)
    except JMESPathError as exc:
        raise ExpressionError(f"'{source.strip()}' failed: {exc}") from None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
