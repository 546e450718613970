"""Serializer building blocks: unknown fields are rejected, read-only fields round-trip."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

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


class JSONObjectField(serializers.JSONField):
    """A JSON value that must be an object (dict)."""

    default_error_messages = {"not_object": "Must be a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return value


class TagsField(serializers.JSONField):
    """Tags: null, a list of strings, or an object whose values are strings, numbers or booleans."""

    default_error_messages = {
        "invalid_tags": "Must be null, a list of strings, or an object of scalar values."
    }

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        scalar = (str, int, float, bool, type(None))
        if value is None:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        if isinstance(value, dict) and all(isinstance(item, scalar) for item in value.values()):
            return value
        self.fail("invalid_tags")
        return None  # pragma: no cover - fail() raises


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
    """A body field the seed lists but the server sets: accepted, validated, ignored."""
    return field(
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
