"""One upgrades measurement inside Django: `python -m bench.upgrades_child SPEC.json RESULT.json`.

Started by bench.upgrades (through bench.common.run_child) in a process of its own, on a fresh
database, jobs in process (the product's embedded backend). Through the product's real paths:
the organization and key from `create_api_key`, the flow and its versions from flows.services,
the executions and the upgrade jobs through the HTTP API (Django's test Client, in process, so
every statement of the request — the job's batches and the re-runs' wave jobs included — is
counted).

The flow is bench.dags' layered DAG (10 tasks per layer, each the larger of two tasks of the
layer before). Version 2 changes the config of the first task of the middle layer (`target`)
to `min([a, 0])`: its output becomes {v: 0}, less than every input (1 … N), so its direct
dependents run again (their input changed) and still output the larger value, unchanged: early
cutoff reuses every task below them. Version 3 changes it again (`min([a, -1])`), for the
marking-only upgrade.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench import dags, loops_child
from bench.child import Run, profiled
from bench.loops_child import StatementCounter, executor_seconds


class Jobs(loops_child.Jobs):
    """Also the total time of each kind of job. The embedded backend runs a job enqueued while
    another runs after it (flowplatform.tasks), so the wave jobs each batch enqueues for its
    re-runs run after the upgrade job, and the two totals do not overlap."""

    def __init__(self) -> None:
        self.total: Counter[str] = Counter()
        super().__init__()

    def _finished(self, sender: Any, task_result: Any, **kwargs: Any) -> None:
        super()._finished(sender, task_result, **kwargs)
        name = task_result.task.module_path.rpartition(".")[2]
        self.total[name] += (task_result.finished_at - task_result.started_at).total_seconds()

    def take(self) -> dict[str, Any]:
        total = {name: round(seconds * 1000, 1) for name, seconds in self.total.items()}
        self.total.clear()
        return {**super().take(), "total_job_ms": total}


WARM_UP_TASKS = 20
WARM_UP_EXECUTIONS = 3


def target_task(tasks: int) -> str:
    """The first task of the middle layer (t50 of 100 tasks)."""
    layers = (tasks - 1) // dags.LAYER_WIDTH + 1
    return f"t{(layers // 2) * dags.LAYER_WIDTH}"


def changed(definition: dict[str, Any], task: str, expression: str) -> dict[str, Any]:
    """`definition` with `task`'s transform expression replaced."""
    tasks = [
        {**t, "config": {"expression": expression}} if t["name"] == task else t
        for t in definition["tasks"]
    ]
    return {**definition, "tasks": tasks}


# The changed task's expressions in versions 2 and 3 (JMESPath): outputs below every input.
V2_EXPRESSION = "{v: min([a, `0`])}"
V3_EXPRESSION = "{v: min([a, `-1`])}"


