"""One loops measurement inside Django: `python -m bench.loops_child SPEC.json RESULT.json`.

Started by bench.loops (through bench.common.run_child) in a process of its own, on a fresh
database, jobs in process (the product's embedded backend). Through the product's real paths:
the organization and key from `create_api_key`, the flow from flows.services, the run and the
correction through the HTTP API (Django's test Client, in process, so every statement of the
request, its jobs included, is counted).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.child import QueryCounter, Run, profiled

_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?([A-Za-z_][\w.]*)"?', re.IGNORECASE)


def shape(sql: str) -> str:
    """A statement's kind: its verb and the first table it names (`SELECT
    executions_taskexecution`, `INSERT outputs_taskoutput`, `SAVEPOINT`)."""
    text = sql.lstrip()
    verb = text.split(None, 1)[0].upper() if text else "?"
    found = _TABLE.search(text, 0, 4000)
    return f"{verb} {found.group(1)}" if found else verb


class StatementCounter(QueryCounter):
    """QueryCounter that also counts statements by kind (`shape`) and times their execute()
    calls (on PostgreSQL that includes receiving the rows; SQLite hands rows over later, as
    Django fetches them, so there it is a lower bound)."""

    def __init__(self, connection: Any) -> None:
        super().__init__(connection)
        self.shapes: Counter[str] = Counter()
        self.shape_seconds: Counter[str] = Counter()
        self.seconds = 0.0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        kind = shape(sql)
        self.shapes[kind] += 1
        started = time.perf_counter()
        try:
            return super().__call__(execute, sql, params, many, context)
        finally:
            spent = time.perf_counter() - started
            self.seconds += spent
            self.shape_seconds[kind] += spent

    def report(self) -> dict[str, Any]:
        return {
            "statements": self.count,
            "statement_shapes": dict(self.shapes.most_common()),
            "statements_ms": self.seconds * 1000,
            "statement_shapes_ms": {
                kind: round(seconds * 1000, 2) for kind, seconds in self.shape_seconds.most_common()
            },
        }


class Jobs:
    """The jobs the in-process backend runs, by name, and how long the longest of each took
    (django.tasks' task_finished signal, which the immediate backend sends for each job it
    runs). A wave job is one transaction under the flow execution's lock."""

    def __init__(self) -> None:
        from django.tasks.signals import task_finished

        self.counts: Counter[str] = Counter()
        self.longest: dict[str, float] = {}
        self.failed = 0
        task_finished.connect(self._finished, weak=False)

    def _finished(self, sender: Any, task_result: Any, **kwargs: Any) -> None:
        from django.tasks.base import TaskResultStatus

        name = task_result.task.module_path.rpartition(".")[2]
        self.counts[name] += 1
        ms = (task_result.finished_at - task_result.started_at).total_seconds() * 1000
        self.longest[name] = max(ms, self.longest.get(name, 0.0))
        self.failed += task_result.status == TaskResultStatus.FAILED

    def take(self) -> dict[str, Any]:
        taken = {
            "jobs": dict(self.counts),
            "longest_job_ms": dict(self.longest),
            "failed_jobs": self.failed,
        }
        self.counts.clear()
        self.longest.clear()
        self.failed = 0
        return taken


def executor_seconds() -> float:
    from bench.executors import LoopCallables, TimedTransform

    return TimedTransform.seconds + LoopCallables.seconds


class LoopRun:
    def __init__(self, spec: dict[str, Any]) -> None:
        from django.db import connection

        self.spec = spec
        self.size = int(spec["size"])
        self.iteration = int(spec["iteration"])
        self.run = Run(spec)
        self.connection = connection
        self.jobs = Jobs()
        with self.run.rls.tenant_scope(self.run.org):
            self.flow = self.run._create_flow(
                self.run.org,
                name=spec["definition"]["name"],
                definition=json.dumps(spec["definition"], separators=(",", ":")),
                actor="bench",
            )

    def warm_up(self) -> str:
        """A 3-item run of the same flow, not timed: the process's first request pays for
        imports, URL resolution and compiling the flow's expressions, as a serving process
        has long done by the time it runs a large loop."""
        body = {"flow_id": str(self.flow.id), "input": {"items": [0, 1, 2]}}
        response = self.run.client.post("/flow-executions", body, content_type="application/json")
        return self._json(response, 201)["status"]

    def _json(self, response: Any, expected: int) -> Any:
        return self.run._json(response, expected)

    def attempts(self, **filters: Any) -> list[tuple[str, int | None, bool]]:
        from executions.models import TaskExecution

        with self.run.rls.tenant_scope(self.run.org, read_only=True):
            return [
                (name, iteration, reused is not None)
                for name, iteration, reused in TaskExecution.objects.filter(**filters).values_list(
                    "task_name", "iteration", "reused_from_id"
                )
            ]

    def output(self, flow_execution_id: str, task: str) -> Any:
        page = self._json(
            self.run.client.get(
                "/task-outputs",
                {"flow_execution_id": flow_execution_id, "task_name": task,
                 "status": "completed", "ordering": "-created_at", "limit": 1},
            ),
            200,
        )  # fmt: skip
        return page["results"][0]["output"] if page["results"] else None

    def full_run(self) -> dict[str, Any]:
        body = {"flow_id": str(self.flow.id), "input": {"items": list(range(self.size))}}
        self.jobs.take()
        executor_before = executor_seconds()
        started = time.perf_counter()
        with StatementCounter(self.connection) as statements:
            response = self.run.client.post(
                "/flow-executions", body, content_type="application/json"
            )
        seconds = time.perf_counter() - started
        answer = self._json(response, 201)
        executor = executor_seconds() - executor_before
        iterations = 2 * self.size  # extract's and classify's
        made = self.attempts(flow_execution_id=answer["id"])
        by_task = Counter(name for name, _, _ in made)
        return {
            "flow_execution_id": answer["id"],
            "status": answer["status"],
            "seconds": seconds,
            "iterations": iterations,
            "ms_per_iteration": seconds * 1000 / iterations,
            "executor_seconds": executor,
            "overhead_ms_per_iteration": (seconds - executor) * 1000 / iterations,
            **statements.report(),
            "statements_per_iteration": statements.count / iterations,
            "attempts": len(made),
            "attempts_by_task": dict(by_task),
            **self.jobs.take(),
        }

    def check_full(self, full: dict[str, Any]) -> list[str]:
        problems = []
        if full["failed_jobs"]:
            problems.append(f"{full['failed_jobs']} job(s) failed")
        if full["status"] != "completed":
            problems.append(f"full run: {full['status']}")
        expected = {"split": 1, "extract": self.size, "classify": self.size, "report": 1}
        if full["attempts_by_task"] != expected:
            problems.append(f"full run made attempts {full['attempts_by_task']}, not {expected}")
        report = self.output(full["flow_execution_id"], "report")
        if report != {"count": self.size, "big": max(0, self.size - 501)}:
            problems.append(f"report's output is {report!r}")
        return problems

    def correct(self, flow_execution_id: str) -> dict[str, Any]:
        page = self._json(
            self.run.client.get(
                "/task-executions",
                {"flow_execution_id": flow_execution_id, "task_name": "extract",
                 "iteration": self.iteration, "ordering": "-task_execution_idx", "limit": 1},
            ),
            200,
        )  # fmt: skip
        attempt = page["results"][0]
        body = {
            key: attempt[key]
            for key in ("id", "flow_execution_id", "organization_id", "task_name",
                        "task_execution_idx")
        }  # fmt: skip
        new_item = int(self.spec["offset"]) + self.iteration
        body.update(status="completed", output={"n": new_item, "i": self.iteration})
        self.jobs.take()
        executor_before = executor_seconds()
        started = time.perf_counter()
        with StatementCounter(self.connection) as statements:
            response = self.run.client.put(
                f"/task-executions/{attempt['id']}?execute_flow=true",
                body,
                content_type="application/json",
            )
        seconds = time.perf_counter() - started
        answer = self._json(response, 200)
        executor = executor_seconds() - executor_before
        made = self.attempts(started_by_correction_id=answer["correction_id"])
        classify_ran = sorted(i for name, i, reused in made if name == "classify" and not reused)
        classify_reused = sum(1 for name, _, reused in made if name == "classify" and reused)
        others = Counter(
            f"{name} {'reused' if reused else 'ran'}" for name, _, reused in made
            if name != "classify"
        )  # fmt: skip
        with self.run.rls.tenant_scope(self.run.org, read_only=True):
            from executions.models import FlowExecution

            status = FlowExecution.objects.values_list("status", flat=True).get(
                pk=flow_execution_id
            )
        return {
            "corrected_attempt": attempt["id"],
            "iteration": answer.get("iteration"),
            "ms": seconds * 1000,
            "us_per_item": seconds * 1e6 / self.size,
            "executor_ms": executor * 1000,
            **statements.report(),
            "stale_tasks": answer.get("stale_tasks"),
            "stale_iterations": {
                k: len(v) for k, v in (answer.get("stale_iterations") or {}).items()
            },
            "attempts": len(made),
            "classify_ran": len(classify_ran),
            "classify_ran_iterations": classify_ran[:20],
            "classify_reused": classify_reused,
            "other_attempts": dict(others),
            **self.jobs.take(),
            "status": status,
        }

    def check_correction(self, fix: dict[str, Any], flow_execution_id: str) -> list[str]:
        problems = []
        if fix["failed_jobs"]:
            problems.append(f"{fix['failed_jobs']} job(s) failed")
        if fix["classify_ran_iterations"] != [self.iteration]:
            problems.append(
                f"classify ran iterations {fix['classify_ran_iterations']} (of "
                f"{fix['classify_ran']}), not exactly [{self.iteration}]"
            )
        if fix["classify_reused"] != self.size - 1:
            problems.append(f"classify reused {fix['classify_reused']}, not {self.size - 1}")
        if fix["other_attempts"] != {"report ran": 1}:
            problems.append(f"other new attempts {fix['other_attempts']}, not one report run")
        if fix["status"] != "completed":
            problems.append(f"flow execution {fix['status']} after the correction")
        report = self.output(flow_execution_id, "report")
        expected = {"count": self.size, "big": max(0, self.size - 501) + 1}
        if report != expected:
            problems.append(f"report's output after the correction is {report!r}, not {expected}")
        return problems


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    loop = LoopRun(spec)
    result: dict[str, Any] = {"warm_up": loop.warm_up()}
    with profiled(spec.get("profile")):
        full = result["full"] = loop.full_run()
        problems = loop.check_full(full)
        if problems:
            result["error"] = "; ".join(problems)
            return result
        fix = result["correction"] = loop.correct(full["flow_execution_id"])
    problems = loop.check_correction(fix, full["flow_execution_id"])
    fix["exactly_one"] = not problems
    if problems:
        result["error"] = "correction check failed: " + "; ".join(problems)
        result["check_failed"] = True
        print(f"[bench.loops_child] {result['error']}", file=sys.stderr)
    return result


def main(spec_path: str, result_path: str) -> None:
    import django

    django.setup()
    spec = json.loads(Path(spec_path).read_text())
    Path(result_path).write_text(json.dumps(measure(spec), indent=2, default=str))


if __name__ == "__main__":
    from bench import procs

    procs.install_handlers()
    main(*sys.argv[1:3])
