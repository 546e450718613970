from django.contrib import admin

from flowplatform.admin import ReadOnlyModelAdmin
from outputs.models import TaskOutput


@admin.register(TaskOutput)
class TaskOutputAdmin(ReadOnlyModelAdmin):
    list_display = ["task_name", "status", "flow_execution", "flow_version", "modified_by"]
    list_filter = ["status", "organization"]
    search_fields = ["task_name"]
