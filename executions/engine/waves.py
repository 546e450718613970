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

from executions import leases, locking, selectors, transitions
from executions.engine import cutoff, planning, publishing, running, staleness, status
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
        self.history: dict[str, list[str]] = {}  # task → its attempts' statuses, newest first

    def run(self, attempt_ids: list[uuid.UUID]) -> None:
        """Run the group; what it leaves queued is enqueued as the next one."""
        flow_execution = locking.lock_for_worker(self.flow_execution_id)
        self.flow_execution = flow_execution
        now = timezone.now()
        owner = leases.worker_identity()
        expires = now + timedelta(seconds=leases.lease_seconds())
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
            ran += len(wave)
            wave = self._run_wave(wave)
        self.created.extend(left)  # queued: the next group (a job) runs them
        self._write()

    def _planner(self) -> planning.Planner:
        """A planner that knows every task's latest attempt (one query): under the flow
        execution's lock nothing else changes them, so no wave reads them again."""
        planner = planning.Planner(self.flow_execution, self.spec, True, None)
        planner.latest = selectors.latest_attempts(self.flow_execution)
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
        for attempt in wave:
            result, error = running.execute(self.spec, attempt)
            output = None if result is None else result.output
            if attempt._state.adding:
                transitions.ran_pure(attempt, output=output, error=error, now=now)
                self.created.append(attempt)
            else:
                self.claimed.append((attempt, output, error))
            done = Status.COMPLETED if error is None else Status.FAILED
            name = attempt.task_name
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
        """The failed attempt's retry (unsaved, queued) if its task has retries left."""
        name = failed.task_name
        if name not in self.history:  # its earlier attempts, read once
            self.history[name] = list(
                TaskExecution.objects.filter(flow_execution=self.flow_execution, task_name=name)
                .exclude(pk=failed.pk)
                .order_by("-task_execution_idx")
                .values_list("status", flat=True)
            )
        self.history[name].insert(0, Status.FAILED)
        if planning.failures_in_a_row(self.history[name]) > self.spec.tasks[name].retries:
            return None
        return planning.next_try(self.flow_execution, failed)

    def _write_rows(self) -> None:
        """The group's attempts, outcomes and outputs so far: a few statements in all."""
        now = timezone.now()
        if self.claimed:
            transitions.record_claimed(self.claimed, now=now)
        bulksql.insert_many(self.created, now=now)
        publishing.publish_many(
            self.flow_execution, self.results, self.reused, self.planner.reusable
        )
        queued = [a for a in self.created if a.status == Status.QUEUED]
        if queued:  # the pure ones as the next group, the others as jobs
            planning.enqueue(self.flow_execution, self.spec, queued)
        self.claimed, self.created, self.results, self.reused = [], [], [], []

    def _write(self) -> None:
        """Write the group and settle the flow execution's status (from what the group knows
        of every task: no query to read it)."""
        self._write_rows()
        latest = {name: attempt.status for name, attempt in self.planner.latest.items()}
        status.refresh_status_from(self.flow_execution, self.spec, latest)
