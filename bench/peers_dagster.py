"""The peers benchmark's Dagster run: `python -m bench.peers_dagster SPEC.json RESULT.json`, in
var/bench/venvs/dagster (no Django here), started by bench.peers.

Every task of the shape is a software-defined asset: it reads its upstream assets through the
default filesystem IO manager (the fan-in's leaves are `deps` it does not read), and an
optional op config `override` replaces its output. `materialize` runs in process (Dagster's
single-threaded in-process executor) on a persistent DagsterInstance (SQLite run, event-log
and schedule storage, IO manager files) in this run's directory. (a) every asset; (c) the
corrected asset with its new value and everything downstream of it, in one run (the
selection `asset+`), loading the assets outside the selection from storage. A warm-up
materialisation first creates the instance's databases and imports what Dagster imports late.
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations
# (the context's type, the inputs' types) as objects.
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import peers_graph

WARM_UP = ("chain", 10)
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class Runner:
    def __init__(self, spec: dict[str, Any]) -> None:
        started = time.perf_counter()
        import dagster

        self.import_seconds = time.perf_counter() - started
        self.dagster = dagster
        self.instance = dagster.DagsterInstance.local_temp(
            tempdir=spec["home"], overrides={"telemetry": {"enabled": False}}
        )
        self.executed = 0  # asset bodies that ran
        self.outputs: dict[str, int] = {}

    def assets(self, graph: list[peers_graph.Task]) -> list[Any]:
        return [self._asset(task) for task in graph]

    def _asset(self, node: peers_graph.Task) -> Any:
        dg = self.dagster
        record = self._record
        ins = {key: dg.AssetIn(key=up) for key, up in node.reads.items() if up}
        options = {
            "name": node.name,
            "ins": ins,
            "deps": list(node.waits_for),
            "config_schema": {"override": dg.Field(int, is_required=False)},
        }
        if not ins:

            @dg.asset(**options)
            def root(context: dg.AssetExecutionContext) -> int:
                return record(node, context, {"v": peers_graph.FLOW_INPUT})

            return root
        if node.combine == "copy":

            @dg.asset(**options)
            def copy(context: dg.AssetExecutionContext, v: int) -> int:
                return record(node, context, {"v": v})

            return copy

        @dg.asset(**options)
        def larger(context: dg.AssetExecutionContext, a: int, b: int) -> int:
            return record(node, context, {"a": a, "b": b})

        return larger

    def _record(self, node: peers_graph.Task, context: Any, values: dict[str, int]) -> int:
        self.executed += 1
        config = context.op_execution_context.op_config or {}
        override = config.get("override")
        value = override if override is not None else peers_graph.compute(node.combine, values)
        self.outputs[node.name] = value
        return value

    def run(
        self,
        graph: list[peers_graph.Task],
        assets: list[Any],
        overrides: dict[str, int],
    ) -> dict[str, Any]:
        dg = self.dagster
        run_config: dict[str, Any] = dict(QUIET)
        selection = None
        if overrides:
            (name, value), *more = overrides.items()
            if more:
                raise ValueError("one correction at a time")
            run_config["ops"] = {name: {"config": {"override": value}}}
            selection = dg.AssetSelection.assets(name).downstream()
        executed_before = self.executed
        started = time.perf_counter()
        result = dg.materialize(
            assets,
            instance=self.instance,
            run_config=run_config,
            selection=selection,
            raise_on_error=False,
        )
        seconds = time.perf_counter() - started
        expected = peers_graph.evaluate(graph, overrides)
        events = self.instance.all_logs(result.run_id)
        return {
            "seconds": seconds,
            "executed": self.executed - executed_before,
            "materializations": len(result.get_asset_materialization_events()),
            "event_log_entries": len(events),
            "status": "completed" if result.success else "failed",
            "outputs_match": {n: self.outputs.get(n) for n in expected} == expected,
            "run_id": result.run_id,
        }


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from importlib.metadata import version

    shape, size = spec["shape"], spec["size"]
    result: dict[str, Any] = {"peer_version": version("dagster")}
    started = time.perf_counter()
    runner = Runner(spec)
    warm_graph = peers_graph.renamed(peers_graph.tasks(*WARM_UP), "warm_")
    warm = runner.run(warm_graph, runner.assets(warm_graph), {})
    result["warm_up"] = {**warm, "seconds_with_startup": time.perf_counter() - started}
    result["import_seconds"] = runner.import_seconds
    graph = peers_graph.tasks(shape, size)
    task, stale = peers_graph.correction_target(shape, size, graph)
    result.update(corrected_task=task, expected_stale=len(stale))
    built = time.perf_counter()
    assets = runner.assets(graph)
    result["define_assets_seconds"] = time.perf_counter() - built
    full = result["full"] = runner.run(graph, assets, {})
    if full["status"] != "completed" or not full["outputs_match"]:
        result["error"] = f"full run: {full['status']}, outputs match: {full['outputs_match']}"
        return result
    rerun = result["rerun"] = runner.run(graph, assets, {task: peers_graph.CORRECTED_VALUE})
    rerun["tasks_rerun"] = rerun["executed"] - 1  # the corrected asset itself runs too
    if rerun["status"] != "completed" or not rerun["outputs_match"]:
        result["error"] = f"correction: {rerun['status']}, outputs match: {rerun['outputs_match']}"
    elif rerun["tasks_rerun"] != len(stale):
        result["error"] = f"correction re-ran {rerun['tasks_rerun']} assets, not {len(stale)}"
    result["storage"] = "persistent: DagsterInstance.local_temp(tempdir=...) (SQLite files)"
    return result


def main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(result_path).write_text(json.dumps(measure(spec), indent=2, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:3])
