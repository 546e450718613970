"""Child processes of a benchmark — measurement runs, `db_worker`s, gunicorn, locust — and the
guarantee that none outlives it: each is stopped when the benchmark ends, fails, times out or
is interrupted (atexit, SIGTERM, Ctrl-C). A run that hangs is killed after its timeout."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_running: list[subprocess.Popen] = []
_own_group: dict[int, bool] = {}


def spawn(
    command: Sequence[str], *, env: dict[str, str], log: Path, own_group: bool = True
) -> subprocess.Popen:
    """Start `command` from the repository root with its output in `log`.

    `own_group`: in a new process group, so stopping it also stops what it started (a
    measurement run's workers). False for processes a measurement run starts itself: they stay
    in the run's group and go down with it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: S603 - argv built by the benchmark, no shell
            list(command),
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )
    _running.append(process)
    _own_group[process.pid] = own_group
    return process


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        if _own_group.get(process.pid):
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    except ProcessLookupError:
        pass


def stop(process: subprocess.Popen, *, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Ask politely (`sig`), then SIGKILL what is left of it (its whole group if it has one)."""
    if process.poll() is None:
        _signal(process, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            process.wait()
    if _own_group.get(process.pid):
        _signal(process, signal.SIGKILL)  # anything it started and left behind
    if process in _running:
        _running.remove(process)


def stop_all() -> None:
    for process in reversed(list(_running)):
        stop(process, grace=5.0)


def run(
    command: Sequence[str], *, env: dict[str, str], log: Path, timeout: float
) -> tuple[int | None, float]:
    """Run to the end or until `timeout` seconds: (exit status, or None if it was killed for
    taking too long; seconds it took)."""
    started = time.monotonic()
    process = spawn(command, env=env, log=log)
    try:
        returncode: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        stop(process)
    return returncode, time.monotonic() - started


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, then atexit


def install_handlers() -> None:
    """Stop every child on exit, on SIGTERM and on Ctrl-C (KeyboardInterrupt unwinds too)."""
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _terminate)
