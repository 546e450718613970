"""Task types. Each executor checks its `config` when a flow is saved and runs one attempt.

Built-ins: transform, python, http, human. Settings add more:
FLOWPLATFORM_EXECUTORS = {"name": "dotted.path.Class"} (a subclass of Executor).
Nothing a tenant writes in a flow definition can run code or reach a host that settings do not
allow-list: python callables must live under FLOWPLATFORM_PYTHON_CALLABLES prefixes, http hosts
must be in FLOWPLATFORM_HTTP_ALLOWED_HOSTS, and both are checked at save time and again at run
time (settings may have changed since).

The public names (what FLOWPLATFORM_EXECUTORS classes and python callables use) are importable
from here: `executions.executors.Executor`, `ExecutorResult`, `TaskFailed`, `default_summary`.
"""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from executions.executors.base import Executor, ExecutorResult, TaskFailed, default_summary
from executions.executors.builtin import HumanExecutor, PythonExecutor, TransformExecutor
from executions.executors.http import HttpExecutor

__all__ = [
    "BUILTIN_EXECUTORS",
    "Executor",
    "ExecutorResult",
    "HttpExecutor",
    "HumanExecutor",
    "PythonExecutor",
    "TaskFailed",
    "TransformExecutor",
    "default_summary",
    "executors",
    "get_executor",
]


BUILTIN_EXECUTORS: dict[str, type[Executor]] = {
    executor.name: executor
    for executor in (TransformExecutor, PythonExecutor, HttpExecutor, HumanExecutor)
}


def executors() -> dict[str, Executor]:
    """Every registered task type, built-ins first, then FLOWPLATFORM_EXECUTORS (read-only)."""
    return _registry(tuple(sorted(settings.FLOWPLATFORM_EXECUTORS.items())))


@lru_cache(maxsize=8)
def _registry(configured: tuple[tuple[str, str], ...]) -> dict[str, Executor]:
    # Executors are stateless, so one instance each serves every call; keyed by the setting's
    # value, a changed FLOWPLATFORM_EXECUTORS (tests, reloads) gets its own registry.
    registry: dict[str, Executor] = {name: cls() for name, cls in BUILTIN_EXECUTORS.items()}
    for name, path in configured:
        cls = import_string(path)
        if not (isinstance(cls, type) and issubclass(cls, Executor)):
            raise TypeError(f"FLOWPLATFORM_EXECUTORS['{name}'] = {path} is not an Executor")
        registry[name] = cls()
    return registry


def get_executor(name: str) -> Executor:
    return executors()[name]
