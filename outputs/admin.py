from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from simple_history.admin import SimpleHistoryAdmin

from flowplatform.admin import ReadOnlyModelAdmin, ScopedOrganizationFilter
from outputs.models import TaskOutput


@admin.register(TaskOutput)
class TaskOutputAdmin(SimpleHistoryAdmin, ReadOnlyModelAdmin):
    """Read-only, with the history of every change (who, when, before/after)."""

    list_display = ["task_name", "status", "flow_execution", "flow_version", "modified_by"]
    list_filter = ["status", ("organization", ScopedOrganizationFilter)]
    list_select_related = ["flow_execution"]
    search_fields = ["task_name"]

    def history_form_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        raise PermissionDenied  # reverting would bypass the services
