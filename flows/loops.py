"""Loops in a flow definition: what `for_each`, `loop: {until, max_iterations}`, `max_parallel`
and `tolerate_failures` mean, their checks at save time, and the pure evaluations the engine
makes at run time (the items, an iteration's context, the `until` condition). No ORM.

A `for_each` task runs once per item of a list (a literal list, or one whole expression that
gives a list); its input reads `${{ loop.item }}` and `${{ loop.index }}`. An `until` task runs
again, iteration after iteration, until its condition over the iteration's own `output` holds;
its input reads `${{ loop.previous.output }}` (null on the first) and `${{ loop.index }}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from flows.expressions import WHOLE, ExpressionError, compile_expression, referenced_tasks

DEFAULT_MAX_ITERATIONS = 100


@dataclass(frozen=True)
class LoopDefinition:
    """A task's loop as checked: `kind` is "for_each", "until" or None; `reads` the tasks its
    `for_each` expression reads (edges of the DAG)."""

    kind: str | None = None
    reads: tuple[str, ...] = ()
    for_each: Any = None
    until: str | None = None
    max_iterations: int | None = None
    max_parallel: int | None = None
    tolerate_failures: bool = False


def max_iterations_limit() -> int:
    return settings.FLOWPLATFORM_MAX_ITERATIONS


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check(
    task: dict[str, Any],
    label: str,
    where: tuple[str | int, ...],
    add: Callable[..., None],
    *,
    limits: bool = True,
) -> LoopDefinition:
    """The task's loop keys, each problem reported through `add(where, message, kind)`.
    `limits`: check FLOWPLATFORM_MAX_ITERATIONS too (at save time; a stored version meets a
    lowered limit at run time instead, as a failure of the task)."""
    limit = max_iterations_limit() if limits else 2**31 - 1
    has_for_each, has_loop = "for_each" in task, "loop" in task
    if has_for_each and has_loop:
        add(
            (*where, "loop"),
            f"{label}: a task has for_each or loop, not both (for_each runs once per item, "
            "loop runs until a condition holds)",
        )
        return LoopDefinition()
    kind = "for_each" if has_for_each else "until" if has_loop else None
    for key in ("max_parallel", "tolerate_failures"):
        if key in task and kind != "for_each":
            add((*where, key), f"{label}: '{key}' applies only to a task with for_each")
    max_parallel = task.get("max_parallel")
    if max_parallel is not None and not _positive(max_parallel):
        add((*where, "max_parallel"), f"{label}: 'max_parallel' must be an integer of 1 or more")
        max_parallel = None
    tolerate = task.get("tolerate_failures", False)
    if not isinstance(tolerate, bool):
        add((*where, "tolerate_failures"), f"{label}: 'tolerate_failures' must be true or false")
        tolerate = False
    if kind == "for_each":
        return _check_for_each(task["for_each"], label, where, add, limit, max_parallel, tolerate)
    if kind == "until":
        return _check_until(task["loop"], label, where, add, limit)
    return LoopDefinition()


def _check_for_each(
    value: Any,
    label: str,
    where: tuple[str | int, ...],
    add: Callable[..., None],
    limit: int,
    max_parallel: int | None,
    tolerate: bool,
) -> LoopDefinition:
    place = (*where, "for_each")
    reads: list[str] = []
    if isinstance(value, list):
        if len(value) > limit:
            add(
                place,
                f"{label}: for_each lists {len(value)} items, more than the limit of {limit} "
                "(FLOWPLATFORM_MAX_ITERATIONS)",
                "limit_exceeded",
            )
    elif isinstance(value, str) and (whole := WHOLE.match(value)) and "${{" not in whole[1]:
        try:
            reads = referenced_tasks(whole[1])
        except ExpressionError as exc:
            add(place, f"{label}: for_each {exc}", "invalid_expression")
    else:
        add(
            place,
            f"{label}: for_each must be a list or one expression giving a list, as "
            '"${{ tasks.NAME.output.items }}"; not '
            f"{_shown(value)}",
        )
        value = None
    return LoopDefinition(
        "for_each" if value is not None else None,
        tuple(reads),
        for_each=value,
        max_parallel=max_parallel,
        tolerate_failures=tolerate,
    )


def _check_until(
    value: Any, label: str, where: tuple[str | int, ...], add: Callable[..., None], limit: int
) -> LoopDefinition:
    place = (*where, "loop")
    if not isinstance(value, dict):
        add(
            place,
            f"{label}: loop must be a mapping, as "
            '{until: "${{ output.done }}", max_iterations: 10}',
        )
        return LoopDefinition()
    for key in sorted(set(value) - {"until", "max_iterations"}):
        add((*place, key), f"{label}: unknown key 'loop.{key}' (allowed: max_iterations, until)")
    until = value.get("until")
    whole = WHOLE.match(until) if isinstance(until, str) else None
    if whole is None or "${{" in whole[1]:
        add(
            (*place, "until"),
            f"{label}: loop.until must be one expression over the iteration's output, as "
            '"${{ output.approved }}"',
            "required" if until is None else "invalid_expression",
        )
        until = None
    else:
        try:
            if referenced_tasks(whole[1], loop="until", roots=frozenset({"output"})):
                raise ExpressionError(
                    f"'{whole[1].strip()}': the condition reads the iteration's output… and "
                    "loop.index, not other tasks (read them in the task's input)"
                )
        except ExpressionError as exc:
            add((*place, "until"), f"{label}: loop.until {exc}", "invalid_expression")
            until = None
    maximum = value.get("max_iterations", min(DEFAULT_MAX_ITERATIONS, limit))
    if not _positive(maximum) or maximum > limit:
        add(
            (*place, "max_iterations"),
            f"{label}: loop.max_iterations must be an integer from 1 to {limit} "
            "(FLOWPLATFORM_MAX_ITERATIONS)",
            "limit_exceeded" if _positive(maximum) else "invalid_definition",
        )
        maximum = 1
    if until is None:
        return LoopDefinition()
    return LoopDefinition("until", (), until=until, max_iterations=maximum)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an object"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# Run time: pure evaluations over plain data ---------------------------------------------------


def for_each_context(item: Any, index: int) -> dict[str, Any]:
    """What `loop` reads in iteration `index` of a for_each task."""
    return {"item": item, "index": index}


def until_context(index: int, previous_output: Any) -> dict[str, Any]:
    """What `loop` reads in iteration `index` of an until task."""
    return {"index": index, "previous": {"output": previous_output}}


def until_holds(until: str, output: Any, index: int) -> bool:
    """Does the loop's condition hold on iteration `index`'s output? JMESPath truth: false,
    null and empty strings, lists and objects are false."""
    source = WHOLE.match(until)[1]  # type: ignore[index]
    value = compile_expression(source).search(
        {"output": output, "loop": until_context(index, None) | {"index": index}}
    )
    return value not in (False, None, "", [], {})


class LoopError(ValueError):
    """The items of a for_each cannot be had (not a list, or too many): the task fails."""


def items_of(value: Any) -> list[Any]:
    """A for_each's resolved value as its list of items; LoopError names what is wrong."""
    limit = max_iterations_limit()
    if not isinstance(value, list):
        raise LoopError(f"for_each gave {_json_type(value)}, not a list: {_shown(value)}")
    if len(value) > limit:
        raise LoopError(
            f"for_each gave {len(value)} items, more than the limit of {limit} "
            "(FLOWPLATFORM_MAX_ITERATIONS)"
        )
    return value
