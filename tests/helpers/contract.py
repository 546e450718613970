"""Checks of the API's answers, as the contract tests of both seed pages state them: the one
error shape, its 422 problems, and the JSON value types."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any


def assert_error(
    response: Any, status: int, code: str, request_id: str | None = None
) -> dict[str, Any]:
    """The one error shape; 422 also carries the seed's [{"loc", "msg", "type"}] list."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == (
        {"error", "request_id", "detail"} if status == 422 else {"error", "request_id"}
    )
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert body["request_id"] == response["X-Request-ID"]
    if request_id is not None:
        assert body["request_id"] == request_id
    if status == 422:
        assert isinstance(body["detail"], list)
        assert body["detail"]
        for item in body["detail"]:
            assert set(item) == {"loc", "msg", "type"}
            assert isinstance(item["loc"], list)
            assert isinstance(item["msg"], str)
            assert isinstance(item["type"], str)
    return body


def problems(body: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    """422 body → {loc: type}."""
    return {tuple(item["loc"]): item["type"] for item in body["detail"]}


def is_uuid_string(value: Any) -> bool:
    return isinstance(value, str) and str(uuid.UUID(value)) == value


def is_aware_datetime_string(value: Any) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None


def is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_value(v) for k, v in value.items())
    return False
