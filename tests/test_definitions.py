"""Reading flow definitions: YAML in, plain JSON-compatible data out, hostile input refused."""

from __future__ import annotations

import pytest
from django.test import override_settings

from flowplatform.exceptions import InvalidInput
from flows.definitions import parse_definition


def test_yaml_mapping_is_parsed_into_plain_data():
    parsed = parse_definition("name: x\ntasks:\n  - name: a\n    type: transform\n")
    assert parsed == {"name": "x", "tasks": [{"name": "a", "type": "transform"}]}


def test_yaml_only_types_become_json_compatible():
    parsed = parse_definition("when: 2026-01-02\n1: one\nratio: .nan\n")
    assert parsed == {"when": "2026-01-02", "1": "one", "ratio": "nan"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("plain text", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
        ("a: &x [1, 2]\nb: *x\n", "aliases"),
        ("!!python/object/apply:os.system ['true']", "not valid YAML"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(text, message):
    with pytest.raises(InvalidInput) as caught:
        parse_definition(text)
    (loc, msg, _), *_ = caught.value.errors
    assert loc == ("body", "definition")
    assert message in msg


@override_settings(FLOWPLATFORM_MAX_DEFINITION_BYTES=100)
def test_definitions_over_the_size_limit_are_refused_before_parsing():
    with pytest.raises(InvalidInput, match="larger than 100 bytes"):
        parse_definition("name: x\n" + "# padding\n" * 20)
