"""The benchmarks' task type: the product's `transform`, timing itself.

Registered through the product's own extension point (FLOWPLATFORM_EXECUTORS, set by
bench.common.django_env), so a run's wall time minus the time spent here is the
orchestration: scheduling, claiming, recording, publishing, propagating.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from executions.executors import ExecutorResult, TransformExecutor


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
