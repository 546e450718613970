"""How long the admin's DAG picture takes to render: `python -m bench.dag_svg [TASKS …]`.

Pure rendering (no database): a layered DAG of N tasks (10 per layer, each reading two tasks of
the layer before), statuses spread over every colour. Prints JSON: milliseconds per render
(best of 5) and the SVG's size. Not run by the test suite.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(sizes: list[int]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowplatform.settings")
    import django

    django.setup()
    from executions.dag_svg import COLOURS, render_dag_svg
    from flows.definitions import compile_definition

    statuses = list(COLOURS)
    results = []
    for size in sizes:
        tasks = []
        for i in range(size):
            layer, upstream = divmod(i, 10)[0], []
            if layer:
                upstream = [f"t{(layer - 1) * 10 + (i + k) % 10}" for k in (0, 3)]
            tasks.append({"name": f"t{i}", "type": "transform", "depends_on": upstream})
        _, spec = compile_definition(json.dumps({"tasks": tasks}))
        status = {f"t{i}": statuses[i % len(statuses)] for i in range(size)}
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            svg = render_dag_svg(spec, status, lambda task: f"/admin/x/{task}/")
            timings.append((time.perf_counter() - started) * 1000)
        results.append({"tasks": size, "best_ms": round(min(timings), 2), "svg_bytes": len(svg)})
    print(json.dumps({"benchmark": "dag_svg", "results": results}, indent=2))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [50, 500, 2000])
