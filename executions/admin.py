from django.contrib import admin

from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.admin import ReadOnlyModelAdmin


@admin.register(FlowExecution)
class FlowExecutionAdmin(ReadOnlyModelAdmin):
    list_display = ["id", "flow", "organization", "status", "created_at", "updated_at"]
    list_filter = ["status", "organization"]
    list_select_related = ["flow", "organization"]


@admin.register(TaskExecution)
class TaskExecutionAdmin(ReadOnlyModelAdmin):
    list_display = ["task_name", "task_execution_idx", "status", "flow_execution", "modified_by"]
    list_filter = ["status", "organization"]
    search_fields = ["task_name"]


@admin.register(Correction)
class CorrectionAdmin(ReadOnlyModelAdmin):
    """Every correction: who, when, why, before/after, the stale set, the attempts it started."""

    list_display = [
        "created_at",
        "task_name",
        "operation",
        "source",
        "modified_by",
        "execute_flow",
        "flow_execution",
    ]
    list_filter = ["operation", "source", "execute_flow", "organization"]
    list_select_related = ["flow_execution"]
    search_fields = ["task_name", "modified_by", "reason"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Correction._meta.fields]
