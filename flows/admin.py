from django.contrib import admin

from flowplatform.admin import ReadOnlyModelAdmin
from flows.models import Flow, FlowVersion


@admin.register(Flow)
class FlowAdmin(ReadOnlyModelAdmin):
    list_display = ["name", "organization", "current_version", "created_at", "deleted_at"]
    list_filter = ["organization"]
    list_select_related = ["organization", "current_version"]
    search_fields = ["name"]


@admin.register(FlowVersion)
class FlowVersionAdmin(ReadOnlyModelAdmin):
    list_display = ["flow", "version", "organization", "created_by", "created_at"]
    list_select_related = ["flow", "organization"]
    list_filter = ["organization"]
