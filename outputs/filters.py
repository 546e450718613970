import django_filters

from flowplatform.api.filters import (
    IntegerFilter,
    SoftDeleteFilterSet,
    StatusFilter,
    ordering_filter,
)
from outputs.models import TaskOutput


class TaskOutputFilterSet(SoftDeleteFilterSet):
    flow_execution_id = django_filters.UUIDFilter(help_text="Only outputs of this flow execution.")
    task_name = django_filters.CharFilter(help_text="Exact, case-sensitive task name.")
    status = StatusFilter(choices=TaskOutput.Status.choices)
    flow_version = IntegerFilter(minimum=1, help_text="Only outputs of this flow version.")
    ordering = ordering_filter("created_at", "updated_at", "task_name", "status")

    class Meta:
        model = TaskOutput
        fields = []
