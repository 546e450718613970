"""JSON in admin forms: parsed as the API parses it (no NaN or Infinity), shown indented, and
edited in a textarea that executions/static/executions/json_editor.js checks as you type."""

from __future__ import annotations

import json
from typing import Any

from django import forms


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


class StrictJSONDecoder(json.JSONDecoder):
    """JSON as the API accepts it: no NaN or Infinity (the database cannot store them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "parse_constant": _no_constant})


class JSONEditor(forms.Textarea):
    """A textarea for JSON that json_editor.js checks as you type: the line under
    it says "valid JSON" or where the parse error is (aria-live), and the textarea gets
    aria-invalid. Without JavaScript it is a plain textarea, checked on save."""

    template_name = "executions/widgets/json_editor.html"

    class Media:
        js = [forms.Script("executions/json_editor.js", defer=True)]

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        attrs = context["widget"]["attrs"]
        status_id = f"{attrs.get('id') or name}_json_status"
        described = [attrs.get("aria-describedby"), status_id]
        attrs.update(
            {
                "aria-describedby": " ".join(filter(None, described)),
                "data-json-editor": status_id,
                "spellcheck": "false",
                "class": " ".join(filter(None, [attrs.get("class"), "json-editor"])),
            }
        )
        context["status_id"] = status_id
        return context


class PrettyJSONField(forms.JSONField):
    """A JSON form field shown indented, so a nested output can be read and edited."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


def json_field(rows: int) -> PrettyJSONField:
    """An optional JSON field of an admin form, in the JSON editor."""
    return PrettyJSONField(
        required=False, decoder=StrictJSONDecoder, widget=JSONEditor(attrs={"rows": rows})
    )
