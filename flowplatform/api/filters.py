"""Filtering shared by the list endpoints: strict parameters and the soft-delete rule."""

from __future__ import annotations

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field

from flowplatform.api.errors import RequestValidationError
from flowplatform.api.serializers import QUERY_BOOLEANS


class StrictFilterBackend(DjangoFilterBackend):
    """Invalid filter values answer 422 naming the query parameter (django-filter says 400)."""

    def filter_queryset(self, request, queryset, view):  # type: ignore[no-untyped-def]
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            raise RequestValidationError(parameter_errors(filterset), location="query")
        return filterset.qs


def parameter_errors(filterset: django_filters.FilterSet) -> dict[str, list[str]]:
    """The form's errors keyed by the query parameter the client sent.

    A range filter `created_at` is sent as created_at_after / created_at_before; its error
    names the one that is wrong.
    """
    query = filterset.data
    errors: dict[str, list[str]] = {}
    for name, messages in filterset.errors.items():
        field = filterset.form.fields.get(name)
        suffixes = getattr(getattr(field, "widget", None), "suffixes", None)
        named = {}
        if suffixes and name not in query:
            for suffix, subfield in zip(suffixes, field.fields, strict=True):
                parameter = f"{name}_{suffix}"
                if parameter in query:
                    try:
                        subfield.clean(query[parameter])
                    except ValidationError as exc:
                        named[parameter] = exc.messages
        errors.update(named or {name: messages})
    return errors


class StrictBooleanFormField(forms.Field):
    """true/false/1/0 (any case) or absent; `maybe` is an error, not a silent 'unset'."""

    default_error_messages = {"invalid": "Must be one of true, false, 1, 0."}

    def to_python(self, value: str | None) -> bool | None:
        if value in (None, ""):
            return None
        parsed = QUERY_BOOLEANS.get(str(value).strip().lower())
        if parsed is None:
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return parsed


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanFormField


MAX_INTEGER = 2**31 - 1  # the largest value an integer column holds


class IntegerFilter(django_filters.NumberFilter):
    """A whole number within the column's range (`?task_execution_idx=-1` or `=1.5` is a 422).

    django-filter's NumberFilter takes any decimal, which can never match an integer column.
    """

    field_class = forms.IntegerField

    def __init__(self, *args, minimum: int = 0, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, min_value=minimum, max_value=MAX_INTEGER, **kwargs)
        schema = {"type": "integer", "minimum": minimum, "maximum": MAX_INTEGER}
        extend_schema_field({**schema, "description": self.extra.get("help_text", "")})(self)


def include_deleted_filter(what: str) -> StrictBooleanFilter:
    return StrictBooleanFilter(
        method="filter_include_deleted",
        help_text=f"Also list soft-deleted {what} (hidden by default).",
    )


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

    include_deleted = include_deleted_filter("rows")
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
        # Empty entries (`?ordering=,created_at`, `?ordering=,`) are skipped, as in `status`.
        params = [param for param in value or [] if param]
        if not params:
            return qs
        return qs.order_by(*[self.get_ordering_value(param) for param in params], "id")


def ordering_filter(*fields: str) -> StableOrderingFilter:
    return StableOrderingFilter(
        fields=fields,
        help_text="Sort by one or more of: "
        + ", ".join(fields)
        + " (prefix - for descending). Ties are broken by id.",
    )
