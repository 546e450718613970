"""Viewset base for tenant-owned resources: every query is scoped to the caller's organization."""

from __future__ import annotations

import logging
import uuid
from contextlib import nullcontext
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import Model, QuerySet
from rest_framework import viewsets
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.serializers import Serializer

from flowplatform import dbretry, rls
from flowplatform.api.errors import RequestValidationError
from flowplatform.api.serializers import correction_reason
from flowplatform.exceptions import FLOW_EXECUTION_NOT_FOUND, NotFound
from flowplatform.idempotency import IdempotentWritesMixin, claims_key
from flowplatform.tasks import jobs_run_here
from flowplatform.tenancy.models import ApiKey, TenantOwned
from flowplatform.tenancy.services import record_key_usage, resolve_actor

logger = logging.getLogger(__name__)


class TenantViewSet(IdempotentWritesMixin, viewsets.GenericViewSet):
    """Scopes `queryset` to request.auth's organization; a foreign or malformed id is a 404.

    Subclasses set `queryset` and `not_found_message`; nothing here looks outside the caller's
    organization, so another tenant's object is indistinguishable from a missing one. POST, PUT
    and PATCH honour an `Idempotency-Key` header (flowplatform.idempotency).
    """

    not_found_message = "Not found."
    lookup_value_regex = "[^/]+"
    api_key: ApiKey | None = None  # the request's key, once `initial` has authenticated it
    _initialized = False  # `initial` ran: authentication, permissions, the Idempotency-Key
    _scoped = False  # the handler is running in a transaction of ours
    _committed = False
    _handler_done = False  # the handler returned: what failed after it was the commit

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        """DRF's APIView.dispatch, with the request in one transaction (run_handler): its
        first statement authenticates the API key and scopes the transaction to the key's
        organization (row-level security, flowplatform.rls.key_scope); then the handler. A
        request that claims an Idempotency-Key is authenticated and claims it first, each in a
        short transaction of its own, so that the claim is committed before the work starts; one
        without an Authorization header is refused before any transaction.

        When PostgreSQL aborts the transaction for a deadlock or a serialization failure, it
        runs again from its start, scoped to the organization already known
        (flowplatform.dbretry; FLOWPLATFORM_DB_RETRIES times, then the 503): authentication
        and the claim are not repeated. The Idempotency-Key's response is stored, and the
        key's use recorded, after the transaction that did the work."""
        self.args = args
        self.kwargs = kwargs
        request = self.initialize_request(request, *args, **kwargs)
        self.request = request
        self.headers = self.default_response_headers
        jobs_before = jobs_run_here()
        try:
            try:
                if claims_key(request) or not request.META.get("HTTP_AUTHORIZATION"):
                    # The claim commits before the work; without a key, the 401 needs no
                    # database at all.
                    self.initial(request, *args, **kwargs)
                response = dbretry.retrying(
                    lambda: self.run_handler(request, *args, **kwargs),
                    what=f"{request.method} {request.path}",
                )
            except Exception as exc:
                if (
                    self._handler_done
                    and not self._committed
                    and isinstance(exc, OperationalError | InterfaceError)
                    and not dbretry.is_retryable(exc)
                ):
                    # The commit itself failed (say the connection broke): it may have landed.
                    # The key stays claimed, as for a process that died mid-request, so a retry
                    # with it cannot do the work twice; it expires with IDEMPOTENCY_TTL.
                    logger.warning("the outcome of %s %s is unknown", request.method, request.path)
                    self.idempotency_record = None
                response = self.handle_exception(exc)
            self.response = self.finalize_response(request, response, *args, **kwargs)
        except BaseException:
            if not self._committed:  # the work did not happen: a retry with the key may do it
                self.release_idempotency_key()
            raise
        if jobs_run_here() != jobs_before:
            try:
                self.refresh_response(self.response)
            except Exception:  # the answer as of the commit is still true; keep it
                logger.exception("re-reading the answer after the request's jobs failed")
        try:
            self.settle_idempotency_key(self.response)
        except DatabaseError:
            if not self._committed:
                raise
            # The work committed: answer it. The key stays claimed (a retry is told so).
            logger.exception("storing the Idempotency-Key's answer failed after the commit")
        self.record_key_usage(self.response)
        return self.response

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Authentication (in the request's transaction: it scopes it), permissions, the
        checks of the request and the Idempotency-Key claim; once per request."""
        super().initial(request, *args, **kwargs)
        self.api_key = request.auth
        self._initialized = True

    def record_key_usage(self, response: Any) -> None:
        """The key's `last_used_at`, when it is due (tenancy.services.record_key_usage); not
        after a server error, when the database may be what failed."""
        if self.api_key is None or response.status_code >= 500:
            return
        try:
            record_key_usage(self.api_key)
        except DatabaseError:  # the answer stands; the next request records the use
            logger.warning("recording the use of an API key failed", exc_info=True)

    def check_request(self, request: Request) -> None:
        """An empty query value (`?limit=`, `?ordering=`) is a 422 naming the parameter, never
        read as "absent": leave the parameter out instead."""
        empty = sorted(
            name
            for name, values in request.query_params.lists()
            if any(not value.strip() for value in values)
        )
        if empty:
            raise RequestValidationError(
                {name: ["must not be empty; leave the parameter out instead"] for name in empty},
                location="query",
            )

    def run_handler(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        """One run of the request in one transaction, rolled back if the answer is an error.

        Its first run authenticates in it (`initial`: the key scopes the transaction); a run
        again, or one after an Idempotency-Key claim, is scoped to the key's organization.
        A deadlock or serialization failure is raised instead of answered, so that `dispatch`
        runs this again: the transaction was rolled back, and with it the jobs it would have
        enqueued on commit. Nothing raised here follows a commit (the jobs' on-commit hooks are
        robust: a failing job is logged), so a retry never repeats committed work. SQLite has
        no row-level security: a read there needs no transaction (nor its write lock).
        """
        read_only = request.method in SAFE_METHODS
        if not self._initialized:
            scope = rls.key_scope(read_only=read_only)
        else:
            scope = rls.tenant_scope(self.organization, read_only=read_only)
        self._handler_done = False
        with scope:
            self._scoped = not isinstance(scope, nullcontext)
            if self._scoped:  # the first hook after the commit: whatever fails later, it happened
                transaction.on_commit(lambda: setattr(self, "_committed", True))
            try:
                if not self._initialized:
                    self.initial(request, *args, **kwargs)
                handler = self.http_method_not_allowed
                if request.method.lower() in self.http_method_names:
                    handler = getattr(self, request.method.lower(), handler)
                response = handler(request, *args, **kwargs)
            except Exception as exc:
                if self._scoped and dbretry.is_retryable(exc):
                    raise
                response = self.handle_exception(exc)
            finally:
                scoped, self._scoped = self._scoped, False
            # What fails from here on is the commit (a rolled-back answer commits nothing).
            self._handler_done = scoped and not transaction.get_rollback()
        return response

    def refresh_response(self, response: Any) -> None:
        """The embedded backend ran jobs when the handler's transaction committed (e.g. a
        started flow ran to its end): answer the object as it is now, not as it was before.
        Fields the object's serializer does not have (a correction's report) stay as they
        are."""
        data = getattr(response, "data", None)
        if response.status_code >= 300 or not isinstance(data, dict) or "id" not in data:
            return
        with rls.tenant_scope(self.organization):
            record = self.get_queryset().filter(pk=data["id"]).first()
            if record is None:
                return
            fresh = self.get_serializer(record).data
        response.data = {**data, **{name: fresh[name] for name in data if name in fresh}}

    def handle_exception(self, exc: Exception) -> Any:
        response = super().handle_exception(exc)
        if self._scoped:
            transaction.set_rollback(True)  # an error answer leaves nothing written
        return response

    @property
    def organization(self) -> Any:
        return self.request.auth.organization

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().filter(organization=self.organization)

    def get_object(self) -> Model:
        raw = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        try:
            pk = uuid.UUID(str(raw))
        except ValueError:
            raise NotFound(self.not_found_message) from None
        obj = self.get_queryset().filter(pk=pk).first()
        if obj is None:
            raise NotFound(self.not_found_message)
        if isinstance(obj, TenantOwned):
            obj.organization = self.organization  # the caller's (the filter): no query to read it
        return obj


class Router(SimpleRouter):
    """Routes answer with and without a trailing slash; never a redirect (it would drop a PUT)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


