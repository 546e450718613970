"""What changed between two versions of a flow, task by task (pure): the basis of an upgrade.

A task is *changed* when anything that can change its output changed: its type, config, input
template, dependencies, `rerun` policy, loop definition (`for_each`, `loop`, `tolerate_failures`)
or its declared `version:` string (a code change the YAML cannot show). Its description,
`retries` and `max_parallel` decide how and how often it runs, not what it produces, so they do
not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowplatform.canonical import same_json
from flows.definitions import FlowSpec, TaskSpec

# The fields compared, in the order a change lists them (the YAML's names).
FIELDS = (
    "type",
    "config",
    "input",
    "depends_on",
    "rerun",
    "for_each",
    "loop",
    "tolerate_failures",
    "version",
)


def defining(task: TaskSpec) -> dict[str, Any]:
    """The parts of a task's definition that can change its output, as plain data."""
    loop = None
    if task.until is not None:
        loop = {"until": task.until, "max_iterations": task.max_iterations}
    return {
        "type": task.type,
        "config": task.config,
        "input": task.input,
        "depends_on": sorted(task.upstream),
        "rerun": task.rerun,
        "for_each": task.for_each,
        "loop": loop,
        "tolerate_failures": task.tolerate_failures,
        "version": task.version,
    }


def changed_fields(old: TaskSpec, new: TaskSpec) -> list[str]:
    """Which of FIELDS differ between two definitions of one task (none: unchanged)."""
    before, after = defining(old), defining(new)
    return [name for name in FIELDS if not same_json(before[name], after[name])]


@dataclass(frozen=True)
class DefinitionChange:
    """Version A → version B of a flow, as an execution pinned to A sees it."""

    changed: dict[str, list[str]]  # task → its changed fields, in B's dependency order
    added: list[str]  # tasks only B has, in B's dependency order
    removed: list[str]  # tasks only A has, in A's dependency order

    @property
    def empty(self) -> bool:
        return not (self.changed or self.added or self.removed)

    def as_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "added": self.added, "removed": self.removed}


def compare(old: FlowSpec, new: FlowSpec) -> DefinitionChange:
    """Task by task: changed, added and removed. O(tasks)."""
    changed = {}
    for name in new.dag.in_order(n for n in new.tasks if n in old.tasks):
        fields = changed_fields(old.tasks[name], new.tasks[name])
        if fields:
            changed[name] = fields
    return DefinitionChange(
        changed=changed,
        added=new.dag.in_order(n for n in new.tasks if n not in old.tasks),
        removed=old.dag.in_order(n for n in old.tasks if n not in new.tasks),
    )


def incompatibilities(old: FlowSpec, new: FlowSpec, ran: set[str]) -> list[tuple[str, str]]:
    """Why version `new` cannot take an execution's work under `old` (`ran`: the tasks with
    attempts): (task, reason) pairs, empty when it can. A task that ran and whose loop kind
    changes (no loop, for_each, until) has attempts that cannot be its new iterations, or
    iterations that cannot be its one attempt; give the task a new name instead (the old one
    is then removed, the new one added)."""
    found = []
    for name in new.dag.in_order(n for n in new.tasks if n in old.tasks and n in ran):
        before, after = old.tasks[name].loop, new.tasks[name].loop
        if before != after:
            found.append(
                (
                    name,
                    f"task '{name}' has attempts as {_kind(before)} and is {_kind(after)} in "
                    "the new version; its attempts cannot carry over (give the new task another "
                    "name: the old one is then removed and the new one runs)",
                )
            )
    return found


def _kind(loop: str | None) -> str:
    return {"for_each": "a for_each loop", "until": "an until loop"}.get(loop or "", "a task")


def nearest_changed(new: FlowSpec, change: DefinitionChange) -> dict[str, str]:
    """Every task that goes stale in an upgrade (a changed task and everything downstream of
    it in the new version) → the changed task its staleness comes from: itself, else the
    nearest changed ancestor (of several, the latest in dependency order). O(V + E)."""
    if not change.changed:
        return {}
    order = new.dag.in_order(new.dag.descendants(*change.changed) | set(change.changed))
    position = {name: i for i, name in enumerate(order)}
    cause: dict[str, str] = {}
    for name in order:
        if name in change.changed:
            cause[name] = name
            continue
        parents = [cause[p] for p in new.tasks[name].upstream if p in cause]
        cause[name] = max(parents, key=position.__getitem__)
    return cause
