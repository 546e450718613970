"""Domain exceptions raised by services; flowplatform.api.errors maps each to one HTTP answer."""

from __future__ import annotations

from typing import Any

FLOW_EXECUTION_NOT_FOUND = "Flow execution not found"


class DomainError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class ConcurrentUpdate(Conflict):
    """The client's `updated_at` is not the stored one: somebody changed the row meanwhile.

    `current` is the stored record; the API renders it under `error.details.current`.
    """

    code = "concurrent_update"

    def __init__(self, message: str, current: Any) -> None:
        super().__init__(message)
        self.current = current


class InvalidInput(DomainError):
    """One or more fields are invalid; `errors` are (loc, msg, type) triples like the seed's 422."""

    status_code = 422
    code = "validation_error"

    def __init__(self, errors: list[tuple[tuple[str | int, ...], str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg, _ in errors))

    @classmethod
    def field(cls, name: str, message: str, type_: str = "invalid") -> InvalidInput:
        return cls([(("body", name), message, type_)])


class InvalidTransition(InvalidInput):
    def __init__(self, current: str, requested: str) -> None:
        super().__init__(
            [
                (
                    ("body", "status"),
                    f"status cannot change from '{current}' to '{requested}'",
                    "invalid_transition",
                )
            ]
        )
