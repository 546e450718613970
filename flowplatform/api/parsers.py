"""The request body parser: JSON, at most MAX_REQUEST_BODY_BYTES, nested at most MAX_JSON_DEPTH."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ErrorDetail, ParseError
from rest_framework.parsers import JSONParser, get_encoding
from rest_framework.utils import json

from flowplatform.api.errors import RequestValidationError
from flowplatform.jsonlimits import too_deep


def json_too_deep_error(max_depth: int) -> RequestValidationError:
    return RequestValidationError(
        [
            ErrorDetail(
                f"the JSON body is nested deeper than {max_depth} levels", code="json_too_deep"
            )
        ],
        location="body",
    )


def _declared_length(parser_context: Any) -> int | None:
    request = (parser_context or {}).get("request")
    value = request.META.get("CONTENT_LENGTH", "") if request is not None else ""
    return int(value) if value.isdigit() else None


class LimitedJSONParser(JSONParser):
    """DRF's JSONParser with two limits checked before the body is parsed, and a body shorter
    than its Content-Length refused (400).

    It stays a JSONParser subclass: DRF then reads the body through `request.body`, where
    Django refuses a Content-Length over DATA_UPLOAD_MAX_MEMORY_SIZE (413). The size is checked
    again here on what was actually read, so no stream can hand over more than the limit.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = get_encoding(parser_context or {})
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
        declared = _declared_length(parser_context)
        if declared is not None and len(raw) < declared:
            # A WSGI server hands over what arrived before the client went away: a prefix of
            # the body can still be valid JSON, and must not be acted on.
            raise ParseError(
                f"The request body was cut short: {len(raw)} of the {declared} bytes its "
                "Content-Length announced arrived."
            )
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        max_depth = settings.MAX_JSON_DEPTH
        if too_deep(text, max_depth):
            raise json_too_deep_error(max_depth)
        try:
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:  # only if MAX_JSON_DEPTH is set above what Python can parse
            raise json_too_deep_error(max_depth) from None