class UpgradeRun:
    def __init__(self, spec: dict[str, Any]) -> None:
        from django.db import connection

        self.spec = spec
        self.executions = int(spec["size"])
        self.tasks = int(spec["tasks"])
        self.run = Run(spec)
        self.connection = connection
        self.jobs = Jobs()

    # Set-up ---------------------------------------------------------------------------------

    def create_flow(self, name: str, definition: dict[str, Any]) -> Any:
        with self.run.rls.tenant_scope(self.run.org):
            return self.run._create_flow(
                self.run.org,
                name=name,
                definition=json.dumps(definition, separators=(",", ":")),
                actor="bench",
            )

    def new_version(self, flow: Any, definition: dict[str, Any]) -> int:
        from flows.services import update_flow

        with self.run.rls.tenant_scope(self.run.org):
            flow = update_flow(
                flow, actor="bench", definition=json.dumps(definition, separators=(",", ":"))
            )
            return flow.current_version.version

    def start(self, flow: Any, count: int) -> list[str]:
        """`count` executions of `flow`, inputs v = 1 … count, each run to completion."""
        ids = []
        for i in range(count):
            body = {"flow_id": str(flow.id), "input": {"v": i + 1}}
            answer = self.run._json(
                self.run.client.post("/flow-executions", body, content_type="application/json"),
                201,
            )
            if answer["status"] != "completed":
                raise RuntimeError(f"set-up execution {i}: {answer['status']}")
            ids.append(answer["id"])
        return ids

    def upgrade_all(self, flow: Any, from_version: int, *, execute_flow: bool) -> dict[str, Any]:
        query = "true" if execute_flow else "false"
        return self.run._json(
            self.run.client.post(
                f"/flows/{flow.id}/upgrade-executions?execute_flow={query}",
                {"from_version": from_version, "reason": "bench"},
                content_type="application/json",
            ),
            202,
        )

    def warm_up(self) -> dict[str, Any]:
        """A small flow run, upgraded with and without execute_flow, not timed: the process's
        first requests pay for imports, URL resolution and compiling expressions."""
        base = dags.definition("layered", WARM_UP_TASKS)
        task = target_task(WARM_UP_TASKS)
        flow = self.create_flow("warm-up", base)
        self.start(flow, WARM_UP_EXECUTIONS)
        self.new_version(flow, changed(base, task, V2_EXPRESSION))
        a = self.upgrade_all(flow, 1, execute_flow=True)
        self.new_version(flow, changed(base, task, V3_EXPRESSION))
        b = self.upgrade_all(flow, 2, execute_flow=False)
        self.jobs.take()
        return {"execute_flow": a["status"], "marking": b["status"]}

    # Measuring ------------------------------------------------------------------------------

    def timed_upgrade(self, flow: Any, from_version: int, *, execute_flow: bool) -> dict[str, Any]:
        self.jobs.take()
        executor_before = executor_seconds()
        started, cpu_started = time.perf_counter(), time.process_time()
        with StatementCounter(self.connection) as statements:
            job = self.upgrade_all(flow, from_version, execute_flow=execute_flow)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        executor = executor_seconds() - executor_before
        n = self.executions
        return {
            "job_id": job["id"],
            "job": {k: job.get(k) for k in ("status", "matched", "upgraded", "skipped", "failed",
                                           "skipped_reasons", "pending")},
            "seconds": seconds,
            "ms_per_execution": seconds * 1000 / n,
            # This process's CPU time (SQLite's work included, PostgreSQL's not): less sensitive
            # than the wall time to other work on the machine.
            "cpu_seconds": cpu,
            "cpu_ms_per_execution": cpu * 1000 / n,
            "executor_ms": executor * 1000,
            **statements.report(),
            "statements_per_execution": statements.count / n,
            **self.jobs.take(),
        }  # fmt: skip

    # Checking -------------------------------------------------------------------------------

    def check(
        self,
        phase: dict[str, Any],
        ids: list[str],
        *,
        version: int,
        status: str,
        expected_ran: set[str],
        expected_reused: set[str],
        expected_stale: int,
    ) -> list[str]:
        """Every execution on `version` in `status`, exactly one upgrade Correction of this job
        each, its job item upgraded with `expected_stale` stale tasks, and the attempts its
        correction started: exactly `expected_ran` ran and `expected_reused` were reused."""
        from executions.models import Correction, FlowExecution, TaskExecution, UpgradeJobItem

        problems = []
        n = len(ids)
        job = phase["job"]
        if phase["failed_jobs"]:
            problems.append(f"{phase['failed_jobs']} job(s) failed")
        if (job["status"], job["matched"], job["upgraded"]) != ("completed", n, n):
            problems.append(f"job {job}")
        with self.run.rls.tenant_scope(self.run.org, read_only=True):
            states = Counter(
                FlowExecution.objects.filter(pk__in=ids).values_list(
                    "flow_version__version", "status"
                )
            )
            corrections = Counter(
                Correction.objects.filter(
                    upgrade_job_id=phase["job_id"], operation=Correction.Operation.UPGRADE
                ).values_list("flow_execution_id", flat=True)
            )
            stale = Counter(
                UpgradeJobItem.objects.filter(job_id=phase["job_id"]).values_list(
                    "outcome", "stale_tasks"
                )
            )
            started = TaskExecution.objects.filter(
                started_by_correction__upgrade_job_id=phase["job_id"]
            ).values_list("flow_execution_id", "task_name", "reused_from_id", "status")
            ran: dict[str, set[str]] = defaultdict(set)
            reused: dict[str, set[str]] = defaultdict(set)
            not_completed = 0
            for fe, name, reused_from, attempt_status in started:
                (reused if reused_from else ran)[str(fe)].add(name)
                not_completed += attempt_status != "completed"
        if states != {(version, status): n}:
            problems.append(f"executions by (version, status): {dict(states)}")
        once = {str(fe) for fe, count in corrections.items() if count == 1}
        if once != set(ids) or sum(corrections.values()) != n:
            problems.append(
                f"{sum(corrections.values())} upgrade corrections for {len(corrections)} "
                f"executions, not one for each of {n}"
            )
        if stale != {("upgraded", expected_stale): n}:
            problems.append(f"job items by (outcome, stale tasks): {dict(stale)}")
        wrong_ran = sum(ran.get(fe, set()) != expected_ran for fe in ids)
        wrong_reused = sum(reused.get(fe, set()) != expected_reused for fe in ids)
        if wrong_ran or wrong_reused or not_completed:
            sample = ids[0]
            problems.append(
                f"{wrong_ran} executions re-ran another set than {sorted(expected_ran)}, "
                f"{wrong_reused} reused another set than the {len(expected_reused)} expected, "
                f"{not_completed} new attempts not completed (first: ran "
                f"{sorted(ran.get(sample, set()))}, reused {len(reused.get(sample, set()))})"
            )
        phase["ran_per_execution"] = len(ran.get(ids[0], set()))
        phase["reused_per_execution"] = len(reused.get(ids[0], set()))
        phase["stale_per_execution"] = expected_stale
        return problems

    def check_outputs(self, ids: list[str], task: str, children: set[str]) -> list[str]:
        """After the execute_flow upgrade: the changed task's latest attempt outputs {v: 0}, its
        dependents' the execution's input (the larger of their two inputs), in every execution."""
        from executions.models import FlowExecution, TaskExecution

        problems = []
        with self.run.rls.tenant_scope(self.run.org, read_only=True):
            inputs = dict(FlowExecution.objects.filter(pk__in=ids).values_list("pk", "input"))
            latest: dict[tuple[str, str], Any] = {}
            rows = TaskExecution.objects.filter(
                flow_execution_id__in=ids, task_name__in=[task, *children]
            ).order_by("task_execution_idx")
            for fe, name, output in rows.values_list("flow_execution_id", "task_name", "output"):
                latest[str(fe), name] = output
        for fe, flow_input in inputs.items():
            if latest.get((str(fe), task)) != {"v": 0}:
                problems.append(f"{fe}: {task} outputs {latest.get((str(fe), task))!r}")
            for child in children:
                if latest.get((str(fe), child)) != {"v": flow_input["v"]}:
                    problems.append(f"{fe}: {child} outputs {latest.get((str(fe), child))!r}")
            if len(problems) > 5:
                break
        return problems


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from flows.definitions import spec_for

    upgrade = UpgradeRun(spec)
    tasks, n = upgrade.tasks, upgrade.executions
    base = dags.definition("layered", tasks)
    task = target_task(tasks)
    result: dict[str, Any] = {"changed_task": task, "warm_up": upgrade.warm_up()}
    flow = upgrade.create_flow(f"upgrades-{tasks}", base)
    with upgrade.run.rls.tenant_scope(upgrade.run.org, read_only=True):
        dag = spec_for(flow.current_version).dag
    children = set(dag.downstream[task])
    descendants = dag.descendants(task)
    expected_ran = {task, *children}
    expected_reused = descendants - children
    result.update(
        tasks=tasks,
        descendants=len(descendants),
        expected_ran=sorted(expected_ran, key=lambda name: int(name[1:])),
        expected_reused=len(expected_reused),
        untouched=tasks - 1 - len(descendants),
    )
    started = time.perf_counter()
    ids = upgrade.start(flow, n)
    setup = time.perf_counter() - started
    result["setup"] = {"seconds": setup, "ms_per_execution": setup * 1000 / n}
    print(f"[bench.upgrades_child] {n} executions in {setup:.1f} s", file=sys.stderr, flush=True)
    profile = spec.get("profile")

    upgrade.new_version(flow, changed(base, task, V2_EXPRESSION))
    with profiled(profile and profile.replace(".html", "-a.html")):
        a = result["execute_flow"] = upgrade.timed_upgrade(flow, 1, execute_flow=True)
    problems = upgrade.check(
        a, ids, version=2, status="completed", expected_ran=expected_ran,
        expected_reused=expected_reused, expected_stale=1 + len(descendants),
    )  # fmt: skip
    problems += upgrade.check_outputs(ids, task, children)
    a["checked"] = not problems
    if problems:
        result["error"] = "(a) check failed: " + "; ".join(problems[:8])
        result["check_failed"] = True
        print(f"[bench.upgrades_child] {result['error']}", file=sys.stderr)
        return result

    upgrade.new_version(flow, changed(base, task, V3_EXPRESSION))
    with profiled(profile and profile.replace(".html", "-b.html")):
        b = result["marking"] = upgrade.timed_upgrade(flow, 2, execute_flow=False)
    problems = upgrade.check(
        b, ids, version=3, status="stale", expected_ran=set(), expected_reused=set(),
        expected_stale=1 + len(descendants),
    )  # fmt: skip
    b["checked"] = not problems
    if problems:
        result["error"] = "(b) check failed: " + "; ".join(problems[:8])
        result["check_failed"] = True
        print(f"[bench.upgrades_child] {result['error']}", file=sys.stderr)
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
