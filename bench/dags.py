"""The flows the benchmarks run: chain, fan-out/fan-in and layered DAGs of trivial tasks.

Every task is the timed `transform` (bench.executors) and passes on a number `v`: a chain task
copies its upstream's, the others take the larger of their two upstream values (with
`task_type="bench_python"`, the impure task, each adds one to it). A correction
publishes a larger `v` than any task has, so every task downstream of it gets a new input and
really runs again (no early cutoff), which is what the re-execution figures are about.
"""

from __future__ import annotations

from typing import Any

from bench.common import BENCH_EXECUTOR

SHAPES = ("chain", "fanout", "layered")
LAYER_WIDTH = 10
MAX_OF_TWO = {"expression": "{v: max([a, b])}"}


def _ref(task: str) -> str:
    return "${{ tasks.%s.output.v }}" % task  # noqa: UP031 - braces of the expression syntax


FLOW_INPUT = {"v": "${{ flow.input.v }}"}


def definition(shape: str, size: int, task_type: str = BENCH_EXECUTOR) -> dict[str, Any]:
    """The flow definition of `size` tasks named t0 … t{size-1}, each of `task_type`."""

    def task(index: int, *, config: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        # bench_python takes the larger of its inputs itself; the transform needs the expression.
        if config and task_type == BENCH_EXECUTOR:
            fields["config"] = config
        return {"name": f"t{index}", "type": task_type, **fields}

    if shape == "chain":
        tasks = [task(0, input=FLOW_INPUT)] + [
            task(i, input={"v": _ref(f"t{i - 1}")}) for i in range(1, size)
        ]
    elif shape == "fanout":
        # t0 → t1, t2 → each fans out to half the leaves → t{size-1} joins every leaf.
        if size < 6:
            raise ValueError("a fan-out/fan-in flow needs at least 6 tasks")
        leaves = range(3, size - 1)
        tasks = [
            task(0, input=FLOW_INPUT),
            task(1, input={"v": _ref("t0")}),
            task(2, input={"v": _ref("t0")}),
            *(task(i, input={"v": _ref(f"t{1 + (i - 3) * 2 // len(leaves)}")}) for i in leaves),
            task(
                size - 1,
                depends_on=[f"t{i}" for i in leaves],
                input={"a": _ref("t1"), "b": _ref("t2")},
                config=MAX_OF_TWO,
            ),
        ]
    elif shape == "layered":
        # LAYER_WIDTH tasks per layer, each reading two tasks of the layer before.
        tasks = []
        for i in range(size):
            layer, position = divmod(i, LAYER_WIDTH)
            if layer == 0:
                tasks.append(task(i, input=FLOW_INPUT))
                continue
            a, b = ((layer - 1) * LAYER_WIDTH + (position + k) % LAYER_WIDTH for k in (0, 3))
            tasks.append(task(i, input={"a": _ref(f"t{a}"), "b": _ref(f"t{b}")}, config=MAX_OF_TWO))
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    return {"name": f"bench-{shape}-{size}", "tasks": tasks}


def correction_target(shape: str, size: int, descendants: Any) -> str:
    """The task near the top whose correction makes about half the flow stale: the middle of a
    chain, the root's first child in a fan-out, and in a layered DAG the first task of the
    layer whose dependents (`descendants(name)`, the product's DAG) come nearest to half."""
    if shape == "chain":
        return f"t{size // 2}"
    if shape == "fanout":
        return "t1"
    layers = range((size - 1) // LAYER_WIDTH + 1)
    half = size // 2
    low, high = 0, len(layers) - 1
    while low < high:  # the number of dependents falls as the layer deepens
        middle = (low + high) // 2
        if len(descendants(f"t{middle * LAYER_WIDTH}")) > half:
            low = middle + 1
        else:
            high = middle
    candidates = {f"t{layer * LAYER_WIDTH}" for layer in (low - 1, low) if layer >= 0}
    return min(sorted(candidates), key=lambda name: abs(len(descendants(name)) - half))
