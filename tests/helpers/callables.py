"""Python callables and executors that the tests' flow definitions name by dotted path
("tests.helpers.callables:counted", "tests.helpers.callables.ShoutWithSummaryExecutor"), with
the state they leave for the tests to read (CALLS, SEEN, STOPPING).

The product imports this module at run time (FLOWPLATFORM_PYTHON_CALLABLES must allow it), so
no definition names a test module. A python callable must be defined here, not imported."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pytest

from executions.executors import Executor, ExecutorResult
from executions.models import TaskExecution

if TYPE_CHECKING:
    from executions.management.commands.db_worker import Worker

# Every run of `counted` (its input's JSON) and of `fails_once`.
CALLS: list[str] = []


@pytest.fixture(autouse=True)
def allow_test_callables(settings: Any) -> None:
    """Autouse where imported: callables under `tests` are allowed, CALLS starts empty."""
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples", "tests"]
    CALLS.clear()


def always_fails(input: Any) -> Any:
    raise ValueError(f"cannot handle {input!r}")


def fails_once(input: Any) -> Any:
    CALLS.append("fails_once")
    if CALLS.count("fails_once") == 1:
        raise RuntimeError("transient")
    return {"ok": True}


def counted(input: Any) -> Any:
    CALLS.append(json.dumps(input, sort_keys=True))
    return input


def raise_nul(input: Any) -> Any:
    raise ValueError("bad \x00 value")


def parity(input: Any) -> Any:
    """A lossy task: the parity of the numbers it reads."""
    numbers = [v for v in json.dumps(input) if v.isdigit()]
    return {"v": sum(map(int, numbers)) % 2}


class ShoutWithSummaryExecutor(Executor):
    """A task type from settings.FLOWPLATFORM_EXECUTORS: upper-cases, summarises {"loud": True}."""

    name = "shout"

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        return ExecutorResult(str(input).upper(), summary={"loud": True})


class ShoutWithVolumeExecutor(Executor):
    """A task type added through settings.FLOWPLATFORM_EXECUTORS."""

    name = "shout"
    config_keys = frozenset({"volume"})

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        return ExecutorResult(str(input).upper())


# The leases `look_at_my_lease` saw, as the worker held them.
SEEN: list[dict[str, Any]] = []


def look_at_my_lease(input: Any) -> Any:
    """A python task that records its own attempt's lease as the worker holds it."""
    attempt = TaskExecution.objects.get(status="running", task_name="a")
    SEEN.append({"owner": attempt.lease_owner, "expires": attempt.lease_expires_at})
    return input


# The worker `catches_everything` interrupts (set by its test).
STOPPING: dict[str, Worker] = {}


def catches_everything(input: Any) -> Any:
    """Ordinary user code: a broad `except Exception` around work (a retry loop, a fallback)."""
    try:
        STOPPING["worker"]._interrupt("the task did not finish within 0s")  # SIGALRM lands here
        return {"complete": True}
    except Exception:
        return {"fallback": True}


def logs_a_line(input: Any) -> Any:
    """Logs one line as it runs (tests/test_logging.py reads its fields), and returns its input."""
    logging.getLogger("tests.callables").warning("logs_a_line ran")
    return input
