"""The operator console: a flow execution's admin page, read at a glance (issue 19).

Titled by the flow's name and version; below the run's fields, three sections drawn on the
server (no JavaScript):

- the DAG (executions.dag_svg), each node with its status, attempt count, stale cause and a
  "reused" line when its current attempt reused an earlier result; a node links to the task's
  attempts (the task execution list filtered to this execution and task);
- the tasks, in dependency order: each task's current attempt, then its earlier ones folded in a
  `<details>` (at most PER_TASK attempts per task; the rest behind a link to the task execution
  list filtered to the execution and task);
- the timeline of its corrections, newest first, CORRECTIONS_PER_PAGE a page
  (`?corrections_page=`): who, when, why, operation, source, what went stale and what changed
  (a JSON diff of before → after; an upgrade's changed, added and removed tasks).

The page costs the same number of queries whatever the number of attempts or corrections: the
attempts shown come from one windowed query, the counts from one aggregate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.paginator import Page, Paginator
from django.db.models import Count, F, QuerySet, Window
from django.db.models.functions import RowNumber
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import localtime

from executions import selectors
from executions.dag_svg import NodeDetail, iteration_line, render_dag_svg
from executions.models import Correction, FlowExecution, StaleReason, TaskExecution
from flowplatform.jsondiff import diff_table
from flowplatform.tenancy.models import UserIdentity
from flows.definitions import spec_for

# What a correction did, as the timeline's heading says it (followed by the task's name).
OPERATION_WORDS = {
    Correction.Operation.TASK_EXECUTION_UPDATE: "Corrected",
    Correction.Operation.TASK_OUTPUT_CREATE: "Created the output of",
    Correction.Operation.TASK_OUTPUT_UPDATE: "Edited the output of",
    Correction.Operation.TASK_OUTPUT_DELETE: "Deleted the output of",
    Correction.Operation.UPGRADE: "Upgraded to another version",
}
PER_TASK = 5  # attempts of one task shown on the page (the current one and 4 earlier)
CORRECTIONS_PER_PAGE = 10
CORRECTIONS_PAGE_VAR = "corrections_page"
SHOWN_COLUMNS = [
    "id",
    "task_name",
    "task_execution_idx",
    "iteration",
    "status",
    "created_at",
    "completed_at",
    "updated_at",
    "modified_by",
    "stale_reason",
    "stale_upstream_task",
    "stale_upstream_iteration",
    "reused_from__id",
    "reused_from__task_execution_idx",
]


def attempts_url(flow_execution_id: Any, task_name: str) -> str:
    query = urlencode({"flow_execution": str(flow_execution_id), "task_name": task_name})
    return f"{reverse('admin:executions_taskexecution_changelist')}?{query}"


def stale_cause(reason: str | None, upstream: str | None, iteration: int | None = None) -> str:
    """Why an attempt is stale, in a few words ("correction of fetch")."""
    of = f"{upstream}[{iteration}]" if upstream and iteration is not None else upstream or ""
    words = {
        StaleReason.CORRECTION: f"correction of {of}" if of else "correction",
        StaleReason.UPSTREAM_RERUN: f"{of} ran again" if of else "upstream ran again",
        StaleReason.REEXECUTION: "re-execution",
        StaleReason.FLOW_EXECUTION_DELETED: "execution deleted",
        StaleReason.ITERATION_REMOVED: "iteration removed",
        StaleReason.DEFINITION_CHANGED: f"definition of {of} changed" if of else "new definition",
        StaleReason.TASK_REMOVED: "task removed",
    }
    return words.get(reason or "", reason or "")


@dataclass
class TaskGroup:
    """One task's attempts as the page shows them: the newest PER_TASK, newest first."""

    name: str
    count: int
    attempts: list[TaskExecution] = field(default_factory=list)
    all_url: str = ""

    @property
    def current(self) -> TaskExecution | None:
        return self.attempts[0] if self.attempts else None

    @property
    def earlier(self) -> list[TaskExecution]:
        return self.attempts[1:]

    @property
    def looped(self) -> bool:
        """Its attempts are iterations: the earlier ones include other items' current ones."""
        return any(a.iteration is not None for a in self.attempts)

    @property
    def not_shown(self) -> int:
        return self.count - len(self.attempts)


