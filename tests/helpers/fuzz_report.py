"""The fuzz tests' summaries, printed at the end of every pytest run.

tests/test_fuzz.py records each schemathesis call here; the terminal summary hook prints one
line per operation (calls, statuses seen, failures), so CI logs show what the fuzzer covered
without -s. The engine property (random DAGs with loops, tests/helpers/fuzz_dags.py) gets a
section too: examples, tasks by kind, corrections by target and mode, upgrades by definition
change and mode, attempts run and reused.
A pytest plugin: tests/conftest.py registers it (`pytest_plugins`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from tests.helpers.fuzz_dags import DAG_STATS


@dataclass
class OperationStats:
    calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


@dataclass
class FuzzStats:
    operations: dict[str, OperationStats] = field(default_factory=dict)
    seconds: float = 0.0

    def operation(self, label: str) -> OperationStats:
        return self.operations.setdefault(label, OperationStats())

    def record_call(self, label: str, status: int) -> None:
        stats = self.operation(label)
        stats.calls += 1
        stats.statuses[status] += 1

    def record_failures(self, label: str, titles: list[str]) -> None:
        self.operation(label).failures.update(titles)

    def lines(self) -> list[str]:
        width = max(len(label) for label in self.operations)
        lines = []
        for label, stats in sorted(self.operations.items(), key=lambda item: _path_order(item[0])):
            statuses = " ".join(f"{code}x{n}" for code, n in sorted(stats.statuses.items()))
            failed = sum(stats.failures.values())
            line = f"{label:<{width}}  {stats.calls:>4} calls  {statuses}"
            if failed:
                line += f"  FAILURES {failed}: " + "; ".join(sorted(stats.failures))
            lines.append(line)
        return lines


def _path_order(label: str) -> tuple[str, str]:
    method, _, path = label.partition(" ")
    return path, method


FUZZ_STATS = FuzzStats()


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items())) or "none"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if DAG_STATS.examples:
        terminalreporter.section("engine fuzzing: random DAGs with loops (tests/test_fuzz.py)")
        terminalreporter.write_line(
            f"{DAG_STATS.examples} examples, {DAG_STATS.seconds:.1f}s; "
            f"tasks: {_counts(DAG_STATS.tasks)}"
        )
        terminalreporter.write_line(f"corrections: {_counts(DAG_STATS.corrections)}")
        terminalreporter.write_line(f"upgrades: {_counts(DAG_STATS.upgrades)}")
        terminalreporter.write_line(f"attempts after corrections: {_counts(DAG_STATS.attempts)}")
    if not FUZZ_STATS.operations:
        return
    calls = sum(stats.calls for stats in FUZZ_STATS.operations.values())
    failures = sum(sum(stats.failures.values()) for stats in FUZZ_STATS.operations.values())
    terminalreporter.section("schemathesis fuzzing (tests/test_fuzz.py)")
    for line in FUZZ_STATS.lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        f"{len(FUZZ_STATS.operations)} operations, {calls} calls, {failures} failing checks, "
        f"{FUZZ_STATS.seconds:.1f}s"
    )
