"""The corrections list in admin (read-only): who corrected what, when, why, with what effect.

Filters by flow, task, actor, date (a date hierarchy and the date filter), operation, source;
searches task, actor (an admin user by name too) and reason; newest first. Columns stay narrow
enough for a 1,280-pixel screen (with admin's sidebar and the filters beside them): the run as
its flow and short id, the operation and source in a few words, the stale set as a count, the
actor as the admin user's name when it is one (one query per page, not per row); long values
are cut, the whole text in their title.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from executions.admin_console import actor_names, actors_named
from executions.models import Correction
from flowplatform.admin import ReadOnlyModelAdmin, ScopedOrganizationFilter, scope
from flowplatform.jsondiff import diff_table
from flows.models import Flow

SHORT = 40  # characters of a reason or actor shown in a column
SHORT_OPERATIONS = {
    Correction.Operation.TASK_EXECUTION_UPDATE: "corrected",
    Correction.Operation.TASK_OUTPUT_CREATE: "output created",
    Correction.Operation.TASK_OUTPUT_UPDATE: "output edited",
    Correction.Operation.TASK_OUTPUT_DELETE: "output deleted",
    Correction.Operation.UPGRADE: "upgrade",
}


def shortened(text: str, length: int = SHORT) -> SafeString:
    if len(text) <= length:
        return format_html("{}", text)
    return format_html('<span title="{}">{}…</span>', text, text[: length - 1])


class FlowFilter(admin.SimpleListFilter):
    """The flow the corrected execution runs, among the flows the user may see."""

    title = "flow"
    parameter_name = "flow"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        flows = scope(Flow.objects.order_by("name"), request).values_list("pk", "name")
        return [(str(pk), name) for pk, name in flows[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(flow_execution__flow_id=value) if value else queryset


class ValueFilter(admin.SimpleListFilter):
    """The distinct values of one column among the user's corrections (the first 100)."""

    column = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = (
            model_admin.get_queryset(request)
            .exclude(**{self.column: ""})
            .order_by(self.column)
            .values_list(self.column, flat=True)
            .distinct()[:100]
        )
        return [(v, v) for v in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(**{self.column: value}) if value else queryset


class TaskFilter(ValueFilter):
    title = "task"
    parameter_name = column = "task_name"


class ActorFilter(ValueFilter):
    title = "actor"
    parameter_name = column = "modified_by"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = [v for v, _ in super().lookups(request, model_admin)]
        names = actor_names(set(values))
        return [(v, names.get(v, v)) for v in values]


class OperationFilter(admin.SimpleListFilter):
    """The operation, in the list's words (SHORT_OPERATIONS)."""

    title = parameter_name = "operation"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(SHORT_OPERATIONS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        return queryset.filter(operation=value) if value else queryset


@admin.register(Correction)
class CorrectionAdmin(ReadOnlyModelAdmin):
    """Every correction: who, when, why, before/after, the stale set, the attempts it started."""

    list_display = ["when", "run", "task", "what", "who", "why", "stale"]
    list_display_links = ["when"]
    list_filter = [
        FlowFilter,
        TaskFilter,
        ActorFilter,
        OperationFilter,
        "source",
        ("created_at", admin.DateFieldListFilter),
        "execute_flow",
        ("organization", ScopedOrganizationFilter),
    ]
    list_select_related = ["flow_execution__flow"]
    search_fields = ["task_name", "modified_by", "reason"]
    ordering = ["-created_at"]  # newest first, as the flow execution's timeline
    date_hierarchy = "created_at"
    readonly_fields = ["what_changed", *(field.name for field in Correction._meta.fields)]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Also the corrections by the admin users whose name (as `who` shows it) matches."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            named = actors_named(term)
            if named:
                found = found | queryset.filter(modified_by__in=named)
        return found, duplicates

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The page's actors named in one query (`who`)."""
        changelist = super().get_changelist_instance(request)
        names = actor_names({c.modified_by for c in changelist.result_list})
        for correction in changelist.result_list:
            correction.actor_name = names.get(correction.modified_by, correction.modified_by)
        return changelist

    @admin.display(description="when", ordering="created_at")
    def when(self, obj: Correction) -> str:
        return f"{localtime(obj.created_at):%Y-%m-%d %H:%M}"

    @admin.display(description="flow execution", ordering="flow_execution__created_at")
    def run(self, obj: Correction) -> SafeString:
        """The flow's name and the run's short id; the whole name (with its start) as title."""
        run = obj.flow_execution
        url = reverse("admin:executions_flowexecution_change", args=[run.pk])
        return format_html(
            '<a href="{}" title="{}">{} · {}</a>', url, run, run.flow.name, str(run.pk)[:8]
        )

    @admin.display(description="what", ordering="operation")
    def what(self, obj: Correction) -> str:
        return f"{SHORT_OPERATIONS.get(obj.operation, obj.operation)} ({obj.source})"

    @admin.display(description="task", ordering="task_name")
    def task(self, obj: Correction) -> str:
        if not obj.task_name:
            return "-"
        return obj.task_name + (f"[{obj.iteration}]" if obj.iteration is not None else "")

    @admin.display(description="who", ordering="modified_by")
    def who(self, obj: Correction) -> SafeString:
        name = getattr(obj, "actor_name", obj.modified_by)
        return format_html('<span title="{}">{}</span>', obj.modified_by, shortened(name, 24))

    @admin.display(description="why")
    def why(self, obj: Correction) -> SafeString:
        return shortened(obj.reason) if obj.reason else format_html("{}", "-")

    @admin.display(description="made stale")
    def stale(self, obj: Correction) -> SafeString:
        """How many tasks it made stale; their names as title."""
        names = obj.stale_tasks or []
        return format_html('<span title="{}">{}</span>', ", ".join(names) or "none", len(names))

    @admin.display(description="what changed")
    def what_changed(self, obj: Correction) -> SafeString:
        return diff_table(obj.before, obj.after)