def recent_attempts(flow_execution: FlowExecution, per_task: int = PER_TASK) -> QuerySet:
    """The newest `per_task` attempts of each task (one query, a window function)."""
    newest_first = Window(
        RowNumber(), partition_by=[F("task_name")], order_by=[F("task_execution_idx").desc()]
    )
    return (
        TaskExecution.objects.filter(flow_execution=flow_execution)
        .annotate(rank=newest_first)
        .filter(rank__lte=per_task)
        .select_related("reused_from")
        .only(*SHOWN_COLUMNS)
        .order_by("task_name", "-task_execution_idx")
    )


def task_groups(flow_execution: FlowExecution, order: list[str]) -> list[TaskGroup]:
    """Every task with attempts, in `order` (the definition's), then any other (removed)."""
    counts = dict(
        TaskExecution.objects.filter(flow_execution=flow_execution)
        .order_by()
        .values_list("task_name")
        .annotate(n=Count("id"))
    )
    groups = {
        name: TaskGroup(name, n, all_url=attempts_url(flow_execution.pk, name))
        for name, n in counts.items()
    }
    for attempt in recent_attempts(flow_execution):
        attempt.cause = stale_cause(
            attempt.stale_reason, attempt.stale_upstream_task, attempt.stale_upstream_iteration
        )
        groups[attempt.task_name].attempts.append(attempt)
    named = [groups.pop(name) for name in order if name in groups]
    return named + [groups[name] for name in sorted(groups)]


def dag(flow_execution: FlowExecution, spec: Any, groups: list[TaskGroup]) -> SafeString:
    latest = selectors.latest_attempts(flow_execution)
    by_name = {g.name: g for g in groups}
    details = {}
    for name, attempt in latest.items():
        group = by_name.get(name)
        current = group.current if group else None
        reused = current.reused_from if current is not None else None
        details[name] = NodeDetail(
            attempts=group.count if group else 0,
            stale_cause=stale_cause(attempt.stale_reason, attempt.stale_upstream_task)
            if attempt.status == TaskExecution.Status.STALE
            else "",
            reused_from_idx=reused.task_execution_idx if reused is not None else None,
        )
    svg = render_dag_svg(
        spec,
        {name: a.status for name, a in latest.items()},
        lambda task: attempts_url(flow_execution.pk, task) if task in latest else None,
        {name: iteration_line(a.members) for name, a in latest.items() if a.members},
        details,
    )
    return mark_safe(svg)  # noqa: S308 - render_dag_svg escapes every name and value


def actor_names(actors: set[str]) -> dict[str, str]:
    """modified_by values that are admin users' UUIDs → their usernames (one query)."""
    uuids = [a for a in actors if len(a) == 36 and a.count("-") == 4]
    if not uuids:
        return {}
    rows = UserIdentity.objects.filter(uuid__in=uuids).values_list("uuid", "user__username")
    return {str(uuid): name for uuid, name in rows}


def actors_named(term: str, most: int = 100) -> list[str]:
    """modified_by values of the admin users whose username contains `term` (a search by the
    name the console shows for them)."""
    rows = UserIdentity.objects.filter(user__username__icontains=term).values_list(
        "uuid", flat=True
    )
    return [str(uuid) for uuid in rows[:most]]


def upgrade_changes(changes: dict) -> SafeString:
    """An upgrade's `changes`: the tasks changed (with their fields), added and removed."""
    changed = changes.get("changed") or {}
    parts = []
    if changed:
        parts.append(
            format_html(
                "<li>Changed: {}</li>",
                format_html_join(
                    ", ", "<code>{}</code> ({})", ((n, ", ".join(f)) for n, f in changed.items())
                ),
            )
        )
    for key in ("added", "removed"):
        if changes.get(key):
            names = format_html_join(", ", "<code>{}</code>", ((n,) for n in changes[key]))
            parts.append(format_html("<li>{}: {}</li>", key.capitalize(), names))
    if not parts:
        return format_html("<p>{}</p>", "No task changed.")
    return format_html('<ul class="upgrade-changes">{}</ul>', mark_safe("".join(parts)))  # noqa: S308


