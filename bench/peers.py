"""Peers: the propagation workload on flowplatform, Prefect 3 and Dagster (`python -m bench
peers`).

For chain, fan-out/fan-in and layered DAGs of each size (bench/dags.py, the same for all three):
(a) a full run; (c) a correction of the task whose dependents are about half the flow, until
every stale task has run again. flowplatform in embedded mode exactly as `bench propagation`
measures it (bench.child, a fresh SQLite database); Prefect and Dagster in virtualenvs of their
own under var/bench/venvs (installed here if missing), run by bench.peers_prefect and
bench.peers_dagster. Interleaved: each repetition runs every shape and size on flowplatform,
then each peer, each in a process of its own killed after `--timeout`, so drift hits all alike.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import common, dags, procs, propagation

NAME = "peers"
SYSTEM = "flowplatform"
PEERS = ("prefect", "dagster")
SIZES = (100, 1_000)
QUICK_SIZES = (100,)
REPEAT = 3
# The issue: flowplatform at least 5 x faster than Prefect 3 on full runs and corrections at
# 1,000 tasks in every shape, embedded.
TARGET_RATIO = 5.0
TARGET_PEER = "prefect"
TARGET_SIZE = 1_000

VENVS = common.WORK / "venvs"
PACKAGES = {"prefect": "prefect", "dagster": "dagster"}
TITLES = {SYSTEM: "flowplatform", "prefect": "Prefect", "dagster": "Dagster"}
PREFECT_HOME = common.WORK / "prefect-home"
PREFECT_DATABASE = common.WORK / "prefect.sqlite3"
PREFECT_TEMPLATE = common.WORK / "prefect-template.sqlite3"
DAGSTER_HOME = common.WORK / "dagster-home"
_FOREIGN = ("PREFECT_", "DAGSTER_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")


def run(options: Any) -> dict[str, Any]:
    info = common.machine()
    sizes = options.sizes or (QUICK_SIZES if options.quick else SIZES)
    shapes = options.shapes or dags.SHAPES
    peers = options.peers or PEERS
    repeat = options.repeat or (1 if options.quick else REPEAT)
    installed = {peer: install(peer, options.timeout) for peer in peers}
    common.prepare_sqlite_template(options.timeout)
    if "error" not in installed.get("prefect", {"error": "not asked for"}):
        installed["prefect"]["template"] = prepare_prefect_template(options.timeout)
    rows = []
    for repetition in range(1, repeat + 1):
        for shape in shapes:
            for size in sizes:
                label = f"{NAME}-{SYSTEM}-{shape}-{size}-r{repetition}"
                result = propagation.measure(
                    "embedded", shape, size, options, steps=("full", "rerun"), label=label
                )
                rows.append({"system": SYSTEM, "repetition": repetition, **result})
                corrected = result.get("corrected_task")
                for peer in peers:
                    if "error" in installed[peer]:
                        continue
                    row = _measure_peer(peer, shape, size, repetition, options)
                    if corrected and "error" not in row and row["corrected_task"] != corrected:
                        row["error"] = f"corrected {row['corrected_task']}, not {corrected}"
                    rows.append({"system": peer, "repetition": repetition, **row})
    summary = summarise(rows)
    target = {
        "ratio": TARGET_RATIO,
        "peer": TARGET_PEER,
        "tasks": TARGET_SIZE,
        "shapes": _verdicts(summary, shapes),
    }
    return common.publish(
        NAME, info, target, rows, markdown, lambda _, path: plot(summary, path), options,
        peers=installed, repeat=repeat, summary=summary,
    )  # fmt: skip


# The peers' virtualenvs ------------------------------------------------------------------------


def install(peer: str, timeout: float) -> dict[str, Any]:
    """var/bench/venvs/PEER with the latest release of its package, made with this Python
    (`python -m venv`, then pip) unless it already has the package: its version, or why not."""
    venv = VENVS / peer
    python = venv / "bin" / "python"
    package = PACKAGES[peer]
    version = _installed_version(python, package)
    if version:
        return {"package": package, "version": version, "python": str(python), "reused": True}
    env = _clean_env()
    steps = (
        [common.PYTHON, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", package],
    )
    for step, command in enumerate(steps):
        log = common.WORK / "logs" / f"{NAME}-install-{peer}-{step}.log"
        print(f"[bench] {' '.join(command)} …", file=sys.stderr, flush=True)
        status, _ = procs.run(command, env=env, log=log, timeout=timeout)
        if status != 0:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            print(f"[bench] {peer} could not be installed:\n{tail}", file=sys.stderr)
            why = "timed out" if status is None else f"exit status {status}"
            return {"package": package, "error": f"{' '.join(command)}: {why}",
                    "log": str(log), "log_tail": tail}  # fmt: skip
    version = _installed_version(python, package)
    if not version:
        return {"package": package, "error": f"{package} not importable in {venv} after pip"}
    return {"package": package, "version": version, "python": str(python), "reused": False}


def _installed_version(python: Path, package: str) -> str | None:
    if not python.exists():
        return None
    log = common.WORK / "logs" / f"{NAME}-version-{package}.log"
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    status, _ = procs.run([str(python), "-c", code], env=_clean_env(), log=log, timeout=120)
    if status != 0:
        return None
    return log.read_text().strip().splitlines()[-1]


def _clean_env(**extra: str) -> dict[str, str]:
    """Nothing of the product's settings nor of this virtualenv in a peer's processes."""
    foreign = (*_FOREIGN, "DATABASE_", "TASKS_", "FLOWPLATFORM_", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _prefect_env(database: Path) -> dict[str, str]:
    return _clean_env(
        PREFECT_HOME=str(PREFECT_HOME),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{database}",
        # No PREFECT_API_URL: Prefect's ephemeral mode (its own temporary API server).
        PREFECT_SERVER_EPHEMERAL_ENABLED="true",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",  # as the product's LOG_LEVEL=warning
    )


def prepare_prefect_template(timeout: float) -> str:
    """Prefect's database migrated once per invocation and copied for each run, as the
    product's SQLite template is (Prefect's own migrations take about 20 s)."""
    _wipe(PREFECT_HOME, *common.WORK.glob(f"{PREFECT_TEMPLATE.name}*"))
    log = common.WORK / "logs" / f"{NAME}-prefect-migrate.log"
    python = VENVS / "prefect" / "bin" / "python"
    command = [str(python), "-m", "prefect", "server", "database", "upgrade", "-y"]
    status, _ = procs.run(command, env=_prefect_env(PREFECT_TEMPLATE), log=log, timeout=timeout)
    if status != 0:
        raise RuntimeError(f"migrating Prefect's database failed (status {status}); see {log}")
    return str(PREFECT_TEMPLATE)


# One peer's run -------------------------------------------------------------------------------


def _measure_peer(
    peer: str, shape: str, size: int, repetition: int, options: Any
) -> dict[str, Any]:
    """A fresh store (Prefect's home and SQLite database, Dagster's instance directory), then
    bench.peers_PEER in the peer's virtualenv."""
    spec: dict[str, Any] = {"shape": shape, "size": size}
    if peer == "prefect":
        _wipe(PREFECT_HOME, *common.WORK.glob(f"{PREFECT_DATABASE.name}*"))
        shutil.copyfile(PREFECT_TEMPLATE, PREFECT_DATABASE)
        env = _prefect_env(PREFECT_DATABASE)
        spec["database"] = str(PREFECT_DATABASE)
    else:
        _wipe(DAGSTER_HOME)
        DAGSTER_HOME.mkdir(parents=True)
        env = _clean_env(DAGSTER_HOME=str(DAGSTER_HOME))
        spec["home"] = str(DAGSTER_HOME)
    return common.run_child(
        spec,
        env,
        f"{NAME}-{peer}-{shape}-{size}-r{repetition}",
        timeout=options.timeout,
        python=str(VENVS / peer / "bin" / "python"),
        module=f"bench.peers_{peer}",
    )


