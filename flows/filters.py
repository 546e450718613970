import django_filters
from django.db.models import QuerySet

from flowplatform.api.filters import include_deleted_filter, ordering_filter
from flows.models import Flow


class FlowFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(help_text="Exact flow name.")
    created_at = django_filters.IsoDateTimeFromToRangeFilter(
        help_text="created_at_after / created_at_before (ISO 8601)."
    )
    updated_at = django_filters.IsoDateTimeFromToRangeFilter(
        help_text="updated_at_after / updated_at_before (ISO 8601)."
    )
    modified_by = django_filters.CharFilter()
    include_deleted = include_deleted_filter("flows")
    ordering = ordering_filter("created_at", "updated_at", "name")

    class Meta:
        model = Flow
        fields = []

    def filter_include_deleted(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        return qs if value else qs.filter(deleted_at__isnull=True)

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        if not self.form.cleaned_data.get("include_deleted"):
            queryset = queryset.filter(deleted_at__isnull=True)
        return super().filter_queryset(queryset)