def corrections_page(request: HttpRequest, flow_execution: FlowExecution) -> Page:
    corrections = Correction.objects.filter(flow_execution=flow_execution).order_by(
        "-created_at", "-id"
    )
    page = Paginator(corrections, CORRECTIONS_PER_PAGE).get_page(
        request.GET.get(CORRECTIONS_PAGE_VAR)
    )
    names = actor_names({c.modified_by for c in page.object_list})
    for correction in page.object_list:
        correction.actor_name = names.get(correction.modified_by, correction.modified_by)
        correction.what = OPERATION_WORDS.get(
            correction.operation, correction.get_operation_display()
        )
        task = f" {correction.task_name}" if correction.task_name else ""
        correction.label = (
            f"{correction.what}{task} by {correction.actor_name}, "
            f"{localtime(correction.created_at):%Y-%m-%d %H:%M:%S}"
        )
        correction.diff = diff_table(
            correction.before, correction.after, caption=f"What changed: {correction.label}"
        )
        if correction.operation == Correction.Operation.UPGRADE:
            correction.upgrade = upgrade_changes(correction.changes or {})
    return page


def console_context(request: HttpRequest, flow_execution: FlowExecution) -> dict[str, Any]:
    spec = spec_for(flow_execution.flow_version)
    groups = task_groups(flow_execution, spec.dag.topological_order())
    page = corrections_page(request, flow_execution)
    return {
        "console_dag": dag(flow_execution, spec, groups),
        "console_tasks": groups,
        "console_per_task": PER_TASK,
        "corrections_page": page,
        "corrections_page_var": CORRECTIONS_PAGE_VAR,
        "corrections_page_range": page.paginator.get_elided_page_range(page.number),
    }


def run_title(flow_execution: FlowExecution) -> str:
    return f"{flow_execution.flow.name} · version {flow_execution.flow_version.version}"


class FlowExecutionConsole:
    """FlowExecutionAdmin's change page as the console (module docstring)."""

    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("flow", "version", "status"),
                    ("organization", "started_by"),
                    ("created_at", "updated_at", "reexecuted_at"),
                    "id",
                ]
            },
        ),
        ("Input and outputs summary", {"classes": ["collapse"], "fields": ["input_json"]}),
    ]
    readonly_fields = [
        "id",
        "flow",
        "version",
        "status",
        "organization",
        "started_by",
        "created_at",
        "updated_at",
        "reexecuted_at",
        "input_json",
    ]
    inlines: list = []

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return queryset.select_related("flow", "flow_version", "organization")

    @admin.display(description="version", ordering="flow_version__version")
    def version(self, obj: FlowExecution) -> str:
        return f"v{obj.flow_version.version}"

    @admin.display(description="modified by")
    def started_by(self, obj: FlowExecution) -> SafeString:
        """Its `modified_by`, an admin user's name rather than their UUID (one query)."""
        name = actor_names({obj.modified_by}).get(obj.modified_by, obj.modified_by)
        return format_html('<span title="{}">{}</span>', obj.modified_by, name)

    @admin.display(description="Input and summary")
    def input_json(self, obj: FlowExecution) -> SafeString:
        return format_html(
            '<p>Input</p><pre class="console-json">{}</pre><p>Outputs summary</p>'
            '<pre class="console-json">{}</pre>',
            json.dumps(obj.input, indent=2, ensure_ascii=False),
            json.dumps(obj.task_outputs_summary, indent=2, ensure_ascii=False),
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict,
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: FlowExecution | None = None,
    ) -> Any:
        if obj is not None:
            context.update(console_context(request, obj), title=run_title(obj), subtitle=str(obj))
        return super().render_change_form(  # type: ignore[misc]
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )
