"""Writes to flows: create, change (a new immutable version when the definition changes), delete."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from flowplatform.exceptions import Conflict, InvalidInput
from flowplatform.tenancy.models import Organization
from flows.definitions import compile_definition
from flows.models import Flow, FlowVersion


def _check_name(name: str) -> str:
    if not 1 <= len(name) <= 200:
        raise InvalidInput.field("name", "must be 1 to 200 characters")
    return name


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a flow named '{name}' already exists in this organization")


def _add_version(flow: Flow, definition: str, parsed: dict, actor: str, number: int) -> FlowVersion:
    version = FlowVersion.objects.create(
        organization_id=flow.organization_id,
        flow=flow,
        version=number,
        definition=definition,
        parsed=parsed,
        created_by=actor,
    )
    flow.current_version = version
    return version


@transaction.atomic
def create_flow(
    organization: Organization, *, name: str, definition: str, description: str = "", actor: str
) -> Flow:
    parsed, _ = compile_definition(definition)  # reject before writing anything
    flow = Flow(
        organization=organization,
        name=_check_name(name),
        description=description,
        modified_by=actor,
    )
    try:
        with transaction.atomic():
            flow.save()
    except IntegrityError:
        raise _name_taken(name) from None
    _add_version(flow, definition, parsed, actor, 1)
    flow.save(update_fields=["current_version"])
    return flow


@transaction.atomic
def update_flow(
    flow: Flow,
    *,
    actor: str,
    name: str | None = None,
    description: str | None = None,
    definition: str | None = None,
) -> Flow:
    """Apply the given changes; a changed definition becomes version N+1 (earlier ones stay)."""
    # The row lock serializes concurrent edits so version numbers never collide.
    flow = (
        Flow.objects.select_for_update(of=("self",))
        .select_related("current_version")
        .get(pk=flow.pk)
    )
    if flow.deleted_at is not None:
        raise Conflict("the flow is deleted and cannot be changed")
    if name is not None:
        flow.name = _check_name(name)
    if description is not None:
        flow.description = description
    if definition is not None and definition != flow.current_version.definition:
        parsed, _ = compile_definition(definition)
        _add_version(flow, definition, parsed, actor, flow.current_version.version + 1)
    flow.modified_by = actor
    try:
        with transaction.atomic():
            flow.save()
    except IntegrityError:
        raise _name_taken(flow.name) from None
    return flow


def delete_flow(flow: Flow, *, actor: str) -> Flow:
    """Soft delete: hidden from lists; versions and executions stay for the audit trail."""
    if flow.deleted_at is None:
        flow.deleted_at = timezone.now()
        flow.modified_by = actor
        flow.save(update_fields=["deleted_at", "modified_by", "updated_at"])
    return flow
