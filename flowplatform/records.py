"""Rules every update of a tenant record follows, whichever app owns the record.

Identity fields never change (a body that names other values is refused, not applied to a
different row), and `updated_at` works as an optimistic lock: a client that sends the value it
read gets a 409 if somebody changed the row since; a client that omits it gets last-write-wins.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db.models import Model

from flowplatform.exceptions import ConcurrentUpdate, InvalidInput


def _same(stored: Any, supplied: Any) -> bool:
    if isinstance(stored, uuid.UUID):
        return str(stored) == str(supplied)
    return stored == supplied


def check_identity(record: Model, supplied: dict[str, Any]) -> None:
    """Each supplied identity field must equal the stored one (fields are attribute names)."""
    errors = [
        (
            ("body", name),
            f"cannot be changed (stored value is {getattr(record, name)})",
            "immutable",
        )
        for name, value in supplied.items()
        if not _same(getattr(record, name), value)
    ]
    if errors:
        raise InvalidInput(errors)


def check_unchanged_since(record: Model, expected_updated_at: datetime | None) -> None:
    if expected_updated_at is not None and record.updated_at != expected_updated_at:
        raise ConcurrentUpdate(
            f"{type(record).__name__} {record.pk} was modified at "
            f"{record.updated_at.isoformat()}, after the version you sent "
            f"({expected_updated_at.isoformat()}); re-read it and try again",
            current=record,
        )


def lock_for_update(
    record: Model, *, identity: dict[str, Any], expected_updated_at: datetime | None
) -> Model:
    """Re-read `record` under a row lock and check its identity and the optimistic lock.
    Call inside a transaction."""
    record = type(record).objects.select_for_update().get(pk=record.pk)
    check_identity(record, identity)
    check_unchanged_since(record, expected_updated_at)
    return record


def apply_changes(
    record: Model, *, mutable_fields: tuple[str, ...], changes: dict[str, Any], actor: str
) -> dict[str, Any]:
    """Apply `changes` to a locked record and save; return the values they replaced.

    A status is never among them: its moves have rules of their own (executions.transitions),
    applied to the record before this saves it.
    """
    read_only = sorted(set(changes) - set(mutable_fields))
    if read_only:
        raise InvalidInput(
            [(("body", name), "cannot be changed", "read_only") for name in read_only]
        )
    before = {name: getattr(record, name) for name in changes}
    for name, value in changes.items():
        setattr(record, name, value)
    record.modified_by = actor
    record.save()
    return before
