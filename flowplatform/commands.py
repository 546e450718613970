"""What management commands share: a domain error as one line that names the command's own
argument (`--scope: …`), not the API's field location (`body.scopes: …`)."""

from __future__ import annotations

from collections.abc import Mapping

from django.core.management.base import CommandError

from flowplatform.exceptions import DomainError, InvalidInput


def command_error(exc: DomainError, arguments: Mapping[str, str] | None = None) -> CommandError:
    """`arguments`: a field's name → the argument that sets it (default `--field-name`)."""
    if not isinstance(exc, InvalidInput):
        return CommandError(exc.message)
    arguments = arguments or {}
    parts = []
    for loc, message, _ in exc.errors:
        field = str(loc[-1]) if loc else ""
        parts.append(f"{arguments.get(field, '--' + field.replace('_', '-'))}: {message}")
    return CommandError("; ".join(parts))
