"""bench/dags.py's flows as plain data for the peers (Prefect, Dagster): which tasks each task
reads or waits for and how it combines what it reads, so they run exactly the same DAGs.

Standard library only: imported inside the peers' virtualenvs, where there is no Django.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bench import dags

FLOW_INPUT = 1  # the `input` of bench.child's `POST /flow-executions`
CORRECTED_VALUE = 1_000_001  # what bench.child's correction (c) publishes
_TASK_REF = re.compile(r"^\$\{\{ tasks\.(\w+)\.output\.v \}\}$")
_FLOW_REF = "${{ flow.input.v }}"


@dataclass(frozen=True)
class Task:
    name: str
    reads: dict[str, str | None]  # input key → upstream task, None for the flow's input
    waits_for: tuple[str, ...]  # upstream tasks it does not read (the fan-in's leaves)
    combine: str  # "copy": v = its one input; "max": v = max(a, b)

    @property
    def upstream(self) -> tuple[str, ...]:
        read = tuple(task for task in self.reads.values() if task)
        return read + tuple(t for t in self.waits_for if t not in read)


def tasks(shape: str, size: int) -> list[Task]:
    """The flow's tasks in definition order, which is a topological order."""
    result = []
    for raw in dags.definition(shape, size)["tasks"]:
        reads = {key: _upstream(ref) for key, ref in raw["input"].items()}
        config = raw.get("config") or {}
        if config not in ({}, dags.MAX_OF_TWO):
            raise ValueError(f"{raw['name']}: a transform the peers do not mirror: {config}")
        combine = "max" if config else "copy"
        if set(reads) != ({"a", "b"} if config else {"v"}):
            raise ValueError(f"{raw['name']}: unexpected inputs {sorted(reads)}")
        waits = tuple(t for t in raw.get("depends_on", ()) if t not in reads.values())
        result.append(Task(raw["name"], reads, waits, combine))
    return result


def _upstream(ref: str) -> str | None:
    if ref == _FLOW_REF:
        return None
    match = _TASK_REF.match(ref)
    if not match:
        raise ValueError(f"an input the peers do not mirror: {ref!r}")
    return match.group(1)


def compute(combine: str, values: dict[str, int]) -> int:
    """What bench_transform outputs as `v` for these input values."""
    return values["v"] if combine == "copy" else max(values["a"], values["b"])


def descendants(graph: list[Task]) -> Any:
    """`descendants(name)`: the tasks downstream of `name` (not itself), as the product's DAG
    answers it."""
    children: dict[str, list[str]] = {task.name: [] for task in graph}
    for task in graph:
        for parent in task.upstream:
            children[parent].append(task.name)

    def below(name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(children[name])
        while todo:
            child = todo.pop()
            if child not in seen:
                seen.add(child)
                todo.extend(children[child])
        return seen

    return below


def correction_target(shape: str, size: int, graph: list[Task]) -> tuple[str, set[str]]:
    """The task that bench.child corrects in (c), and the tasks its correction makes stale."""
    below = descendants(graph)
    name = dags.correction_target(shape, size, below)
    return name, below(name)


def evaluate(graph: list[Task], overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Every task's `v` after a run (with `overrides` as corrected outputs): the check that a
    peer computed what the product computes."""
    overrides = overrides or {}
    values: dict[str, int] = {}
    for task in graph:
        if task.name in overrides:
            values[task.name] = overrides[task.name]
            continue
        inputs = {k: FLOW_INPUT if up is None else values[up] for k, up in task.reads.items()}
        values[task.name] = compute(task.combine, inputs)
    return values


def renamed(graph: list[Task], prefix: str) -> list[Task]:
    """The same flow with every task's name prefixed: a warm-up whose tasks share nothing
    (no cache entry, no stored output) with the measured ones."""
    return [
        Task(
            prefix + task.name,
            {key: None if up is None else prefix + up for key, up in task.reads.items()},
            tuple(prefix + name for name in task.waits_for),
            task.combine,
        )
        for task in graph
    ]
