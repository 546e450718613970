"""The benchmarks' task types, each timing itself: `bench_transform`, the product's pure
`transform`, and `bench_python`, a trivial task that is not pure, so a job per attempt.

Registered through the product's own extension point (FLOWPLATFORM_EXECUTORS, set by
bench.common.django_env), so a run's wall time minus the time spent here is the
orchestration: scheduling, claiming, recording, publishing, propagating.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from executions.executors import Executor, ExecutorResult, TransformExecutor


class TimedTransform(TransformExecutor):
    name = "bench_transform"
    seconds: ClassVar[float] = 0.0  # inside run(), in this process
    calls: ClassVar[int] = 0

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        started = time.perf_counter()
        try:
            return super().run(input, config)
        finally:
            TimedTransform.seconds += time.perf_counter() - started
            TimedTransform.calls += 1


class TimedPython(Executor):
    """`{"v": the largest number of its input + 1}`. Not pure (the default), as a `python`
    task is: the engine runs each attempt as a job of its own, never in a wave."""

    name = "bench_python"
    seconds: ClassVar[float] = 0.0  # inside run(), in this process
    calls: ClassVar[int] = 0

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        started = time.perf_counter()
        try:
            return ExecutorResult({"v": max(input.values()) + 1})
        finally:
            TimedPython.seconds += time.perf_counter() - started
            TimedPython.calls += 1


# `python` callables for bench.loops' impure loops (FLOWPLATFORM_PYTHON_CALLABLES allows
# bench.executors in bench.loops' child processes): the product's own `python` task type, not
# pure, so each iteration is a job of its own. The same work as the pure flow's transforms.


class LoopCallables:
    seconds: ClassVar[float] = 0.0  # inside the callables, in this process
    calls: ClassVar[int] = 0


def loop_extract(input: dict[str, Any]) -> dict[str, Any]:
    """One item: `{"n": the item, "i": its index}` (the pure flow's extract is the identity)."""
    started = time.perf_counter()
    try:
        return {"n": input["n"], "i": input["i"]}
    finally:
        LoopCallables.seconds += time.perf_counter() - started
        LoopCallables.calls += 1


def loop_classify(input: dict[str, Any]) -> dict[str, Any]:
    """One extracted item: `{"n": n, "kind": "big" if n > 500 else "small"}`."""
    started = time.perf_counter()
    try:
        return {"n": input["n"], "kind": "big" if input["n"] > 500 else "small"}
    finally:
        LoopCallables.seconds += time.perf_counter() - started
        LoopCallables.calls += 1
