"""Request ids on every request and response, and JSON errors for failures outside DRF views."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.signals import got_request_exception
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse

from flowplatform import logcontext, rls
from flowplatform.admin import organization_ids as admin_organization_ids
from flowplatform.api.errors import error_response, server_error_response
from flowplatform.headers import REQUEST_ID_HEADER

# A client-supplied id is echoed into logs and headers, so only a short, plain token is honoured.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "current_request_id", default="-"
)


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        supplied = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = supplied if _SANE_REQUEST_ID.match(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        token = current_request_id.set(request_id)
        try:
            with logcontext.scope():  # what the request binds (its organization) ends with it
                response = self.get_response(request)
        finally:
            current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _remember_unhandled_exception(
    sender: Any, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """got_request_exception: Django is about to answer an exception raised outside a view (in
    a middleware, e.g. the admin's session lookup when the database is gone) with its own 500
    page, a traceback when DEBUG is on. Keep the exception so JsonErrorMiddleware answers it."""
    if request is not None:
        request.unhandled_exception = sys.exception()


class JsonErrorMiddleware:
    """Turns exceptions that escape a view or a middleware below this one into the standard
    error shape (503 when the database is unavailable), never a traceback or an HTML page."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        got_request_exception.connect(
            _remember_unhandled_exception, dispatch_uid="flowplatform-unhandled-exception"
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        exception = getattr(request, "unhandled_exception", None)
        if exception is not None and response.status_code >= 500:
            return server_error_response(request, exception)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, Http404 | PermissionDenied):
            return None  # Django answers 404 / 403 itself (e.g. admin pages a user may not see)
        return server_error_response(request, exception)


class AdminScopeMiddleware:
    """Each admin request by staff runs in one transaction that row-level security scopes to
    what the user may see: a superuser's is an audited bypass, a staff member's is their
    organizations (tenancy.Membership). An error answer rolls it back. Other requests pass."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.prefix: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.prefix is None:
            self.prefix = reverse("admin:index")
        user = getattr(request, "user", None)
        if (
            not request.path.startswith(self.prefix)
            or user is None
            or not (user.is_active and user.is_staff)
        ):
            return self.get_response(request)
        if user.is_superuser:
            scope = rls.bypass(
                f"admin superuser {user.get_username()!r} (id {user.pk})",
                f"{request.method} {request.path}",
            )
        else:
            with rls.lookup():  # cached on the request for the admin's own scoping
                scope = rls.tenant_scope(admin_organization_ids(request))
        with scope:
            response = self.get_response(request)
            if response.status_code >= 400:
                transaction.set_rollback(True)  # an error answer leaves nothing written
        return response


class ContentLengthRequiredMiddleware:
    """A request body sent without Content-Length (`Transfer-Encoding: chunked`) is a 411.

    DRF reads no body without a Content-Length, and Django under WSGI cannot: such a body would
    be silently ignored, so a write would act on an empty body. Nothing of it is read.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "HTTP_TRANSFER_ENCODING" in request.META and not request.META.get("CONTENT_LENGTH"):
            return error_response(
                request,
                411,
                "length_required",
                "Send the request body with a Content-Length header; chunked request bodies "
                "are not accepted.",
            )
        return self.get_response(request)


def not_found_view(request: HttpRequest, path: str = "") -> HttpResponse:
    return error_response(request, 404, "not_found", "No such endpoint.")
