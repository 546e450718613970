"""The built-in task types that run in the worker's process: transform, python, human."""

from __future__ import annotations

from typing import Any

import jmespath
from django.conf import settings
from django.utils.module_loading import import_string
from jmespath.exceptions import JMESPathError

from executions.executors.base import Executor, ExecutorResult, TaskFailed


class TransformExecutor(Executor):
    """Output = the resolved input, or `config.expression` (JMESPath) applied to it."""

    name = "transform"
    config_keys = frozenset({"expression"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        if "expression" in config:
            try:
                jmespath.compile(str(config["expression"]))
            except JMESPathError as exc:
                problems.append(("expression", f"not a valid JMESPath expression: {exc}"))
        return problems

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        if "expression" not in config:
            return ExecutorResult(input)
        try:
            return ExecutorResult(jmespath.search(str(config["expression"]), input))
        except JMESPathError as exc:
            raise TaskFailed(str(exc), "ExpressionError") from None


def _callable_allowed(path: str) -> bool:
    module = path.partition(":")[0]
    return any(
        module == prefix or module.startswith(prefix.rstrip(".") + ".")
        for prefix in settings.FLOWPLATFORM_PYTHON_CALLABLES
    )


class PythonExecutor(Executor):
    """Calls `config.callable` ("package.module:function") with the resolved input."""

    name = "python"
    config_keys = frozenset({"callable"})
    required_config_keys = frozenset({"callable"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        path = config.get("callable")
        if path is None:
            return problems
        if not isinstance(path, str) or path.count(":") != 1:
            return [*problems, ("callable", "must be 'package.module:function'")]
        if not _callable_allowed(path):
            return [
                *problems,
                (
                    "callable",
                    f"'{path}' is not under an allowed prefix (FLOWPLATFORM_PYTHON_CALLABLES)",
                ),
            ]
        try:
            self._load(path)
        except (ImportError, AttributeError) as exc:
            problems.append(("callable", f"cannot be imported: {exc}"))
        return problems

    @staticmethod
    def _load(path: str) -> Any:
        module, _, function = path.partition(":")
        target = import_string(f"{module}.{function}")
        if not callable(target):
            raise AttributeError(f"{path} is not callable")
        real = getattr(target, "__module__", None) or ""
        if not _callable_allowed(f"{real}:"):
            # e.g. a function an allowed module merely imported from elsewhere
            raise AttributeError(f"{path} is defined in '{real}', which is not allowed")
        return target

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        path = config["callable"]
        if not _callable_allowed(path):
            raise TaskFailed(f"'{path}' is no longer allowed", "NotAllowed")
        try:
            function = self._load(path)
        except (ImportError, AttributeError) as exc:
            raise TaskFailed(f"'{path}' cannot be called: {exc}", "NotAllowed") from None
        result = function(input)
        return result if isinstance(result, ExecutorResult) else ExecutorResult(result)


class HumanExecutor(Executor):
    """Does nothing by itself: the attempt waits, running, until a person completes it."""

    name = "human"
    waits_for_person = True
    config_keys = frozenset({"instructions"})

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        raise TaskFailed("a human task is completed by a person, not run", "NotRunnable")
