import django_filters

from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.api.filters import (
    IntegerFilter,
    SoftDeleteFilterSet,
    StatusFilter,
    ordering_filter,
)


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
    task_execution_idx = IntegerFilter(help_text="Only attempts with this index.")
    iteration = IntegerFilter(
        help_text="Only attempts of this iteration of a looped task (the item's index, or the "
        "until loop's round)."
    )
    status = StatusFilter(choices=TaskExecution.Status.choices)
    stale_correction_id = django_filters.UUIDFilter(
        help_text="Only attempts this correction made stale (their stale_cause names it)."
    )
    started_by_correction_id = django_filters.UUIDFilter(
        help_text="Only attempts this correction's re-execution created."
    )
    ordering = ordering_filter(
        "created_at", "updated_at", "task_name", "task_execution_idx", "iteration", "status"
    )

    class Meta:
        model = TaskExecution
        fields = []


class CorrectionFilterSet(django_filters.FilterSet):
    flow_execution_id = django_filters.UUIDFilter(help_text="Only corrections in this execution.")
    task_name = django_filters.CharFilter(help_text="Only corrections of this task (exact).")
    task_execution_id = django_filters.UUIDFilter(help_text="Only corrections of this attempt.")
    modified_by = django_filters.CharFilter(help_text="Only corrections by this actor (exact).")
    operation = django_filters.ChoiceFilter(
        choices=Correction.Operation.choices,
        help_text="Only corrections of this kind (e.g. `upgrade`).",
    )
    created_at = django_filters.IsoDateTimeFromToRangeFilter(
        help_text="created_at_after / created_at_before: ISO 8601 bounds, both inclusive."
    )
    ordering = ordering_filter("created_at")

    class Meta:
        model = Correction
        fields = []
