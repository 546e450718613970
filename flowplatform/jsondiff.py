"""What changed between two JSON values, path by path, and that as an HTML table (admin).

`json_diff(before, after)` walks both values: objects key by key, arrays index by index; a
value that is neither, or of another type on each side, is one change. Each change is a path
(`$.output.pages`, `$.items[2]`), its kind (added, removed, changed) and the values on each
side. Pure; O(size of the two values). `diff_table` renders it with a text marker per row
(+ added, - removed, ~ changed), so the kind never rests on colour alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

MISSING: Any = object()
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MARKERS = {"added": "+", "removed": "-", "changed": "~"}
VALUE_CHARS = 300  # a value longer than this, as JSON, is cut (its whole text in the title)


@dataclass(frozen=True)
class Change:
    kind: str  # "added", "removed" or "changed"
    path: str
    old: Any = MISSING
    new: Any = MISSING


def _key(path: str, key: str) -> str:
    return f"{path}.{key}" if _IDENTIFIER.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def json_diff(before: Any, after: Any, path: str = "$") -> list[Change]:
    """The changes that turn `before` into `after` (MISSING: absent), in document order."""
    if before is MISSING and after is MISSING:
        return []
    if before is MISSING:
        return [Change("added", path, new=after)]
    if after is MISSING:
        return [Change("removed", path, old=before)]
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[Change] = []
        for key in [*before, *(k for k in after if k not in before)]:
            sub = _key(path, str(key))
            changes += json_diff(before.get(key, MISSING), after.get(key, MISSING), sub)
        return changes
    if isinstance(before, list) and isinstance(after, list):
        changes = []
        for i in range(max(len(before), len(after))):
            old = before[i] if i < len(before) else MISSING
            new = after[i] if i < len(after) else MISSING
            changes += json_diff(old, new, f"{path}[{i}]")
        return changes
    if type(before) is type(after) and before == after:
        return []
    return [Change("changed", path, old=before, new=after)]


def as_text(value: Any) -> str:
    if value is MISSING:
        return ""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _cell(value: Any) -> SafeString:
    text = as_text(value)
    if len(text) <= VALUE_CHARS:
        return format_html("<code>{}</code>", text)
    return format_html('<code title="{}">{}…</code>', text, text[: VALUE_CHARS - 1])


def diff_table(before: Any, after: Any, limit: int = 50, caption: str = "") -> SafeString:
    """The changes as a table: marker, kind, path, before, after (the first `limit`)."""
    changes = json_diff(before, after)
    if not changes:
        return format_html(
            '<p class="json-diff-none">{}</p>',
            f"{caption}: no change." if caption else "No change.",
        )
    rows = format_html_join(
        "",
        '<tr class="json-diff-{}"><td class="json-diff-marker" aria-hidden="true">{}</td>'
        '<td><span class="json-diff-kind">{}</span></td><td><code>{}</code></td>'
        "<td>{}</td><td>{}</td></tr>",
        (
            (c.kind, MARKERS[c.kind], c.kind, c.path, _cell(c.old), _cell(c.new))
            for c in changes[:limit]
        ),
    )
    more = len(changes) - limit
    return format_html(
        '<table class="json-diff">{}<thead><tr><th scope="col"><span class="visually-hidden">'
        'Marker</span></th><th scope="col">Change</th><th scope="col">Path</th>'
        '<th scope="col">Before</th><th scope="col">After</th></tr></thead><tbody>{}</tbody>'
        "</table>{}",
        format_html("<caption>{}</caption>", caption) if caption else "",
        rows,
        format_html('<p class="json-diff-more">… and {} more change(s).</p>', more)
        if more > 0
        else "",
    )
