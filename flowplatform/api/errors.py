"""The one error shape: {"error": {"code", "message", "details"}, "request_id"} (+ "detail" on 422).

Every failure that reaches a client goes through here, from DRF views (exception_handler), from
plain Django views and middleware (error_response, server_error_response). No traceback is ever
put in a body; unexpected errors are logged with the request id instead.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf

from flowplatform.exceptions import ConcurrentUpdate, DomainError, InvalidInput

logger = logging.getLogger("flowplatform.errors")

Loc = tuple[str | int, ...]


def _request_id(request: HttpRequest | None) -> str | None:
    return getattr(request, "request_id", None)


def error_response(
    request: HttpRequest | None,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    validation: list[dict[str, Any]] | None = None,
) -> JsonResponse:
    body: dict[str, Any] = {
        "error": {"code": code, "message": message, "details": details or {}},
        "request_id": _request_id(request),
    }
    if validation is not None:
        body["detail"] = validation
    return JsonResponse(body, status=status, headers=headers)


def server_error_response(request: HttpRequest | None, exc: BaseException) -> JsonResponse:
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable: %s", exc)
        return error_response(
            request,
            503,
            "service_unavailable",
            "The database is unavailable; try again shortly.",
            headers={"Retry-After": "5"},
        )
    logger.error("unhandled error", exc_info=exc)
    return error_response(request, 500, "internal_error", "An unexpected error occurred.")


def flatten_validation_errors(detail: Any, prefix: Loc) -> list[dict[str, Any]]:
    """DRF's nested error dict/list → the seed's flat [{"loc", "msg", "type"}] list."""
    items: list[dict[str, Any]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            loc = prefix if key in ("non_field_errors", "__all__") else (*prefix, key)
            items.extend(flatten_validation_errors(value, loc))
    elif isinstance(detail, list):
        if all(isinstance(entry, str) for entry in detail):
            for entry in detail:
                items.extend(flatten_validation_errors(entry, prefix))
        else:
            for index, entry in enumerate(detail):
                if entry:
                    items.extend(flatten_validation_errors(entry, (*prefix, index)))
    else:
        items.append(
            {"loc": list(prefix), "msg": str(detail), "type": getattr(detail, "code", "invalid")}
        )
    return items


def validation_response(request: HttpRequest | None, items: list[dict[str, Any]]) -> JsonResponse:
    shown = 5
    summary = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in items[:shown])
    if len(items) > shown:
        summary += f"; and {len(items) - shown} more problem(s), every one in `detail`"
    return error_response(
        request,
        422,
        "validation_error",
        f"Request validation failed: {summary}" if summary else "Request validation failed.",
        details={"errors": items},
        validation=items,
    )


class RequestValidationError(drf.ValidationError):
    """A DRF validation error that knows where the bad value came from (body, query, header)."""

    def __init__(self, detail: Any, location: str = "body") -> None:
        super().__init__(detail)
        self.location = location


_DRF_CODES: dict[type[drf.APIException], tuple[int, str]] = {
    drf.ParseError: (400, "malformed_request"),
    drf.NotAuthenticated: (401, "unauthorized"),
    drf.AuthenticationFailed: (401, "unauthorized"),
    drf.PermissionDenied: (403, "forbidden"),
    drf.NotFound: (404, "not_found"),
    drf.MethodNotAllowed: (405, "method_not_allowed"),
    drf.NotAcceptable: (406, "not_acceptable"),
    drf.UnsupportedMediaType: (415, "unsupported_media_type"),
    drf.Throttled: (429, "throttled"),
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> JsonResponse:
    """DRF's EXCEPTION_HANDLER: every exception raised in a view ends here."""
    request = context.get("request")
    if isinstance(exc, drf.ValidationError):
        location = getattr(exc, "location", "body")
        return validation_response(request, flatten_validation_errors(exc.detail, (location,)))
    if isinstance(exc, InvalidInput):
        items = [{"loc": list(loc), "msg": msg, "type": type_} for loc, msg, type_ in exc.errors]
        return validation_response(request, items)
    if isinstance(exc, ConcurrentUpdate) and context.get("view") is not None:
        current = context["view"].get_serializer(exc.current).data
        return error_response(request, 409, exc.code, exc.message, {"current": current})
    if isinstance(exc, DomainError):
        return error_response(request, exc.status_code, exc.code, exc.message, exc.details)
    if isinstance(exc, Http404):
        return error_response(request, 404, "not_found", "Not found.")
    if isinstance(exc, DjangoPermissionDenied):
        return error_response(request, 403, "forbidden", "Permission denied.")
    if isinstance(exc, RequestDataTooBig):
        return error_response(request, 413, "payload_too_large", "The request body is too large.")
    if isinstance(exc, drf.APIException):
        status, code = next(
            (pair for cls, pair in _DRF_CODES.items() if isinstance(exc, cls)),
            (exc.status_code, exc.default_code),
        )
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return error_response(request, status, code, str(exc.detail), headers=headers)
    if isinstance(exc, DataError):
        # e.g. a NUL character (\u0000), which PostgreSQL cannot store in JSON or text
        return validation_response(
            request,
            [
                {
                    "loc": ["body"],
                    "msg": "a value cannot be stored (is there a \\u0000 in it?)",
                    "type": "unstorable_value",
                }
            ],
        )
    if isinstance(exc, IntegrityError):
        logger.info("integrity error answered as 409: %s", exc)
        return error_response(
            request, 409, "conflict", "The change conflicts with the current state of the data."
        )
    return server_error_response(request, exc)
