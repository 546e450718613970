"""A server-rendered SVG picture of a flow execution's DAG (admin), no external service.

Tasks are laid out in columns by dependency layer (a task sits one column right of its
deepest upstream task), in topological order within a column, and coloured by the status of
their latest attempt; stale tasks get a thick dashed orange border and a "stale" label. Each
node links where `link` says (its latest attempt, or in the console the task's attempts), the
link named as the node's title; the picture is a group of links (not an image), so each stays
reachable. A looped task is coloured by what its current iterations add up to, and a third
line counts them by status (`iteration_line`); every node is then a little larger. With
`details` (the console: `NodeDetail`), each node also counts the task's attempts, and a line
says why it is stale or that its current attempt reused an earlier result. O(V+E) and pure
string building.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape as html_escape
from typing import Any

from flows.definitions import FlowSpec

# Characters XML 1.0 does not allow (control characters other than tab and newlines).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """Escaped for XML, with characters XML cannot hold replaced, so the SVG always parses."""
    return html_escape(_NOT_XML.sub("\ufffd", text))


NODE_W, NODE_H = 170, 38
LOOPED_W, LOOPED_H = 210, 52  # the size of every node when some task is looped
DETAIL_H = 14  # the console's line under each node's status (`details`)
GAP_X, GAP_Y = 44, 16  # four layers fit beside admin's sidebar at 1,280 pixels
PAD = 12

# status → (fill, stroke, text colour)
COLOURS: dict[str, tuple[str, str, str]] = {
    "completed": ("#d1f2d8", "#1e8e3e", "#0b3d1a"),
    "running": ("#d2e3fc", "#1a73e8", "#0b2a5b"),
    "queued": ("#eceff1", "#78909c", "#263238"),
    "failed": ("#fad2cf", "#d93025", "#5c0b05"),
    "stale": ("#ffe0b2", "#e65100", "#4e2600"),
    "deleted": ("#f5f5f5", "#bdbdbd", "#757575"),
    "not run": ("#ffffff", "#9e9e9e", "#616161"),
}


@dataclass(frozen=True)
class NodeDetail:
    """What the console adds to a node: how many attempts the task has, why its current one is
    stale (short), and the idx of the attempt whose result it reused, if it did."""

    attempts: int
    stale_cause: str = ""
    reused_from_idx: int | None = None

    def line(self) -> str:
        if self.stale_cause:
            return f"cause: {self.stale_cause}"
        if self.reused_from_idx is not None:
            return f"♻ reused #{self.reused_from_idx}"
        return ""


# The order iteration counts are listed in; any other status follows, by name.
COUNTED = ("completed", "failed", "stale", "running", "queued", "deleted")


def iteration_line(members: Sequence[Any]) -> str:
    """A looped task's current iterations (`Attempt`s with `.status` and `.iteration`; an
    attempt without an iteration stands for the whole task and counts none), by status:
    "\u00d7300 · 298 completed · 2 failed" (\u00d7: the multiplication sign)."""
    counts: dict[str, int] = {}
    for member in members:
        if member.iteration is not None:
            counts[str(member.status)] = counts.get(str(member.status), 0) + 1
    order = [*COUNTED, *sorted(set(counts) - set(COUNTED))]
    return " · ".join(
        [f"\u00d7{sum(counts.values())}", *(f"{counts[s]} {s}" for s in order if counts.get(s))]
    )


def layers(spec: FlowSpec) -> dict[str, int]:
    layer: dict[str, int] = {}
    for task in spec.dag.topological_order():
        parents = spec.tasks[task].upstream
        layer[task] = 1 + max((layer[p] for p in parents), default=-1)
    return layer


def render_dag_svg(
    spec: FlowSpec,
    statuses: Mapping[str, str],
    link: Callable[[str], str | None],
    iterations: Mapping[str, str] | None = None,
    details: Mapping[str, NodeDetail] | None = None,
) -> str:
    """`statuses`: each task's latest attempt status (absent: never ran); `link(task)`: the
    URL of its latest attempt, or None; `iterations`: a looped task's `iteration_line`;
    `details`: the console's attempt count, stale cause and reuse of a task."""
    iterations = iterations or {}
    details = details or {}
    node_w, node_h = (LOOPED_W, LOOPED_H) if iterations else (NODE_W, NODE_H)
    if details:
        node_h += DETAIL_H
    layer = layers(spec)
    rows: dict[int, int] = {}
    position: dict[str, tuple[int, int]] = {}
    for task in spec.dag.topological_order():
        column = layer[task]
        row = rows.get(column, 0)
        rows[column] = row + 1
        position[task] = (PAD + column * (node_w + GAP_X), PAD + row * (node_h + GAP_Y))
    width = PAD * 2 + (max(layer.values(), default=0) + 1) * (node_w + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (node_h + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="flow-dag" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="group" '
        f'aria-label="Flow execution DAG: {len(spec.tasks)} tasks" '
        'font-family="system-ui, sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#90a4ae"/></marker></defs>',
        '<g class="dag-edges" fill="none" stroke="#90a4ae" stroke-width="1.2">',
    ]
    for task in spec.dag.topological_order():
        x2, y2 = position[task]
        for parent in spec.tasks[task].upstream:
            x1, y1 = position[parent]
            sx, sy, ex, ey = x1 + node_w, y1 + node_h / 2, x2, y2 + node_h / 2
            mid = (sx + ex) / 2
            parts.append(
                f'<path d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" '
                'marker-end="url(#arrow)"/>'
            )
    parts.append("</g>")
    for task in spec.dag.topological_order():
        x, y = position[task]
        status = statuses.get(task, "not run")
        fill, stroke, ink = COLOURS.get(status, COLOURS["not run"])
        stale = status == "stale"
        name = escape(task)
        label = escape(task if len(task) <= 22 else task[:21] + "…")
        line = iterations.get(task) or ""
        looped = escape(line)
        detail = details.get(task)
        count = (
            f" · {detail.attempts} attempt{'s' if detail.attempts != 1 else ''}" if detail else ""
        )
        note = escape(detail.line()) if detail else ""
        summary = (
            f"{name}: {escape(status)}{escape(count)}"
            + (f" — {looped}" if looped else "")
            + (f" — {note}" if note else "")
        )
        node = [
            f'<g class="dag-node" data-task="{name}" data-status="{escape(status)}"'
            + (f' data-iterations="{looped}"' if looped else "")
            + (_detail_attributes(detail) if detail else "")
            + ">",
            f"<title>{summary}</title>",
            f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{3 if stale else 1.5}"'
            + (' stroke-dasharray="6 3"' if stale or status == "not run" else "")
            + "/>",
            f'<text x="{x + 8}" y="{y + 16}" fill="{ink}" font-weight="600">{label}</text>',
            f'<text x="{x + 8}" y="{y + 31}" fill="{ink}" font-size="11">'
            f"{'⚠ STALE' if stale else escape(status)}{escape(count)}</text>",
            "</g>",
        ]
        if looped:
            node.insert(-1, _fitted(x + 8, y + 45, looped, len(line), node_w - 16, ink))
        if note:
            room = int((node_w - 16) / 5.6)  # characters that fit; the whole note is the title's
            short = detail.line() if len(detail.line()) <= room else detail.line()[: room - 1] + "…"
            bottom = y + node_h - 8
            node.insert(
                -1, _fitted(x + 8, bottom, escape(short), len(short), node_w - 16, ink, "dag-note")
            )
        url = link(task)
        if url:
            node = [f'<a href="{escape(url)}" aria-label="{summary}">', *node, "</a>"]
        parts.extend(node)
    parts.append("</svg>")
    return "".join(parts)


def _detail_attributes(detail: NodeDetail) -> str:
    reused = "" if detail.reused_from_idx is None else str(detail.reused_from_idx)
    return (
        f' data-attempts="{detail.attempts}" data-stale-cause="{escape(detail.stale_cause)}"'
        f' data-reused-from="{reused}"'
    )


def _fitted(
    x: int, y: int, text: str, length: int, width: int, ink: str, kind: str = "dag-iterations"
) -> str:
    """A small line of text, squeezed to `width` when its `length` characters would not fit."""
    fit = f' textLength="{width}" lengthAdjust="spacingAndGlyphs"' if length * 5.6 > width else ""
    return f'<text class="{kind}" x="{x}" y="{y}" fill="{ink}" font-size="10"{fit}>{text}</text>'
