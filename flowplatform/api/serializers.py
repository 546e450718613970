"""Serializer building blocks: unknown fields are rejected, read-only fields round-trip."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from flowplatform.api.errors import RequestValidationError
from flowplatform.headers import REASON_HEADER

# The spellings a query-string boolean may take; anything else is an error, never a guess.
QUERY_BOOLEANS: dict[str, bool] = {"true": True, "1": True, "false": False, "0": False}


class StrictFieldsMixin:
    """A field the API does not know is a 422 naming it (a typo must not be silently dropped).

    Read-only fields are known fields: a client may send back what it read (GET → edit → PUT)
    and they are ignored. Fields named in `ignored_fields` are documented as body fields (the
    seed lists them) and validated, then dropped: the server sets them.
    """

    ignored_fields: tuple[str, ...] = ()

    def to_internal_value(self, data: Any) -> Any:
        unknown = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []  # type: ignore[attr-defined]
        errors = {
            name: [serializers.ErrorDetail("Unknown field.", code="unknown_field")]
            for name in unknown
        }
        try:
            value = super().to_internal_value(data)  # type: ignore[misc]
        except serializers.ValidationError as exc:
            if not errors:
                raise
            errors.update(
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
        if errors:
            raise serializers.ValidationError(errors)
        for name in self.ignored_fields:
            value.pop(name, None)
        return value


class StrictSerializer(StrictFieldsMixin, serializers.Serializer):
    pass


class UUIDField(serializers.UUIDField):
    """A UUID sent as a string. DRF's own also takes a JSON integer (123 becomes
    00000000-0000-0000-0000-00000000007b), so a wrongly typed id would read as a missing row."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class JSONObjectField(serializers.JSONField):
    """A JSON value that must be an object (dict)."""

    default_error_messages = {"not_object": "Must be a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return value


MAX_TAGS = 100
MAX_TAG_LENGTH = 200


class TagsField(serializers.JSONField):
    """Tags: null, a list of strings, or an object whose values are strings, numbers or booleans.

    Labels, not data: at most MAX_TAGS entries, and every string in them (a tag, a key, a value)
    at most MAX_TAG_LENGTH characters.
    """

    default_error_messages = {
        "invalid_tags": "Must be null, a list of strings, or an object of scalar values.",
        "too_many_tags": f"At most {MAX_TAGS} tags.",
        "tag_too_long": f"Each tag, key and value must be at most {MAX_TAG_LENGTH} characters.",
    }

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        scalar = (str, int, float, bool, type(None))
        if value is None:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            strings = value
        elif isinstance(value, dict) and all(isinstance(item, scalar) for item in value.values()):
            strings = [*value, *(item for item in value.values() if isinstance(item, str))]
        else:
            self.fail("invalid_tags")
        if len(value) > MAX_TAGS:
            self.fail("too_many_tags")
        if any(len(item) > MAX_TAG_LENGTH for item in strings):
            self.fail("tag_too_long")
        return value


class QueryBooleanField(serializers.BooleanField):
    """A query-string boolean: exactly true/false/1/0 (any case); empty or anything else fails.

    DRF's BooleanField also takes yes/on/y and treats `?x=` as absent; a flag that triggers
    re-execution must not be guessed.
    """

    default_error_messages = {"invalid": "Must be one of true, false, 1, 0."}

    def get_value(self, dictionary: Any) -> Any:
        return dictionary.get(self.field_name, serializers.empty)

    def to_internal_value(self, data: Any) -> bool:
        value = QUERY_BOOLEANS.get(str(data).strip().lower())
        if value is None:
            self.fail("invalid")
        return value

    def to_representation(self, value: bool) -> bool:
        return bool(value)


def server_set_field(field: type[serializers.Field], what: str) -> serializers.Field:
    """A body field the seed lists but the server sets: documented as `field` is, and whatever
    is sent in it (what a GET returned, an empty string, null) is ignored, not validated."""

    class ServerSet(field):  # type: ignore[misc, valid-type]
        def run_validation(self, data: Any = serializers.empty) -> Any:
            return None

    ServerSet.__name__ = field.__name__
    return ServerSet(
        required=False,
        allow_null=True,
        help_text=f"{what} Set by the server; a value sent here is ignored.",
    )


def modified_by_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(
        max_length=200,
        help_text=(
            "Identifier of the actor who last modified this record. 'system' for worker-initiated "
            "changes, a user's UUID, or an integration identifier (e.g. 'integration'). With a "
            "user key it is that user's id; a service key may name the end user it acts for; "
            "when absent the key's own identity ('api-key:<prefix>') is recorded."
        ),
        **kwargs,
    )


REASON_MAX_LENGTH = 1000
REASON_HELP = (
    "Why this correction is made, in the person's words (at most 1,000 characters). Recorded "
    f"on the correction; may instead be sent in the `{REASON_HEADER}` header."
)


REASON_HEADER_PARAMETER = OpenApiParameter(
    REASON_HEADER,
    {"type": "string", "maxLength": REASON_MAX_LENGTH},
    OpenApiParameter.HEADER,
    required=False,
    description="Why this correction is made (at most 1,000 characters; UTF-8 allowed); the "
    "same as the body's `reason`. Sending both with different values is a 422.",
)


def reason_field() -> serializers.CharField:
    return serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=REASON_MAX_LENGTH,
        trim_whitespace=True,
        write_only=True,
        help_text=REASON_HELP,
    )


def _utf8_header(value: str) -> str:
    """A header's text: WSGI hands headers over as Latin-1, so UTF-8 arrives as its bytes.
    Bytes that are not UTF-8 are a 422 rather than being stored mangled."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:  # already text (not from a WSGI server)
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestValidationError(
            {REASON_HEADER: ["is not valid UTF-8; send the reason as UTF-8 text"]},
            location="header",
        ) from None


def correction_reason(request: Request, body_reason: str | None) -> str | None:
    """The correction's reason: the body's `reason` or the X-Correction-Reason header (sent as
    UTF-8). Both, with different values, is a 422; blank means none."""
    header = request.headers.get(REASON_HEADER)
    if header is not None:
        header = _utf8_header(header)
        try:
            header = reason_field().run_validation(header)
        except serializers.ValidationError as exc:
            raise RequestValidationError({REASON_HEADER: exc.detail}, location="header") from None
    reasons = {value for value in (body_reason, header) if value}
    if len(reasons) > 1:
        raise RequestValidationError(
            {"reason": [f"differs from the {REASON_HEADER} header; send the reason once"]}
        )
    return reasons.pop() if reasons else None
