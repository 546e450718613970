from django.contrib import admin

from executions.models import FlowExecution, TaskExecution
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
