"""The peers benchmark's Prefect run: `python -m bench.peers_prefect SPEC.json RESULT.json`, in
var/bench/venvs/prefect (no Django here), started by bench.peers with PREFECT_HOME and the
SQLite database of this run set in its environment.

Every task of the shape is one call of one Prefect task, in the flow's thread in topological
order (sequential, as the product's embedded mode runs them), with `cache_policy=INPUTS`: its
inputs are its name, what it reads and a possible override of its output. (a) the flow once;
(c) the flow again with the corrected task's output overridden by a flow parameter, so only it
and the tasks downstream of it miss the cache and really run. A warm-up flow first starts what
Prefect starts once per process (its temporary API server, which checks the migrations of the
database bench.peers copied from a migrated template) and registers the flow.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from bench import peers_graph

POLL_SECONDS = 0.05
WARM_UP = ("chain", 10)


class Runner:
    def __init__(self, spec: dict[str, Any]) -> None:
        started = time.perf_counter()
        from prefect import flow, task
        from prefect.cache_policies import INPUTS

        self.import_seconds = time.perf_counter() - started
        self.database = Path(spec["database"])
        timeout = float(spec.get("timeout", 3600))
        self.deadline = time.monotonic() + timeout - min(30.0, timeout / 5)
        self.executed = 0  # task bodies that ran: cache misses
        self.graph: list[peers_graph.Task] = []

        @task(cache_policy=INPUTS, persist_result=True, task_run_name="{name}")
        def transform(
            name: str, combine: str, values: dict[str, int], override: int | None = None
        ) -> int:
            self.executed += 1
            return override if override is not None else peers_graph.compute(combine, values)

        @flow(name="bench-peers")
        def run_flow(overrides: dict[str, int]) -> dict[str, int]:
            # The DAG comes from the runner, not a parameter: Prefect would store a parameter
            # of 1,000 tasks in the flow run's row, which the product does not do per run.
            outputs: dict[str, int] = {}
            for node in self.graph:
                values = {
                    key: peers_graph.FLOW_INPUT if up is None else outputs[up]
                    for key, up in node.reads.items()
                }
                outputs[node.name] = transform(
                    node.name, node.combine, values, overrides.get(node.name)
                )
            return outputs

        self.run_flow = run_flow

    def run(self, graph: list[peers_graph.Task], overrides: dict[str, int]) -> dict[str, Any]:
        """One flow run: the seconds until the flow returned and until Prefect's database
        records every task run as finished (task-run states reach it as events, written by the
        server's task-run recorder after the fact)."""
        self.graph = graph
        executed_before = self.executed
        started = time.perf_counter()
        state = self.run_flow(overrides, return_state=True)
        returned = time.perf_counter() - started
        outputs = state.result()
        flow_run_id = str(state.state_details.flow_run_id)
        recorded, finished = self._wait_recorded(flow_run_id, len(graph), started)
        expected = peers_graph.evaluate(graph, overrides)
        return {
            "seconds": returned,
            "seconds_until_recorded": recorded,
            "task_runs_recorded": finished,
            "task_runs": len(graph),
            "executed": self.executed - executed_before,
            "status": state.type.value.lower(),
            "outputs_match": outputs == expected,
            "flow_run_id": flow_run_id,
        }

    def _wait_recorded(self, flow_run_id: str, expected: int, started: float) -> tuple[Any, int]:
        finished = 0
        while time.monotonic() < self.deadline:
            finished = self._count(
                "SELECT count(*) FROM task_run WHERE flow_run_id = ? AND state_type = 'COMPLETED'",
                flow_run_id,
            )
            if finished >= expected:
                return time.perf_counter() - started, finished
            time.sleep(POLL_SECONDS)
        return None, finished

    def _count(self, sql: str, *params: Any) -> int:
        connection = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            return int(connection.execute(sql, params).fetchone()[0])
        except sqlite3.OperationalError:  # the table is not there yet
            return 0
        finally:
            connection.close()

    def rows_written(self) -> dict[str, int]:
        """Rows in Prefect's SQLite at the end: what it persisted for the runs above."""
        tables = ("flow_run", "task_run", "task_run_state", "flow_run_state", "log", "events")
        return {table: self._count(f"SELECT count(*) FROM {table}") for table in tables}  # noqa: S608


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import version

    shape, size = spec["shape"], spec["size"]
    runner = Runner(spec)
    result: dict[str, Any] = {"peer_version": version("prefect")}
    started = time.perf_counter()
    warm = runner.run(peers_graph.renamed(peers_graph.tasks(*WARM_UP), "warm_"), {})
    result["warm_up"] = {**warm, "seconds_with_startup": time.perf_counter() - started}
    result["import_seconds"] = runner.import_seconds
    graph = peers_graph.tasks(shape, size)
    task, stale = peers_graph.correction_target(shape, size, graph)
    result.update(corrected_task=task, expected_stale=len(stale))
    full = result["full"] = runner.run(graph, {})
    if full["status"] != "completed" or not full["outputs_match"]:
        result["error"] = f"full run: {full['status']}, outputs match: {full['outputs_match']}"
        return result
    rerun = result["rerun"] = runner.run(graph, {task: peers_graph.CORRECTED_VALUE})
    rerun["tasks_rerun"] = rerun["executed"] - 1  # the corrected task itself runs too
    if rerun["status"] != "completed" or not rerun["outputs_match"]:
        result["error"] = f"correction: {rerun['status']}, outputs match: {rerun['outputs_match']}"
    elif rerun["tasks_rerun"] != len(stale):
        result["error"] = f"correction re-ran {rerun['tasks_rerun']} tasks, not {len(stale)}"
    result["rows_written"] = runner.rows_written()
    return result


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(result_path).write_text(json.dumps(measure(spec), indent=2, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:3])
