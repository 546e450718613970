"""Waves: pure tasks run in the scheduling loop, many per transaction.

A task of a pure type (`transform`, or any executor declaring `pure = True`: its output
depends only on its input and config, and running it touches nothing else) is not a job of
its own. The queued attempts of pure tasks that a scheduling pass creates become one job
(jobs.run_pure_wave, then worker.run_wave, in this process when embedded or on any db_worker),
which runs them as a Group: it claims them in one statement, runs their
executors, then the pure tasks they make ready, wave after wave, in memory, until nothing pure
is ready or FLOWPLATFORM_WAVE_TASKS tasks have run. Then the same transaction writes the group:
the claimed attempts' outcomes (one UPDATE), every attempt the group created, in its final
state (one INSERT: completed, failed, reused, waiting for a person, queued), every output (one
INSERT), the summary (recomputed once) and the flow execution's status. What it left queued is
the next group's job; impure tasks it made ready get a job each.

The records are the ones a job per attempt writes (each attempt with its input and its output
or error, each output, the summary; no history rows, as for every attempt the engine creates):
a wave only makes fewer round trips. A group is one transaction under the flow execution's
lock, so a crash or a database error leaves what the previous group committed and nothing of
its own: its claimed attempts are still queued (and a db_worker's job that died with it is
queued again: jobs.requeue_stranded_jobs). Claimed in the same transaction that records them,
they are never seen running, so they need no heartbeat.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import timedelta

from django.utils import timezone

from executions import jobs, leases, locking, selectors, transitions
from executions.engine import (
    advancing,
    cutoff,
    loop_steps,
    planning,
    publishing,
    running,
    staleness,
    status,
)
from executions.models import TaskExecution
from flowplatform import bulksql
from flows.definitions import spec_for
from outputs.models import TaskOutput

Status = TaskExecution.Status


class Group:
    """One transaction's worth of waves, over what it has read of the flow execution."""

    def __init__(self, flow_execution_id: uuid.UUID, limit: int) -> None:
        self.flow_execution_id = flow_execution_id
        self.limit = limit
        self.claimed: list[tuple[TaskExecution, object, dict | None]] = []  # outcomes to write
        self.created: list[TaskExecution] = []  # unsaved, in their final state
        self.results: list[TaskOutput] = []  # unsaved
        self.reused: list[TaskExecution] = []
        # (task, iteration) → its attempts' statuses, newest first
        self.history: dict[tuple[str, int | None], list[str]] = {}
        self.next_idx: dict[str, int] = {}  # a looped task's next idx, for its retries
        self.ran = 0  # attempts run (engine.predicting bounds a dry run's cascade by it)

    def run(self, attempt_ids: list[uuid.UUID]) -> None:
        """Run the group; what it leaves queued is enqueued as the next one."""
        flow_execution = locking.lock_for_worker(self.flow_execution_id)
        self.flow_execution = flow_execution
        now = timezone.now()
        owner = leases.worker_identity()
        expires = now + timedelta(seconds=leases.lease_seconds())
        if len(attempt_ids) > self.limit:  # say a for_each of 10,000: the rest is a job of its own
            later = attempt_ids[self.limit :]
            jobs.enqueue_wave_after_commit(flow_execution.organization_id, flow_execution.pk, later)
            attempt_ids = attempt_ids[: self.limit]
        wave = transitions.claim_many(attempt_ids, owner=owner, expires=expires, now=now)
        if not wave:
            return  # cancelled, or run by someone else
        if flow_execution.status in transitions.FLOW_START.sources:
            transitions.start_flow(flow_execution.pk, now=now)
        self.spec = spec = spec_for(flow_execution.flow_version)
        wave.sort(key=lambda a: spec.dag.rank(a.task_name))
        self.planner = self._planner()
        ran = 0
        left: list[TaskExecution] = []
        while wave:
            if ran >= self.limit:
                left = wave
                break
            if ran + len(wave) > self.limit:  # a wave this size (a for_each) runs in parts
                self._defer(wave[self.limit - ran :])
                wave = wave[: self.limit - ran]
            ran += len(wave)
            wave = self._run_wave(wave)
        self.ran = ran
        self.created.extend(left)  # queued: the next group (a job) runs them
        self._write()

    def _defer(self, attempts: list[TaskExecution]) -> None:
        """Queue these new attempts now, for the next group: written before the rest of the
        wave runs, so a loop whose other iterations they are sees them live."""
        bulksql.insert_many(attempts, now=timezone.now())
        planning.enqueue(self.flow_execution, self.spec, attempts)

    def _planner(self) -> planning.Planner:
        """A planner that knows every task's latest attempt (one query): under the flow
        execution's lock nothing else changes them, so no wave reads them again."""
        planner = planning.Planner(self.flow_execution, self.spec, True, None)
        # Of the version's tasks: a task an upgrade removed has attempts, and no spec.
        planner.latest = {
            name: attempt
            for name, attempt in selectors.latest_attempts(self.flow_execution).items()
            if name in self.spec.tasks
        }
        planner.loaded = set(self.spec.tasks)
        planner.reusable = cutoff.reusable_attempts(
            self.flow_execution, self.spec, planner.latest.values()
        )
        return planner

    def _run_wave(self, wave: list[TaskExecution]) -> list[TaskExecution]:
        """Run `wave`'s executors; returns the next wave: the pure attempts now ready."""
        planner = self.planner
        now = timezone.now()
        completed: list[TaskExecution] = []
        following: list[TaskExecution] = []
        iterated: dict[str, TaskExecution] = {}  # looped tasks whose iterations ran here
        retried: set[str] = set()
        for attempt in wave:
            result, error = running.execute(self.spec, attempt)
            output = None if result is None else result.output
            if attempt._state.adding:
                transitions.ran_pure(attempt, output=output, error=error, now=now)
                self.created.append(attempt)
            else:
                self.claimed.append((attempt, output, error))
            name = attempt.task_name
            if attempt.iteration is not None:  # the loop's step follows below, per task
                iterated[name] = attempt
                retry = self._retry(attempt) if error is not None else None
                if retry is not None:
                    retried.add(name)
                    following.append(retry)
                continue
            done = Status.COMPLETED if error is None else Status.FAILED
            planner.latest[name] = selectors.Attempt(
                attempt.id, name, attempt.task_execution_idx, done
            )
            if error is None:
                self.results.append(
                    publishing.new_result(self.flow_execution, name, result.output, result.summary)
                )
                planner.know(planner.latest[name], result.output)
                completed.append(attempt)
                continue
            retry = self._retry(attempt)
            if retry is not None:
                planner.latest[name] = selectors.Attempt(
                    retry.id, name, retry.task_execution_idx, Status.QUEUED
                )
                following.append(retry)
        settling = {n: a for n, a in iterated.items() if n not in retried}
        if settling:
            return following + self._settle_loops(completed, settling)
        if completed and self._outdates_dependents(completed):
            return following + self._restart(completed)
        by_correction: dict[uuid.UUID | None, set[str]] = defaultdict(set)
        for attempt in completed:
            by_correction[attempt.started_by_correction_id] |= set(
                self.spec.dag.downstream[attempt.task_name]
            )
        for correction_id, children in by_correction.items():
            planner.correction_id = correction_id
            following += self._take(*planner.plan(children))
        following.sort(key=lambda a: self.spec.dag.rank(a.task_name))
        return following

    def _settle_loops(
        self, completed: list[TaskExecution], iterated: dict[str, TaskExecution]
    ) -> list[TaskExecution]:
        """Iterations of for_each tasks ran in this wave (every queued one of each: a planning
        pass creates them together) and none awaits a retry here: write what the group did so
        far, let each loop take its step (advancing.advance: its output once no iteration is
        live), and plan the dependents of what completed, with a planner that reads afresh."""
        self._write_rows()
        done = list(completed)
        for attempt in iterated.values():
            _, output = advancing.advance(
                self.flow_execution, self.spec, attempt, failed=False, freed=False
            )
            if not planning.pending(output):
                done.append(attempt)
        self.planner = self._planner()
        following: list[TaskExecution] = []
        for attempt in done:
            self.planner.correction_id = attempt.started_by_correction_id
            following += self._take(
                *self.planner.plan(set(self.spec.dag.downstream[attempt.task_name]))
            )
        following.sort(key=lambda a: self.spec.dag.rank(a.task_name))
        return following

    def _outdates_dependents(self, completed: list[TaskExecution]) -> bool:
        """Did a task run again outside a correction (say a person marked it stale), so that
        a dependent's latest attempt ran on its previous output? (As worker._move_on.)"""
        latest = self.planner.latest
        return any(
            child in latest and latest[child].status != Status.STALE
            for attempt in completed
            for child in self.spec.dag.downstream[attempt.task_name]
        )

    def _restart(self, completed: list[TaskExecution]) -> list[TaskExecution]:
        """The rare path: write what the group did so far, mark the completed tasks'
        dependents stale (a set-based change that reads the database), and plan their
        children with a planner that reads everything afresh."""
        self._write_rows()
        for attempt in completed:
            staleness.mark_stale(
                self.flow_execution,
                self.spec,
                self.spec.dag.descendants(attempt.task_name),
                actor="system",
                cause=staleness.upstream_rerun_cause(
                    attempt.started_by_correction_id, attempt.task_name
                ),
            )
        self.planner = self._planner()
        following = []
        for attempt in completed:
            self.planner.correction_id = attempt.started_by_correction_id
            following += self._take(
                *self.planner.plan(set(self.spec.dag.downstream[attempt.task_name]))
            )
        return following

    def _take(
        self, created: list[TaskExecution], reused: list[TaskExecution]
    ) -> list[TaskExecution]:
        """Keep what a planning pass created: the queued pure attempts are returned, to run in
        the next wave; the others are written with the group."""
        self.reused += reused
        following = []
        for attempt in created:
            inline = attempt.status == Status.QUEUED and planning.runs_inline(
                self.spec, attempt.task_name
            )
            (following if inline else self.created).append(attempt)
        return following

    def _retry(self, failed: TaskExecution) -> TaskExecution | None:
        """The failed attempt's retry (unsaved, queued) if its task (its iteration, for a
        looped task) has retries left."""
        name = failed.task_name
        key = (name, failed.iteration)
        if key not in self.history:  # its earlier attempts, read once
            self.history[key] = list(
                TaskExecution.objects.filter(
                    flow_execution=self.flow_execution, task_name=name, iteration=failed.iteration
                )
                .exclude(pk=failed.pk)
                .order_by("-task_execution_idx")
                .values_list("status", flat=True)
            )
        self.history[key].insert(0, Status.FAILED)
        if planning.failures_in_a_row(self.history[key]) > self.spec.tasks[name].retries:
            return None
        if failed.iteration is None:
            return planning.next_try(self.flow_execution, failed)
        # Iterations share one sequence of indexes, some of it not written yet.
        self.next_idx[name] = max(
            self.next_idx.get(name, 0),
            planning.next_idx(self.flow_execution, failed),
            *(a.task_execution_idx + 1 for a in self.created if a.task_name == name),
        )
        retry = planning.next_try(self.flow_execution, failed, idx=self.next_idx[name])
        self.next_idx[name] += 1
        return retry

    def _write_rows(self) -> None:
        """The group's attempts, outcomes and outputs so far: a few statements in all."""
        now = timezone.now()
        if self.claimed:
            transitions.record_claimed(self.claimed, now=now)
        bulksql.insert_many(self.created, now=now)
        planning.announce_waiting(self.flow_execution, self.spec, self.created)
        planner = self.planner
        if planner.retiring:  # iterations a looped task planned here dropped
            loop_steps.retire(planner.retiring, now=now)
        results = self.results + planner.loop_results  # with looped tasks finished here
        publishing.publish_many(self.flow_execution, results, self.reused, planner.reusable)
        planner.loop_results, planner.retiring = [], []
        queued = [a for a in self.created if a.status == Status.QUEUED]
        if queued:  # the pure ones as the next group, the others as jobs
            planning.enqueue(self.flow_execution, self.spec, loop_steps.window(self.spec, queued))
        self.claimed, self.created, self.results, self.reused = [], [], [], []

    def _write(self) -> None:
        """Write the group and settle the flow execution's status (from what the group knows
        of every task: no query to read it)."""
        self._write_rows()
        latest = {name: attempt.status for name, attempt in self.planner.latest.items()}
        status.refresh_status_from(self.flow_execution, self.spec, latest)