def _wipe(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


# Medians, ratios, verdicts --------------------------------------------------------------------


def _stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (shape, size, system): medians and ranges over the repetitions that succeeded, and
    the ratio of each peer's median to flowplatform's. (c) per task: per stale task re-run."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["shape"], row["size"], row["system"]), []).append(row)
    summary = []
    for (shape, size, system), runs in groups.items():
        ok = [r for r in runs if "error" not in r]
        full = [r["full"]["seconds"] for r in ok]
        rerun = [r["rerun"]["seconds"] for r in ok]
        rerun_tasks = sorted({r["rerun"]["tasks_rerun"] for r in ok})
        stale = max(rerun_tasks) if rerun_tasks else None
        entry: dict[str, Any] = {
            "shape": shape,
            "size": size,
            "system": system,
            "runs": len(runs),
            "failed": len(runs) - len(ok),
            "errors": sorted({r["error"] for r in runs if "error" in r}),
            "full_seconds": _stats(full),
            "full_ms_per_task": _stats([s * 1000 / size for s in full]),
            "rerun_tasks": rerun_tasks,
            "rerun_seconds": _stats(rerun),
            "rerun_ms_per_task": _stats([s * 1000 / stale for s in rerun]) if stale else None,
        }
        if system == "prefect":
            entry["full_seconds_until_recorded"] = _stats(
                [r["full"]["seconds_until_recorded"] for r in ok
                 if r["full"]["seconds_until_recorded"] is not None]
            )  # fmt: skip
            entry["rerun_seconds_until_recorded"] = _stats(
                [r["rerun"]["seconds_until_recorded"] for r in ok
                 if r["rerun"]["seconds_until_recorded"] is not None]
            )  # fmt: skip
        summary.append(entry)
    ours = {(e["shape"], e["size"]): e for e in summary if e["system"] == SYSTEM}
    for entry in summary:
        base = ours.get((entry["shape"], entry["size"]))
        for step in ("full", "rerun"):
            peer, own = entry[f"{step}_seconds"], base and base[f"{step}_seconds"]
            entry[f"{step}_ratio"] = peer["median"] / own["median"] if peer and own else None
    order = {name: i for i, name in enumerate((SYSTEM, *PEERS))}
    shapes = {name: i for i, name in enumerate(dags.SHAPES)}
    return sorted(summary, key=lambda e: (shapes[e["shape"]], e["size"], order[e["system"]]))


def _verdicts(summary: list[dict[str, Any]], shapes: list[str]) -> dict[str, Any]:
    """Per shape: met if Prefect's medians at 1,000 tasks are both ≥ 5 x flowplatform's."""
    verdicts: dict[str, Any] = {}
    for shape in shapes:
        entry = next((e for e in summary if e["shape"] == shape and e["size"] == TARGET_SIZE
                      and e["system"] == TARGET_PEER), None)  # fmt: skip
        ratios = entry and (entry["full_ratio"], entry["rerun_ratio"])
        if not ratios or None in ratios:
            verdicts[shape] = {"met": None}
            continue
        verdicts[shape] = {
            "met": min(ratios) >= TARGET_RATIO,
            "full_ratio": ratios[0],
            "rerun_ratio": ratios[1],
        }
    return verdicts


# Results ------------------------------------------------------------------------------------


def _range(stats: dict[str, Any] | None, digits: int = 2) -> str:
    if not stats:
        return "—"
    if stats["n"] == 1:
        return common.fmt(stats["median"], digits)
    low, high = common.fmt(stats["min"], digits), common.fmt(stats["max"], digits)
    return f"{common.fmt(stats['median'], digits)} ({low}-{high})"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} x"


