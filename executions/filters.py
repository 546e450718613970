import django_filters

from executions.models import FlowExecution, TaskExecution
from flowplatform.api.filters import SoftDeleteFilterSet, StatusFilter, ordering_filter


class FlowExecutionFilterSet(SoftDeleteFilterSet):
    flow_id = django_filters.UUIDFilter(help_text="Only executions of this flow.")
    status = StatusFilter(choices=FlowExecution.Status.choices)
    ordering = ordering_filter("created_at", "updated_at", "status")

    class Meta:
        model = FlowExecution
        fields = []


class TaskExecutionFilterSet(SoftDeleteFilterSet):
    flow_execution_id = django_filters.UUIDFilter(help_text="Only attempts in this flow execution.")
    task_name = django_filters.CharFilter(help_text="Exact, case-sensitive task name.")
    task_execution_idx = django_filters.NumberFilter(help_text="Only attempts with this index.")
    status = StatusFilter(choices=TaskExecution.Status.choices)
    ordering = ordering_filter(
        "created_at", "updated_at", "task_name", "task_execution_idx", "status"
    )

    class Meta:
        model = TaskExecution
        fields = []
