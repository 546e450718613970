"""A server-rendered SVG picture of a flow execution's DAG (admin), no external service.

Tasks are laid out in columns by dependency layer (a task sits one column right of its
deepest upstream task), in topological order within a column, and coloured by the status of
their latest attempt; stale tasks get a thick dashed orange border and a "stale" label. Each
node links to its latest attempt. O(V+E) and pure string building.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from html import escape as html_escape

from flows.definitions import FlowSpec

# Characters XML 1.0 does not allow (control characters other than tab and newlines).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape(text: str) -> str:
    """Escaped for XML, with characters XML cannot hold replaced, so the SVG always parses."""
    return html_escape(_NOT_XML.sub("\ufffd", text))


NODE_W, NODE_H = 170, 38
GAP_X, GAP_Y = 60, 16
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
) -> str:
    """`statuses`: each task's latest attempt status (absent: never ran); `link(task)`: the
    URL of its latest attempt, or None."""
    layer = layers(spec)
    rows: dict[int, int] = {}
    position: dict[str, tuple[int, int]] = {}
    for task in spec.dag.topological_order():
        column = layer[task]
        row = rows.get(column, 0)
        rows[column] = row + 1
        position[task] = (PAD + column * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    width = PAD * 2 + (max(layer.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="flow-dag" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
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
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
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
        node = [
            f'<g class="dag-node" data-task="{name}" data-status="{escape(status)}">',
            f"<title>{name}: {escape(status)}</title>",
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{3 if stale else 1.5}"'
            + (' stroke-dasharray="6 3"' if stale or status == "not run" else "")
            + "/>",
            f'<text x="{x + 8}" y="{y + 16}" fill="{ink}" font-weight="600">{label}</text>',
            f'<text x="{x + 8}" y="{y + 31}" fill="{ink}" font-size="11">'
            f"{'⚠ STALE' if stale else escape(status)}</text>",
            "</g>",
        ]
        url = link(task)
        if url:
            node = [f'<a href="{escape(url)}">', *node, "</a>"]
        parts.extend(node)
    parts.append("</svg>")
    return "".join(parts)
