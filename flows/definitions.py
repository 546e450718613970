"""Reading a flow definition: YAML text → plain data, refusing what could hurt the service."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import yaml
from django.conf import settings

from flowplatform import tasktypes
from flowplatform.exceptions import InvalidInput
from flows import loops
from flows.dag import CycleError, Dag
from flows.expressions import ExpressionError, expressions_in, referenced_tasks


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: a few aliased lines can expand into gigabytes of JSON."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in flow definitions", event.start_mark
            )
        return super().compose_node(parent, index)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput.field("definition", message, "invalid_definition")


def parse_definition(text: str) -> dict[str, Any]:
    limit = settings.FLOWPLATFORM_MAX_DEFINITION_BYTES
    if len(text.encode()) > limit:
        raise _invalid(f"the definition is larger than {limit} bytes")
    try:
        parsed = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
        if not isinstance(parsed, dict):
            raise _invalid(
                "the definition must be a YAML mapping (e.g. 'name: …' and 'tasks: […]')"
            )
        return _json_compatible(parsed)
    except yaml.YAMLError as exc:
        raise _invalid(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise _invalid("the definition is nested too deeply") from None


def _json_compatible(value: Any) -> Any:
    """YAML also has dates, sets and non-string keys; stored definitions must be plain JSON."""
    if isinstance(value, dict):
        return {str(key): _json_compatible(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_compatible(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


FLOW_KEYS = frozenset({"name", "description", "tasks"})
TASK_KEYS = frozenset(
    {
        "name",
        "type",
        "description",
        "depends_on",
        "input",
        "config",
        "retries",
        "rerun",
        "for_each",
        "loop",
        "max_parallel",
        "tolerate_failures",
        "version",
    }
)
LOOP_KEYS = frozenset({"until", "max_iterations"})
MAX_RETRIES = 100
# When a stale task is re-executed: `on_input_change` reuses its previous completed attempt if
# its freshly resolved input is the same (early cutoff); `always` runs it again regardless.
RERUN_POLICIES = ("on_input_change", "always")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    type: str
    input: Any
    config: dict[str, Any]
    retries: int
    upstream: tuple[str, ...]  # depends_on plus the tasks named in input expressions
    rerun: str = "on_input_change"
    # Loops (flows.loops): `for_each` (a list, or an expression giving one) runs the task once
    # per item; `until` (an expression over the iteration's `output`) runs it again until it
    # holds, at most `max_iterations` times.
    for_each: Any = None
    until: str | None = None
    max_iterations: int | None = None
    max_parallel: int | None = None
    tolerate_failures: bool = False
    # A code version the YAML cannot show (flows.changes): bumping it marks the task changed.
    version: str | None = None

    @property
    def loop(self) -> str | None:
        """ "for_each", "until", or None for a task without a loop."""
        if self.for_each is not None:
            return "for_each"
        return "until" if self.until is not None else None


@dataclass(frozen=True)
class FlowSpec:
    """A validated definition: its tasks by name and their DAG. Every stored version is one."""

    name: str | None
    tasks: dict[str, TaskSpec]
    dag: Dag


class _Problems:
    """Collects every problem of a definition so one answer lists them all."""

    def __init__(self) -> None:
        self.items: list[tuple[tuple[str | int, ...], str, str]] = []

    def add(
        self, where: tuple[str | int, ...], message: str, kind: str = "invalid_definition"
    ) -> None:
        self.items.append((("body", "definition", *where), message, kind))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidInput(self.items)


def _valid_name(name: Any) -> bool:
    return isinstance(name, str) and 1 <= len(name) <= 200 and name.strip() == name and name != ""


def validate_definition(parsed: dict[str, Any], *, check_configs: bool = True) -> FlowSpec:
    """Check a parsed definition; every problem is reported with where it is and what it is.

    `check_configs=False` skips the executors' config checks (allow-lists, imports): a stored
    version was checked when it was saved, and executors check their allow-lists again at run
    time.
    """
    problems = _Problems()
    for key in sorted(set(parsed) - FLOW_KEYS):
        problems.add((key,), f"unknown key '{key}' (allowed: {', '.join(sorted(FLOW_KEYS))})")
    tasks = parsed.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        problems.add(("tasks",), "'tasks' must be a non-empty list of tasks")
        problems.raise_if_any()
    limit = settings.FLOWPLATFORM_MAX_TASKS
    if len(tasks) > limit:
        problems.add(("tasks",), f"{len(tasks)} tasks is more than the limit of {limit}")
        problems.raise_if_any()

    registry = tasktypes.task_types()
    declared = {
        t.get("name") for t in tasks if isinstance(t, dict) and isinstance(t.get("name"), str)
    }
    names: dict[str, int] = {}
    specs: list[TaskSpec] = []
    for index, task in enumerate(tasks):
        where: tuple[str | int, ...] = ("tasks", index)
        if not isinstance(task, dict):
            problems.add(where, f"tasks[{index}] must be a mapping with at least name and type")
            continue
        name = task.get("name")
        label = f"task '{name}'" if isinstance(name, str) else f"tasks[{index}]"
        for key in sorted(set(task) - TASK_KEYS):
            problems.add((*where, key), f"{label}: unknown key '{key}'")
        if "name" not in task:
            problems.add((*where, "name"), f"{label}: 'name' is required")
        elif not _valid_name(name):
            problems.add(
                (*where, "name"),
                f"{label}: a name is 1 to 200 characters without surrounding spaces",
            )
        elif name in names:
            problems.add((*where, "name"), f"{label}: duplicate name (also tasks[{names[name]}])")
        else:
            names[name] = index
        task_type = task.get("type")
        known_type = isinstance(task_type, str) and task_type in registry
        if "type" not in task:
            problems.add(
                (*where, "type"),
                f"{label}: 'type' is required (known: {', '.join(sorted(registry))})",
                "required",
            )
        elif not known_type:
            problems.add(
                (*where, "type"),
                f"{label}: unknown type {task_type!r} (known: {', '.join(sorted(registry))})",
            )
        config = task.get("config", {})
        if not isinstance(config, dict):
            problems.add((*where, "config"), f"{label}: 'config' must be a mapping")
            config = {}
        elif check_configs and known_type:
            for key, message in registry[task_type].check_config(config):
                problems.add(
                    (*where, "config", key) if key else (*where, "config"),
                    f"{label}: config.{key} {message}",
                )
        retries = task.get("retries", 0)
        if (
            isinstance(retries, bool)
            or not isinstance(retries, int)
            or not 0 <= retries <= MAX_RETRIES
        ):
            problems.add(
                (*where, "retries"),
                f"{label}: 'retries' must be an integer from 0 to {MAX_RETRIES}",
            )
            retries = 0
        rerun = task.get("rerun", RERUN_POLICIES[0])
        if rerun not in RERUN_POLICIES:
            problems.add(
                (*where, "rerun"),
                f"{label}: 'rerun' must be one of {', '.join(RERUN_POLICIES)}, not {rerun!r}",
            )
            rerun = RERUN_POLICIES[0]
        version = task.get("version")
        if isinstance(version, int | float) and not isinstance(version, bool):
            version = str(version)
        if version is not None and not (isinstance(version, str) and 1 <= len(version) <= 200):
            problems.add(
                (*where, "version"),
                f"{label}: 'version' must be a string (or number) of 1 to 200 characters",
            )
            version = None
        depends_on = task.get("depends_on", [])
        if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
            problems.add(
                (*where, "depends_on"), f"{label}: 'depends_on' must be a list of task names"
            )
            depends_on = []
        loop = loops.check(task, label, where, problems.add, limits=check_configs)
        read = list(loop.reads)
        for source in expressions_in(task.get("input")):
            try:
                read.extend(referenced_tasks(source, loop=loop.kind))
            except ExpressionError as exc:
                problems.add((*where, "input"), f"{label}: {exc}", "invalid_expression")
        upstream = [*depends_on, *read]
        sources = (
            {name: "depends_on" for name in depends_on}
            | {name: "input" for name in read if name not in depends_on}
            | {name: "for_each" for name in loop.reads if name not in depends_on}
        )
        specs.append(
            TaskSpec(
                name=name if isinstance(name, str) else "",
                type=str(task_type),
                input=task.get("input"),
                config=config,
                retries=retries,
                upstream=tuple(dict.fromkeys(upstream)),
                rerun=rerun,
                for_each=loop.for_each,
                until=loop.until,
                max_iterations=loop.max_iterations,
                max_parallel=loop.max_parallel,
                tolerate_failures=loop.tolerate_failures,
                version=version,
            )
        )
        for parent, field_name in sources.items():
            if parent == name:
                problems.add((*where, field_name), f"{label} depends on itself", "cycle")
            elif parent not in declared:
                problems.add(
                    (*where, field_name),
                    f"{label} depends on '{parent}', which is not a task of this flow",
                    "unknown_task",
                )
    # A cycle among the tasks that are well named is reported with any other problem.
    first = {spec.name: spec for spec in reversed(specs) if spec.name in names}
    valid = [spec for spec in specs if spec is first.get(spec.name)]
    try:
        dag = Dag.build(
            [spec.name for spec in valid],
            {s.name: tuple(p for p in s.upstream if p in names and p != s.name) for s in valid},
        )
    except CycleError as exc:
        first = exc.cycle[0]
        problems.add(
            ("tasks", names[first], "depends_on"),
            f"the tasks form a cycle: {exc} (a → b: b depends on a)",
            "cycle",
        )
    problems.raise_if_any()
    name = parsed.get("name")
    return FlowSpec(
        name=name if isinstance(name, str) else None, tasks={s.name: s for s in specs}, dag=dag
    )


def compile_definition(text: str) -> tuple[dict[str, Any], FlowSpec]:
    """YAML text → (plain data to store, validated spec). Raises InvalidInput listing problems."""
    parsed = parse_definition(text)
    return parsed, validate_definition(parsed)


_SPEC_CACHE: OrderedDict[Any, FlowSpec] = OrderedDict()
_SPEC_CACHE_SIZE = 256


def cached_spec(flow_version_id: Any) -> FlowSpec | None:
    """The FlowSpec of a version already read (spec_for), or None: no query either way."""
    return _SPEC_CACHE.get(flow_version_id)


def spec_for(flow_version: Any) -> FlowSpec:
    """The FlowSpec of a stored FlowVersion; versions are immutable, so it is cached by id."""
    spec = _SPEC_CACHE.get(flow_version.pk)
    if spec is None:
        spec = validate_definition(flow_version.parsed, check_configs=False)
        _SPEC_CACHE[flow_version.pk] = spec
        if len(_SPEC_CACHE) > _SPEC_CACHE_SIZE:
            _SPEC_CACHE.popitem(last=False)
    return spec
