"""Admin for flow executions and task executions (the flow execution page: admin_console; the
corrections list: admin_correction_list).

Operators correct a task execution here exactly as through PUT /task-executions/{id}: the
change form's save calls executions.corrections.task_executions.correct_task_execution
(transition rules, optimistic lock, stale marking, optional re-execution, a Correction with
source `admin`).
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from executions import (
    admin_correction_list,  # noqa: F401 - registers CorrectionAdmin
    services,
)
from executions.admin_console import FlowExecutionConsole
from executions.admin_corrections import PREVIEW_FIELDSET, TaskExecutionCorrections, of_iteration
from executions.admin_upgrades import FlowExecutionUpgrades
from executions.models import FlowExecution, TaskExecution
from flowplatform.admin import (
    ScopedHistoryMixin,
    ScopedOrganizationFilter,
    TenantAdmin,
)
from flowplatform.exceptions import DomainError
from flowplatform.tenancy.services import user_actor

NAMING = ["task_name", "task_execution_idx", "iteration"]  # what names an attempt in a list


@admin.register(FlowExecution)
class FlowExecutionAdmin(FlowExecutionConsole, FlowExecutionUpgrades, TenantAdmin):
    list_display = ["__str__", "version", "organization", "status", "updated_at"]
    list_filter = ["status", ("organization", ScopedOrganizationFilter)]
    list_select_related = ["flow", "flow_version", "organization"]
    search_fields = ["flow__name"]
    date_hierarchy = "created_at"
    actions = ["reexecute_flow", "reexecute_stale"]

    def has_correct_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def _reexecute(self, request: HttpRequest, queryset: QuerySet, only_stale: bool) -> None:
        done = 0
        for flow_execution in queryset.select_related("flow_version"):
            try:
                services.reexecute_flow_execution(
                    flow_execution, actor=user_actor(request.user), only_stale=only_stale
                )
                done += 1
            except DomainError as exc:
                self.message_user(request, f"{flow_execution.pk}: {exc.message}", messages.ERROR)
        if done:
            what = "stale tasks of" if only_stale else "every task of"
            self.message_user(request, f"Re-executing {what} {done} flow execution(s).")

    @admin.action(description="Re-execute the whole flow", permissions=["correct"])
    def reexecute_flow(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._reexecute(request, queryset, only_stale=False)

    @admin.action(description="Re-execute only the stale tasks", permissions=["correct"])
    def reexecute_stale(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._reexecute(request, queryset, only_stale=True)


class IterationFilter(admin.SimpleListFilter):
    """Attempts with or without an iteration, or of one iteration (?iteration=N, below 10**9)."""

    title = parameter_name = "iteration"
    number = re.compile("0|[1-9][0-9]{0,8}")

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value() or ""
        exact = [(value, f"Iteration {value}")] if self.number.fullmatch(value) else []
        return [("any", "Has an iteration"), ("none", "No iteration"), *exact]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in ("any", "none"):
            return queryset.filter(iteration__isnull=value == "none")
        if value is not None and not self.number.fullmatch(value):
            raise IncorrectLookupParameters(f"iteration: {value!r} is not an iteration")
        return queryset if value is None else queryset.filter(iteration=int(value))


@admin.register(TaskExecution)
class TaskExecutionAdmin(
    TaskExecutionCorrections, ScopedHistoryMixin, SimpleHistoryAdmin, TenantAdmin
):
    """A task execution's change form is a correction (admin_corrections: the form, the live
    preview, the save)."""

    editable = True
    list_display = [*NAMING, "status", "flow_execution", "modified_by"]
    list_filter = ["status", IterationFilter, ("organization", ScopedOrganizationFilter)]
    list_select_related = ["flow_execution__flow"]
    search_fields = ["task_name"]
    readonly_fields = [
        "correction_preview",
        "stale_cause",
        "id",
        "organization",
        "flow_execution",
        *NAMING,
        "input_json",
        "reused_from",
        "modified_by",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["flow_execution", *NAMING, "input_json"]}),
        (
            "Correction",
            {
                "fields": [
                    *("status", "output", "error", "execute_flow", "reason"),
                    *("lock", "preview_token"),
                ]
            },
        ),
        (PREVIEW_FIELDSET, {"fields": ["correction_preview", "stale_cause"]}),
        (
            "Record",
            {"fields": ["id", "organization", "reused_from", "modified_by", "created_at"]},
        ),
        (None, {"fields": ["updated_at"]}),
    ]

    @admin.display(description="Why it is stale")
    def stale_cause(self, obj: TaskExecution) -> str:
        if obj.status != TaskExecution.Status.STALE or not obj.stale_reason:
            return "-"
        return format_html(
            "{} — {} {}{} by {} at {}",
            obj.stale_reason,
            "correction of" if obj.stale_correction_id else "upstream",
            obj.stale_upstream_task or "-",
            of_iteration(obj.stale_upstream_iteration),
            obj.stale_by,
            obj.stale_at,
        )