def _target_line(target: dict[str, Any]) -> str:
    parts = []
    for shape, verdict in target["shapes"].items():
        if verdict["met"] is None:
            parts.append(f"{shape}: not measured")
        else:
            parts.append(
                f"{shape}: {'met' if verdict['met'] else 'missed'} "
                f"((a) {verdict['full_ratio']:.1f} x, (c) {verdict['rerun_ratio']:.1f} x)"
            )
    return (
        f"**Target**: flowplatform ≥ {TARGET_RATIO:g} x faster than Prefect 3 on full runs and "
        f"corrections at {TARGET_SIZE:,} tasks in every shape (embedded; medians of the time "
        f"until Prefect's flow returned) — {'; '.join(parts)}"
    )


def markdown(payload: dict[str, Any]) -> str:
    summary, peers = payload["summary"], payload["peers"]
    table = []
    for e in summary:
        table.append(
            [
                e["shape"],
                f"{e['size']:,}",
                TITLES[e["system"]],
                _range(e["full_seconds"]),
                _range(e["full_ms_per_task"]),
                _range(e.get("full_seconds_until_recorded")),
                _ratio(e["full_ratio"]) if e["system"] != SYSTEM else "1",
                "/".join(f"{n:,}" for n in e["rerun_tasks"]) or "—",
                _range(e["rerun_seconds"]),
                _range(e["rerun_ms_per_task"]),
                _range(e.get("rerun_seconds_until_recorded")),
                _ratio(e["rerun_ratio"]) if e["system"] != SYSTEM else "1",
                f"{e['runs'] - e['failed']}/{e['runs']}"
                + (f" ({'; '.join(e['errors'])})" if e["errors"] else ""),
            ]
        )
    headers = [
        "shape", "tasks", "system", "(a) full run s", "(a) ms/task", "(a) s until recorded",
        "(a) x flowplatform", "(c) tasks re-run", "(c) s", "(c) ms/task",
        "(c) s until recorded", "(c) x flowplatform", "runs ok",
    ]  # fmt: skip
    versions = "; ".join(
        f"{TITLES[peer]} {p['version']}" if "version" in p
        else f"{TITLES[peer]} not run: {p['error']}"
        for peer, p in peers.items()
    )  # fmt: skip
    return "\n".join(
        [
            common.header("Peers", payload["machine"]),
            f"Peers: {versions}; {payload['repeat']} repetitions, interleaved.\n",
            _target_line(payload["target"]) + "\n",
            common.markdown_table(headers, table),
            "",
            "Medians over the repetitions (min-max in brackets). (a) full run; (c) correction of "
            "the task whose dependents are about half the flow, until every stale task has run "
            "again; ms/task = seconds / tasks (a) or / stale tasks re-run (c); x flowplatform = "
            "the peer's median / flowplatform's. flowplatform: embedded mode exactly as `bench "
            "propagation` (the HTTP API in process, SQLite, jobs in process). Prefect: tasks "
            "called in the flow's thread with `cache_policy=INPUTS` and results persisted; the "
            "correction re-runs the flow with the corrected task's output overridden by a flow "
            "parameter, so only it and its dependents miss the cache (tasks re-run counts bodies "
            "that ran, less the corrected task); its times end when the flow returns, and "
            "'until recorded' when its SQLite holds every task run as completed (Prefect writes "
            "task-run states from events, after the fact); a warm-up flow first starts its "
            "temporary API server (a subprocess Prefect starts itself), which checks the "
            "migrations of its database (copied from a migrated template), outside the clock. "
            "Dagster: one asset per task, `materialize` in process on a persistent SQLite "
            "instance; the correction materialises the corrected asset with its new value and "
            'everything downstream, in one run. Fairness notes: bench/README.md, "Peers".',
        ]
    )


