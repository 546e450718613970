"""The task types flow definitions may name, as flows sees them.

Flows validates definitions against the task-type registry, which lives with the executors in the
executions app (executions.executors). So that flows imports nothing of executions (the layers in
pyproject.toml), the executions app registers its registry here when Django starts
(ExecutionsConfig.ready), and flows asks here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured


class TaskType(Protocol):
    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with `config` as (config key or "", message); empty when it is fine."""
        ...


_registry: Callable[[], Mapping[str, TaskType]] | None = None


def register(registry: Callable[[], Mapping[str, TaskType]]) -> None:
    """`registry()` gives every task type by name (asked each time: settings may change)."""
    global _registry
    _registry = registry


def task_types() -> Mapping[str, TaskType]:
    if _registry is None:
        raise ImproperlyConfigured(
            "no task types are registered: the 'executions' app registers them when Django "
            "starts; is it in INSTALLED_APPS?"
        )
    return _registry()
