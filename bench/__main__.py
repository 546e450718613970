"""`python -m bench {propagation,api,growth,scaling,loops,upgrades,peers,all} [options]`: see
bench/README.md.

Each benchmark prints its results as JSON on stdout (progress goes to stderr) and writes
bench/results/NAME.json, NAME.md and NAME.png. None of it runs in the test suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import procs

BENCHMARKS = ("propagation", "api", "growth", "scaling", "loops", "upgrades")  # `all`
# Not in `all`: it installs Prefect and Dagster into virtualenvs of their own and runs long.
OTHERS = ("peers",)


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "").replace(",", "")) for part in text.split(",") if part]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("benchmark", choices=[*BENCHMARKS, *OTHERS, "all"])
    p.add_argument("--quick", action="store_true",
                   help="smaller: propagation 100 and 1,000 tasks, growth up to 1,000, "
                        "api 10 s per endpoint, peers 100 tasks once, scaling 200 tasks "
                        "with 1 and 2 workers, loops 1,000 items, upgrades 100 "
                        "executions")  # fmt: skip
    p.add_argument("--sizes", type=_sizes,
                   help="task counts, e.g. 100,1000 (propagation, growth, peers, "
                        "scaling; loops: items; upgrades: executions)")  # fmt: skip
    p.add_argument("--shapes", type=_names,
                   help="chain,fanout,layered (propagation, peers: default all; growth: the "
                        "first, default layered; scaling: default fanout,layered)")  # fmt: skip
    p.add_argument("--modes", type=_names,
                   help="embedded (SQLite, jobs in process), workers (PostgreSQL, two db_workers), "
                        "pg (PostgreSQL, jobs in process); default: propagation "
                        "embedded,workers, growth pg, loops and upgrades embedded,pg")  # fmt: skip
    p.add_argument("--peers", type=_names,
                   help="peers: prefect,dagster (default both)")  # fmt: skip
    p.add_argument("--repeat", type=int,
                   help="peers: repetitions, interleaved (default 3); scaling: rounds "
                        "(default 1)")  # fmt: skip
    p.add_argument("--workers", type=_sizes,
                   help="scaling: db_worker counts (default 1,2,4)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds before one run (one mode, shape and size) is killed "
                        "(default 1800)")  # fmt: skip
    p.add_argument(
        "--profile",
        action="store_true",
        help="profile each run with pyinstrument: var/bench/profiles/*.html",
    )
    p.add_argument("--users", type=int, default=10, help="api: locust users (default 10)")
    p.add_argument("--duration", type=int,
                   help="api: seconds per endpoint (default 20); scaling: seconds per pgbench "
                        "test (default 10)")  # fmt: skip
    p.add_argument("--gunicorn-workers", type=int, help="api: default 2 x cores + 1")
    p.add_argument(
        "--seed-executions",
        type=int,
        default=40,
        help="api: runs of the 30-task flow to read and correct (default 40)",
    )
    p.add_argument(
        "--keep-databases",
        action="store_true",
        help="leave the flowplatform_bench_* PostgreSQL databases for inspection",
    )
    p.add_argument("--out", type=Path, help="write NAME.json/md/png here (default bench/results)")
    p.add_argument("--no-readme", action="store_true",
                   help="do not copy the tables into bench/README.md")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    options = cli.parse_args(argv)
    from bench.dags import SHAPES

    if options.shapes and not set(options.shapes) <= set(SHAPES):
        cli.error(f"--shapes: choose from {', '.join(SHAPES)}")
    if options.modes and not set(options.modes) <= {"embedded", "workers", "pg"}:
        cli.error("--modes: choose from embedded, workers, pg")
    if options.peers and not set(options.peers) <= {"prefect", "dagster"}:
        cli.error("--peers: choose from prefect, dagster")
    if options.repeat is not None and options.repeat < 1:
        cli.error("--repeat: at least 1")
    if options.workers is not None and (not options.workers or min(options.workers) < 1):
        cli.error("--workers: counts of at least 1, e.g. 1,2,4")
    procs.install_handlers()
    if options.out:
        from bench import common

        common.RESULTS = options.out
    names = BENCHMARKS if options.benchmark == "all" else (options.benchmark,)
    failed = False
    for name in names:
        module: Any = __import__(f"bench.{name}", fromlist=["run"])
        try:
            payload = module.run(options)
        except Exception as exc:
            if len(names) == 1:
                raise
            print(f"[bench] {name} failed: {exc!r}", file=sys.stderr)
            failed = True
            continue
        failed = failed or any("error" in row for row in payload["results"])
        # peers: a peer that could not be installed has no rows to carry its error
        failed = failed or any("error" in peer for peer in payload.get("peers", {}).values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
