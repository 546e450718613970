"""The built-in task types that run in the worker's process: transform, python, human."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jmespath
from django.conf import settings
from django.utils.module_loading import import_string
from jmespath.exceptions import JMESPathError

from executions.executors.base import Executor, ExecutorResult, TaskFailed
from flows.expressions import ExpressionError, compile_jmespath


class TransformExecutor(Executor):
    """Output = the resolved input, or `config.expression` (JMESPath) applied to it."""

    name = "transform"
    pure = True
    config_keys = frozenset({"expression"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        if "expression" in config:
            try:
                compile_jmespath(str(config["expression"]))
            except ExpressionError as exc:
                problems.append(("expression", str(exc)))
            except JMESPathError as exc:
                problems.append(("expression", f"not a valid JMESPath expression: {exc}"))
        return problems

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        if "expression" not in config:
            return ExecutorResult(input)
        try:
            return ExecutorResult(_compiled(str(config["expression"])).search(input))
        except JMESPathError as exc:
            raise TaskFailed(str(exc), "ExpressionError") from None


@lru_cache(maxsize=4096)
def _compiled(expression: str) -> Any:
    """A transform's expression, compiled once per process (jmespath's own cache keeps 128)."""
    return jmespath.compile(expression)


def _callable_allowed(path: str) -> bool:
    module = path.partition(":")[0]
    return any(
        module == prefix or module.startswith(prefix.rstrip(".") + ".")
        for prefix in settings.FLOWPLATFORM_PYTHON_CALLABLES
    )


class PythonExecutor(Executor):
    """Calls `config.callable` ("package.module:function") with the resolved input. An optional
    `config.summary` ("package.module:function", allowed likewise) gives an output's summary,
    for the outputs the callable returns without one and for a person's corrected output."""

    name = "python"
    config_keys = frozenset({"callable", "summary"})
    required_config_keys = frozenset({"callable"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        for key in ("callable", "summary"):
            path = config.get(key)
            if path is not None:
                problems += [(key, message) for message in self._path_problems(path)]
        return problems

    def _path_problems(self, path: Any) -> list[str]:
        if not isinstance(path, str) or path.count(":") != 1:
            return ["must be 'package.module:function'"]
        if not _callable_allowed(path):
            return [f"'{path}' is not under an allowed prefix (FLOWPLATFORM_PYTHON_CALLABLES)"]
        try:
            self._load(path)
        except (ImportError, AttributeError) as exc:
            return [f"cannot be imported: {exc}"]
        return []

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
        if isinstance(result, ExecutorResult):
            return result
        return ExecutorResult(result, self._summary(result, config))

    def summarize(self, output: Any, config: dict[str, Any]) -> dict[str, Any]:
        return self._summary(output, config) or super().summarize(output, config)

    def _summary(self, output: Any, config: dict[str, Any]) -> dict[str, Any] | None:
        """What `config.summary` gives for `output`; None without one. A summary function that
        is no longer allowed, fails or gives no JSON object is an error of the task."""
        path = config.get("summary")
        if path is None:
            return None
        if not _callable_allowed(path):
            raise TaskFailed(f"'{path}' is no longer allowed", "NotAllowed")
        try:
            summary = self._load(path)(output)
        except (ImportError, AttributeError) as exc:
            raise TaskFailed(f"'{path}' cannot be called: {exc}", "NotAllowed") from None
        if not isinstance(summary, dict):
            raise TaskFailed(f"'{path}' gave {type(summary).__name__}, not an object", "Summary")
        return summary


class HumanExecutor(Executor):
    """Does nothing by itself: the attempt waits, running, until a person completes it."""

    name = "human"
    waits_for_person = True
    config_keys = frozenset({"instructions"})

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        raise TaskFailed("a human task is completed by a person, not run", "NotRunnable")
