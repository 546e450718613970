"""The engine: which task attempts exist, when they run, what goes stale, and a flow execution's
status. Rules, in the product's words:

- a task gets an attempt when all its upstream tasks are completed and it has no live attempt
  (queued, running, completed, or failed for good); its input is resolved at that moment from
  the flow input and the upstream tasks' current outputs, and stored on the attempt;
- one job per queued attempt, enqueued only after the transaction that created it commits;
- a worker claims an attempt by moving it queued → running, and finishes it only where it is
  still running (compare-and-set), so a cancelled or duplicated job changes nothing;
- a failed attempt is retried as a new attempt (idx + 1) while retries remain;
- `human` attempts are created running and wait for a person (PUT /task-executions/{id});
- an attempt that goes stale records why (a StaleCause);
- early cutoff: a task stale only because something upstream changed, whose freshly resolved
  input equals its previous completed attempt's, reuses that result instead of running again.

Entry points (what use cases, jobs and commands call): `lifecycle` (start, re-execute, propagate
a new output, settle), `worker` (run and finish one attempt), `reaper` (expired leases). Their
parts: `planning` (which attempts to create, retries), `staleness`, `cutoff`, `publishing`,
`status`. Beneath them: executions.selectors (reads), executions.locking (the lock order),
executions.transitions (every status write), executions.jobs (the queue). The map, with the
correction path step by step: executions/README.md.

Modules import each other as modules (`from executions.engine import planning`, then
`planning.schedule(...)`), so a test that replaces a function in its module replaces it for
every caller.
"""
