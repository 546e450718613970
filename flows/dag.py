"""The task graph of a flow version: pure Python, no ORM, every operation O(V+E) and iterative.

Edges point from a task to the tasks that depend on it. Orders are deterministic: ties are
broken by the order tasks appear in the definition, so the same definition always gives the
same topological order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property


class CycleError(ValueError):
    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(" → ".join([*cycle, cycle[0]]))


@dataclass(frozen=True)
class Dag:
    """`tasks` in definition order; `upstream[t]` are the tasks t depends on."""

    tasks: tuple[str, ...]
    upstream: Mapping[str, tuple[str, ...]]
    downstream: Mapping[str, tuple[str, ...]] = field(init=False)
    position: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        downstream: dict[str, list[str]] = {task: [] for task in self.tasks}
        for task in self.tasks:
            for parent in self.upstream.get(task, ()):
                downstream[parent].append(task)
        object.__setattr__(self, "downstream", {t: tuple(c) for t, c in downstream.items()})
        object.__setattr__(self, "position", {task: i for i, task in enumerate(self.tasks)})

    @classmethod
    def build(cls, tasks: Sequence[str], upstream: Mapping[str, Iterable[str]]) -> Dag:
        """A Dag, or CycleError naming one cycle in order. Unknown names are a KeyError."""
        known = set(tasks)
        edges: dict[str, tuple[str, ...]] = {}
        for task in tasks:
            parents = tuple(dict.fromkeys(upstream.get(task, ())))
            for parent in parents:
                if parent not in known:
                    raise KeyError(parent)
            edges[task] = parents
        dag = cls(tuple(tasks), edges)
        cycle = dag.find_cycle()
        if cycle:
            raise CycleError(cycle)
        return dag

    def find_cycle(self) -> list[str] | None:
        """One cycle as a list of tasks in dependency order (a → b means b depends on a)."""
        white, grey, black = 0, 1, 2
        colour = dict.fromkeys(self.tasks, white)
        for root in self.tasks:
            if colour[root] != white:
                continue
            path: list[str] = [root]
            stack = [iter(self.downstream[root])]
            colour[root] = grey
            while stack:
                child = next(stack[-1], None)
                if child is None:
                    colour[path.pop()] = black
                    stack.pop()
                elif colour[child] == grey:
                    return path[path.index(child) :]
                elif colour[child] == white:
                    colour[child] = grey
                    path.append(child)
                    stack.append(iter(self.downstream[child]))
        return None

    def topological_order(self) -> list[str]:
        """Kahn's algorithm; among ready tasks the one defined first goes first."""
        return list(self._order)

    @cached_property
    def _order(self) -> tuple[str, ...]:
        indegree = {task: len(self.upstream[task]) for task in self.tasks}
        ready = [self.position[t] for t in self.tasks if indegree[t] == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            task = self.tasks[heapq.heappop(ready)]
            order.append(task)
            for child in self.downstream[task]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    heapq.heappush(ready, self.position[child])
        return tuple(order)

    @cached_property
    def _rank(self) -> dict[str, int]:
        return {task: i for i, task in enumerate(self._order)}

    def _reach(self, start: Iterable[str], edges: Mapping[str, tuple[str, ...]]) -> set[str]:
        seen: set[str] = set()
        queue = deque(start)
        while queue:
            for nxt in edges[queue.popleft()]:
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    def descendants(self, *tasks: str) -> set[str]:
        """Every task that transitively depends on any of `tasks` (excluding them)."""
        return self._reach(tasks, self.downstream) - set(tasks)

    def ancestors(self, *tasks: str) -> set[str]:
        """Every task any of `tasks` transitively depends on (excluding them)."""
        return self._reach(tasks, self.upstream) - set(tasks)

    def ready(self, completed: set[str], started: set[str] = frozenset()) -> list[str]:
        """Tasks not completed or started whose upstream tasks are all completed, in order."""
        return [
            task
            for task in self.tasks
            if task not in completed
            and task not in started
            and all(parent in completed for parent in self.upstream[task])
        ]

    def rank(self, task: str) -> int:
        """The task's place in the topological order."""
        return self._rank[task]

    def in_order(self, tasks: Iterable[str]) -> list[str]:
        """`tasks` sorted by topological order."""
        return sorted(tasks, key=self._rank.__getitem__)
