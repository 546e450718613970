from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from flowplatform.admin import ReadOnlyModelAdmin, ScopedHistoryMixin, ScopedOrganizationFilter
from outputs.models import TaskOutput


@admin.register(TaskOutput)
class TaskOutputAdmin(ScopedHistoryMixin, SimpleHistoryAdmin, ReadOnlyModelAdmin):
    """Read-only, with the history of every change (who, when, before/after)."""

    list_display = ["task_name", "status", "flow_execution", "flow_version", "modified_by"]
    list_filter = ["status", ("organization", ScopedOrganizationFilter)]
    list_select_related = ["flow_execution__flow"]
    search_fields = ["task_name"]
