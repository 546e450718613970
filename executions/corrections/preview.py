"""Preview tokens: a dry run's digest of what a correction would start from and what it asks, so
the later commit applies only what the person saw."""

from __future__ import annotations

from typing import Any

from executions import selectors
from executions.models import FlowExecution, TaskExecution
from flowplatform.canonical import fingerprint
from flowplatform.exceptions import Conflict
from flows.definitions import FlowSpec
from outputs.models import TaskOutput


class PreviewOutdated(Conflict):
    """The state a preview token was issued for has changed: nothing was applied."""

    code = "preview_outdated"
    # What happened; each surface then says how to get a fresh preview.
    what = (
        "the flow execution changed since the preview this preview_token was issued for, or "
        "this request asks for something else; nothing was applied"
    )

    def __init__(self) -> None:
        super().__init__(
            f"{self.what}. Review the fresh preview (in the API: error.details.preview) and "
            "send its preview_token to apply it"
        )


def correction_fingerprint(
    flow_execution: FlowExecution,
    spec: FlowSpec,
    attempt: TaskExecution,
    result: dict[str, Any],
    execute_flow: bool,
) -> str:
    """The preview token of correcting `attempt` to `result`.

    It covers the corrected attempt, the tasks downstream of it and every task those read from
    (what decides their stale marking, their readiness and their inputs): each one's latest
    attempt (id, status, `updated_at`; of a looped task, each iteration's current one) and
    current output (id, status, `updated_at`); the pinned flow version (whose definition the
    predictions ran); and the requested result (status, output, error) with `execute_flow`.
    Any change to those between a dry run and the PUT that carries its token changes the
    digest. Two queries.
    """
    affected: set[str] = {attempt.task_name}
    if attempt.task_name in spec.tasks:
        downstream = spec.dag.descendants(attempt.task_name)
        affected |= downstream.union(*(spec.tasks[t].upstream for t in downstream))
    return fingerprint(
        {
            **_seen(flow_execution, affected),
            "version": str(flow_execution.flow_version_id),  # what predictions ran
            "result": result,
            "execute_flow": execute_flow,
        }
    )


def upgrade_fingerprint(
    flow_execution: FlowExecution, version_id: object, execute_flow: bool
) -> str:
    """The preview token of upgrading the flow execution to a version: its pinned version,
    the version asked for, `execute_flow`, and every task's latest attempt and current output
    (as correction_fingerprint covers them). Two queries."""
    return fingerprint(
        {
            **_seen(flow_execution, None),
            "upgrade": [str(flow_execution.flow_version_id), str(version_id)],
            "execute_flow": execute_flow,
        }
    )


def _seen(flow_execution: FlowExecution, names: set[str] | None) -> dict[str, Any]:
    """Each named task's (every task's: None) latest attempt (id, status, `updated_at`; of a
    looped task, each iteration's current one) and current output (id, status, `updated_at`)."""
    attempts = {
        name: [
            [str(m.id), m.status, m.updated_at.isoformat()]  # every iteration of a looped task
            for m in (a.members or (a,))
        ]
        for name, a in sorted(selectors.latest_attempts(flow_execution, names).items())
    }
    rows = TaskOutput.objects.filter(flow_execution=flow_execution)
    if names is not None:
        rows = rows.filter(task_name__in=names)
    outputs: dict[str, list[str]] = {}
    for name, pk, status, updated_at in rows.oldest_to_current().values_list(
        "task_name", "id", "status", "updated_at"
    ):
        outputs[name] = [str(pk), status, updated_at.isoformat()]
    return {"attempts": attempts, "outputs": outputs}
