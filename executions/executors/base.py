"""What every task type is: an Executor that checks its config and runs one attempt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ExecutorResult:
    """What an attempt produced. A python callable may return one to give its own summary."""

    output: Any
    summary: dict[str, Any] | None = None


class TaskFailed(Exception):
    """An executor's clean failure: recorded as the attempt's error (type, message)."""

    def __init__(self, message: str, error_type: str = "TaskFailed") -> None:
        super().__init__(message)
        self.error_type = error_type


class Executor:
    name: ClassVar[str]
    # A human task is not run by a worker; it waits until a person completes it.
    waits_for_person: ClassVar[bool] = False
    # Side-effect free: the output depends only on the input and config, and running it
    # touches nothing else (no network, files, or database). The engine may then run it in
    # its scheduling loop, many per transaction (engine.waves), instead of as a job each.
    pure: ClassVar[bool] = False
    config_keys: ClassVar[frozenset[str]] = frozenset()
    required_config_keys: ClassVar[frozenset[str]] = frozenset()

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with `config` as (config key or "", message); empty when it is fine."""
        problems = [(key, "unknown config key") for key in sorted(set(config) - self.config_keys)]
        problems += [
            (key, "is required") for key in sorted(self.required_config_keys - set(config))
        ]
        return problems

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        raise NotImplementedError

    def summarize(self, output: Any, config: dict[str, Any]) -> dict[str, Any]:
        """The summary of an output this task type did not produce itself (a person's
        correction); by default the generic one (default_summary)."""
        return default_summary(output)


def default_summary(output: Any) -> dict[str, Any]:
    """A small description of an output when its executor gives none."""
    if isinstance(output, dict):
        return {"type": "object", "keys": len(output)}
    if isinstance(output, list):
        return {"type": "array", "items": len(output)}
    if isinstance(output, str):
        return {"type": "string", "characters": len(output)}
    if output is None:
        return {"type": "null"}
    return {"type": type(output).__name__, "value": output}
