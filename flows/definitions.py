"""Reading a flow definition: YAML text → plain data, refusing what could hurt the service."""

from __future__ import annotations

import math
from typing import Any

import yaml
from django.conf import settings

from flowplatform.exceptions import InvalidInput


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases: a few aliased lines can expand into gigabytes of JSON."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in flow definitions", event.start_mark
            )
        return super().compose_node(parent, index)


def _invalid(message: str) -> InvalidInput:
    return InvalidInput.field("definition", message, "invalid_definition")


def parse_definition(text: str) -> dict[str, Any]:
    limit = settings.FLOWPLATFORM_MAX_DEFINITION_BYTES
    if len(text.encode()) > limit:
        raise _invalid(f"the definition is larger than {limit} bytes")
    try:
        parsed = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
        if not isinstance(parsed, dict):
            raise _invalid(
                "the definition must be a YAML mapping (e.g. 'name: …' and 'tasks: […]')"
            )
        return _json_compatible(parsed)
    except yaml.YAMLError as exc:
        raise _invalid(f"not valid YAML: {exc}") from None
    except RecursionError:
        raise _invalid("the definition is nested too deeply") from None


def _json_compatible(value: Any) -> Any:
    """YAML also has dates, sets and non-string keys; stored definitions must be plain JSON."""
    if isinstance(value, dict):
        return {str(key): _json_compatible(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_compatible(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
