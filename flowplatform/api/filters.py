"""Filtering shared by the list endpoints: strict parameters and the soft-delete rule."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend

from flowplatform.api.errors import RequestValidationError


class StrictFilterBackend(DjangoFilterBackend):
    """Invalid filter values answer 422 naming the query parameter (django-filter says 400)."""

    def filter_queryset(self, request, queryset, view):  # type: ignore[no-untyped-def]
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            raise RequestValidationError(filterset.errors, location="query")
        return filterset.qs


class StatusFilter(django_filters.MultipleChoiceFilter):
    """`?status=a&status=b` or `?status=a,b`; each value must be a known status."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("help_text", "One or more statuses, repeated or comma-separated.")
        super().__init__(*args, **kwargs)

    def filter(self, qs: QuerySet, value: list[str]) -> QuerySet:
        return qs.filter(**{f"{self.field_name}__in": value}) if value else qs


def split_commas(query_params):  # type: ignore[no-untyped-def]
    """A copy of the query where each `status` value a,b is split into a and b."""
    data = query_params.copy()
    if "status" in data:
        data.setlist(
            "status",
            [part.strip() for raw in data.getlist("status") for part in raw.split(",") if part],
        )
    return data


class SoftDeleteFilterSet(django_filters.FilterSet):
    """Rows with status `deleted` are hidden unless `status` names it or include_deleted=true."""

    include_deleted = django_filters.BooleanFilter(
        method="filter_include_deleted",
        help_text="Also list soft-deleted rows (hidden by default).",
    )
    created_at = django_filters.IsoDateTimeFromToRangeFilter(
        help_text="created_at_after / created_at_before: ISO 8601 bounds, both inclusive."
    )
    updated_at = django_filters.IsoDateTimeFromToRangeFilter(
        help_text="updated_at_after / updated_at_before: ISO 8601 bounds, both inclusive."
    )
    modified_by = django_filters.CharFilter(help_text="Exact actor identifier.")

    def __init__(self, data=None, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(split_commas(data) if data is not None else None, *args, **kwargs)

    def filter_include_deleted(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        return qs  # applied in filter_queryset, where all parameters are known

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        queryset = super().filter_queryset(queryset)
        wants_deleted = self.form.cleaned_data.get("include_deleted") or (
            "deleted" in (self.form.cleaned_data.get("status") or [])
        )
        return queryset if wants_deleted else queryset.exclude(status="deleted")


class StableOrderingFilter(django_filters.OrderingFilter):
    """`?ordering=a,-b` over the allowed fields; ties are broken by id, so pages are stable."""

    def filter(self, qs: QuerySet, value: list[str] | None) -> QuerySet:
        if not value:
            return qs
        return qs.order_by(*[self.get_ordering_value(param) for param in value], "id")


def ordering_filter(*fields: str) -> StableOrderingFilter:
    return StableOrderingFilter(
        fields=fields,
        help_text="Sort by one or more of: "
        + ", ".join(fields)
        + " (prefix - for descending). Ties are broken by id.",
    )
