"""History pages with real diffs (django-simple-history's, for task executions and outputs).

Each history row shows what changed against the row before it — every field that differs
(`diff_against`), a JSON field as a path-by-path diff (flowplatform.jsondiff) — and the reason
recorded with it (`history_change_reason`). Pages of HISTORY_PER_PAGE rows, newest first; the
oldest row of a page is compared with the newest row of the next page, read with one more
query (made on the last page too), so every row but the very first (the creation) has its
changes. Constant queries per page, whatever the length of the history.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst

from flowplatform.jsondiff import diff_table

HISTORY_PER_PAGE = 50
NOT_DIFFED = ("updated_at",)  # changes on every save: noise in a diff
VALUE_CHARS = 120


def _value(value: Any) -> SafeString:
    text = "-" if value in (None, "") else str(value)
    if len(text) <= VALUE_CHARS:
        return format_html("<code>{}</code>", text)
    return format_html('<code title="{}">{}…</code>', text, text[: VALUE_CHARS - 1])


def field_changes(model: type[models.Model], newer: Any, older: Any) -> list[dict[str, Any]]:
    """What changed from `older` to `newer` (historical records of `model`), field by field:
    {"field", "name", "json", "diff"} (`diff`: HTML, escaped)."""
    excluded = [f for f in NOT_DIFFED if any(x.name == f for x in model._meta.fields)]
    delta = newer.diff_against(older, excluded_fields=excluded, foreign_keys_are_objs=False)
    changes = []
    for change in delta.changes:
        field = model._meta.get_field(change.field)
        label = capfirst(field.verbose_name)
        if isinstance(field, models.JSONField):
            diff = diff_table(change.old, change.new, caption=f"{label}: before → after")
        else:
            diff = format_html(
                '<span class="history-old"><span class="visually-hidden">before: </span>{}'
                '</span> → <span class="history-new"><span class="visually-hidden">after: '
                "</span>{}</span>",
                _value(change.old),
                _value(change.new),
            )
        changes.append(
            {
                "field": change.field,
                "name": label,
                "json": isinstance(field, models.JSONField),
                "diff": diff,
            }
        )
    return changes


class HistoryDiffs:
    """Mixed into a SimpleHistoryAdmin: the history page's rows with their diffs and reasons."""

    model: Any
    history_list_per_page = HISTORY_PER_PAGE
    object_history_list_template = "admin/flowplatform/history_list.html"

    def set_history_delta_changes(self, request: Any, page: Any, **kwargs: Any) -> None:
        records = list(page)  # the very rows the template shows (Page keeps them)
        older_than_page = None
        if records:  # one query, also on the last page (then empty): the same cost on any page
            end = page.end_index()
            older_than_page = next(iter(page.paginator.object_list[end : end + 1]), None)
        for i, record in enumerate(records):
            older = records[i + 1] if i + 1 < len(records) else older_than_page
            record.console_changes = (
                field_changes(self.model, record, older) if older is not None else None
            )
