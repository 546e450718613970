"""limit/offset pagination with strict parameters: a bad limit is an error, not a silent default."""

from __future__ import annotations

from django.conf import settings
from rest_framework import pagination
from rest_framework.request import Request

from flowplatform.api.errors import RequestValidationError

MAX_OFFSET = 2**31 - 1


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
        return self._int_param(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    def get_schema_operation_parameters(self, view: object) -> list[dict]:
        """The parameters as documented, with the bounds the API enforces."""
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0, "maximum": MAX_OFFSET},
        }
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"] = {**parameter["schema"], **bounds.get(parameter["name"], {})}
            if parameter["name"] == self.limit_query_param:
                parameter["description"] = (
                    f"How many results to return: 1 to {self.max_limit} "
                    f"(default {self.default_limit})."
                )
            elif parameter["name"] == self.offset_query_param:
                parameter["description"] = "How many results to skip (default 0)."
        return parameters