def plot(summary: list[dict[str, Any]], path: Path) -> None:
    plt = common.pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    colours = {SYSTEM: "tab:green", "prefect": "tab:blue", "dagster": "tab:purple"}
    styles = {"chain": "-o", "fanout": "--s", "layered": ":^"}
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in summary:
        series.setdefault((entry["system"], entry["shape"]), []).append(entry)
    for (system, shape), points in series.items():
        label = f"{TITLES[system]} {shape}"
        style = {"color": colours[system]}
        for axis, key in ((axes[0], "full_ms_per_task"), (axes[1], "rerun_ms_per_task")):
            shown = [(p["size"], p[key]) for p in points if p[key]]
            if shown:
                sizes = [size for size, _ in shown]
                medians = [s["median"] for _, s in shown]
                spread = [[s["median"] - s["min"] for _, s in shown],
                          [s["max"] - s["median"] for _, s in shown]]  # fmt: skip
                axis.errorbar(sizes, medians, yerr=spread, fmt=styles[shape], label=label,
                              capsize=3, **style)  # fmt: skip
    labels, ratios = [], {"full": [], "rerun": []}
    for entry in summary:
        if entry["system"] != SYSTEM and entry["size"] == max(e["size"] for e in summary):
            labels.append(f"{TITLES[entry['system']]}\n{entry['shape']}")
            ratios["full"].append(entry["full_ratio"] or float("nan"))
            ratios["rerun"].append(entry["rerun_ratio"] or float("nan"))
    positions = range(len(labels))
    axes[2].bar([p - 0.2 for p in positions], ratios["full"], 0.4, label="(a) full run")
    axes[2].bar([p + 0.2 for p in positions], ratios["rerun"], 0.4, label="(c) correction")
    axes[2].axhline(TARGET_RATIO, color="red", linewidth=0.8, label=f"{TARGET_RATIO:g} x target")
    axes[2].set_xticks(list(positions), labels, fontsize=7)
    largest = max((e["size"] for e in summary), default=0)
    titles = [
        ("(a) full run: ms per task", "tasks", "ms / task"),
        ("(c) correction: ms per re-run task", "tasks", "ms / re-run task"),
        (f"peer / flowplatform at {largest:,} tasks (medians)", "", "x slower than flowplatform"),
    ]
    for i, (axis, (title, xlabel, ylabel)) in enumerate(zip(axes, titles, strict=True)):
        axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if i < 2:
            axis.set(xscale="log", yscale="log")
            common.plain_log_axes(axis)
        else:
            axis.set(yscale="log")
        axis.grid(True, which="both", alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
