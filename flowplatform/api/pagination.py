"""limit/offset pagination with strict parameters: a bad limit is an error, not a silent default."""

from __future__ import annotations

from django.conf import settings
from rest_framework import pagination
from rest_framework.request import Request

from flowplatform.api.errors import RequestValidationError


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """`?limit=` (1..API_MAX_PAGE_SIZE, default API_PAGE_SIZE) and `?offset=` (>= 0)."""

    @property
    def default_limit(self) -> int:  # type: ignore[override]
        return settings.API_PAGE_SIZE

    @property
    def max_limit(self) -> int:  # type: ignore[override]
        return settings.API_MAX_PAGE_SIZE

    def _int_param(self, request: Request, name: str, default: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise RequestValidationError(
                {name: [f"must be an integer from {low} to {high}"]}, location="query"
            )
        return value

    def get_limit(self, request: Request) -> int:
        return self._int_param(
            request, self.limit_query_param, self.default_limit, 1, self.max_limit
        )

    def get_offset(self, request: Request) -> int:
        return self._int_param(request, self.offset_query_param, 0, 0, 2**31 - 1)