class RecordWriteMixin:
    """POST, PUT and PATCH for records of a flow execution (task executions, task outputs).

    POST names the flow execution and the organization; an organization other than the
    caller's is answered like a missing flow execution (404), so nothing is written into another
    tenant. PUT/PATCH keep identity fields immutable and use `updated_at` as an optimistic lock.
    Subclasses set the serializers, `identity_fields`, and the services `create_record` and
    `update_record`. A serializer with a `reason` field takes a correction's reason, from the
    body or the X-Correction-Reason header; the service gets it as `reason`.
    """

    create_serializer_class: type[Serializer]
    update_serializer_class: type[Serializer]
    identity_fields: tuple[str, ...]

    def create_record(self, organization: Any, *, actor: str, **fields: Any) -> Model:
        raise NotImplementedError

    def update_record(self, record: Model, **kwargs: Any) -> Model:
        raise NotImplementedError

    def create(self, request: Request) -> Response:
        serializer = self.create_serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        organization = request.auth.organization
        if data.pop("organization_id") != organization.id:
            raise NotFound(FLOW_EXECUTION_NOT_FOUND)
        actor = resolve_actor(request.auth, data.pop("modified_by", None))
        if "reason" in serializer.fields:
            data["reason"] = correction_reason(request, data.pop("reason", None))
        record = self.create_record(organization, actor=actor, **data)
        return Response(self.get_serializer(record).data, status=201)  # type: ignore[attr-defined]

    def split_update(self, request: Request, partial: bool) -> dict[str, Any]:
        """Validate the body; return the service's keyword arguments."""
        serializer = self.update_serializer_class(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        identity = {name: data.pop(name) for name in self.identity_fields if name in data}
        kwargs = {
            "identity": identity,
            "expected_updated_at": data.pop("updated_at", None),
            "actor": resolve_actor(request.auth, data.pop("modified_by", None)),
        }
        if "reason" in serializer.fields:
            kwargs["reason"] = correction_reason(request, data.pop("reason", None))
        return {**kwargs, "changes": data}

    def update(self, request: Request, pk: str, partial: bool = False) -> Response:
        record = self.get_object()  # type: ignore[attr-defined]
        record = self.update_record(record, **self.split_update(request, partial))
        return Response(self.get_serializer(record).data)  # type: ignore[attr-defined]

    def partial_update(self, request: Request, pk: str) -> Response:
        return self.update(request, pk, partial=True)
