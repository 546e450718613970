"""Viewset base for tenant-owned resources: every query is scoped to the caller's organization."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Model, QuerySet
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.serializers import Serializer

from flowplatform.api.serializers import correction_reason
from flowplatform.exceptions import FLOW_EXECUTION_NOT_FOUND, NotFound
from flowplatform.idempotency import IdempotentWritesMixin
from flowplatform.tenancy.services import resolve_actor


class TenantViewSet(IdempotentWritesMixin, viewsets.GenericViewSet):
    """Scopes `queryset` to request.auth's organization; a foreign or malformed id is a 404.

    Subclasses set `queryset` and `not_found_message`; nothing here looks outside the caller's
    organization, so another tenant's object is indistinguishable from a missing one. POST, PUT
    and PATCH honour an `Idempotency-Key` header (flowplatform.idempotency).
    """

    not_found_message = "Not found."
    lookup_value_regex = "[^/]+"

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
