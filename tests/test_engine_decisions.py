"""The engine's pure decisions, on plain data, without a database: readiness, retries, early
cutoff, the nearest stale cause, which attempts go stale, and a settled flow's status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executions.engine import cutoff, planning, staleness, status
from executions.engine.cutoff import PastAttempt
from executions.models import StaleReason, TaskExecution
from executions.selectors import Attempt
from flows.definitions import FlowSpec, validate_definition

S = TaskExecution.Status
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(edges: dict[str, list[str]], **rerun: str) -> FlowSpec:
    """A flow of transform tasks; `edges`: task → its depends_on."""
    return validate_definition(
        {
            "tasks": [
                {
                    "name": name,
                    "type": "transform",
                    "depends_on": upstream,
                    **({"rerun": rerun[name]} if name in rerun else {}),
                }
                for name, upstream in edges.items()
            ]
        }
    )


def attempt(task: str, status: str, **fields: Any) -> Attempt:
    return Attempt(uuid.uuid4(), task, fields.pop("idx", 0), status, **fields)


def past(status: str, completed: int | None = None, **fields: Any) -> PastAttempt:
    return PastAttempt(
        id=uuid.uuid4(),
        task_name=fields.pop("task_name", "t"),
        status=status,
        input=fields.pop("input", {"x": 1}),
        output=fields.pop("output", {"y": 1}),
        completed_at=None if completed is None else T0 + timedelta(seconds=completed),
        stale_reason=fields.pop("stale_reason", ""),
        stale_upstream_task=fields.pop("stale_upstream_task", ""),
    )


# Readiness ---------------------------------------------------------------------------------

NEEDS = frozenset({S.STALE, S.DELETED})


def test_a_task_is_ready_when_every_upstream_task_completed_and_it_needs_an_attempt():
    latest = {"a": attempt("a", S.COMPLETED), "b": attempt("b", S.COMPLETED)}
    assert planning.ready(["a", "b"], None, latest, NEEDS)
    assert planning.ready(["a"], attempt("c", S.STALE), latest, NEEDS)
    assert planning.ready([], None, {}, NEEDS)  # a root task


@pytest.mark.parametrize("upstream_status", [S.QUEUED, S.RUNNING, S.FAILED, S.STALE, S.DELETED])
def test_a_task_waits_for_an_upstream_task_that_has_not_completed(upstream_status):
    latest = {"a": attempt("a", S.COMPLETED), "b": attempt("b", upstream_status)}
    assert not planning.ready(["a", "b"], None, latest, NEEDS)
    assert not planning.ready(["a", "missing"], None, latest, NEEDS)  # never ran


@pytest.mark.parametrize("own", [S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED])
def test_a_task_with_a_live_or_finished_attempt_gets_no_new_one(own):
    assert not planning.ready([], attempt("c", own), {}, NEEDS)


def test_without_rerunning_stale_tasks_only_a_deleted_attempt_is_replaced():
    only_deleted = frozenset({S.DELETED})
    assert not planning.ready([], attempt("c", S.STALE), {}, only_deleted)
    assert planning.ready([], attempt("c", S.DELETED), {}, only_deleted)


def test_failures_are_counted_back_from_the_newest_attempt():
    assert planning.failures_in_a_row([]) == 0
    assert planning.failures_in_a_row([S.FAILED, S.FAILED, S.COMPLETED, S.FAILED]) == 2
    assert planning.failures_in_a_row([S.STALE, S.FAILED]) == 0


# Early cutoff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status_", "reason", "upstream", "rerun", "expected"),
    [
        (S.STALE, StaleReason.CORRECTION, "a", "on_input_change", True),
        (S.STALE, StaleReason.UPSTREAM_RERUN, "a", "on_input_change", True),
        (S.STALE, StaleReason.CORRECTION, "t", "on_input_change", False),  # its own result
        (S.STALE, StaleReason.REEXECUTION, "", "on_input_change", False),
        (S.STALE, StaleReason.FLOW_EXECUTION_DELETED, "", "on_input_change", False),
        (S.STALE, StaleReason.CORRECTION, "a", "always", False),
        (S.DELETED, "", "", "on_input_change", False),
        (S.COMPLETED, "", "", "on_input_change", False),
    ],
)
def test_cutoff_applies_only_to_a_task_outdated_by_a_change_upstream(
    status_, reason, upstream, rerun, expected
):
    latest = attempt("t", status_, stale_reason=reason, stale_upstream_task=upstream)
    assert cutoff.may_cut_off(latest, rerun) is expected


def test_an_attempt_whose_own_result_was_thrown_away_is_doubted():
    assert cutoff.doubted(past(S.DELETED, 1), None)
    assert cutoff.doubted(past(S.STALE, 1, stale_reason=StaleReason.REEXECUTION), None)
    assert cutoff.doubted(past(S.STALE, 1, stale_upstream_task="t"), None)  # marked stale itself
    assert cutoff.doubted(past(S.STALE, 1), T0 + timedelta(seconds=2))  # before a re-execution
    assert not cutoff.doubted(past(S.STALE, 3), T0 + timedelta(seconds=2))
    assert not cutoff.doubted(
        past(S.STALE, 1, stale_reason=StaleReason.CORRECTION, stale_upstream_task="a"), None
    )


def test_the_previous_result_is_the_newest_one_not_behind_a_doubted_attempt():
    cancelled = past(S.STALE, None, stale_reason=StaleReason.CORRECTION, stale_upstream_task="a")
    good = past(S.STALE, 5, stale_reason=StaleReason.CORRECTION, stale_upstream_task="a")
    assert cutoff.previous_completed([cancelled, good], None) is good
    thrown_away = past(S.STALE, 6, stale_reason=StaleReason.REEXECUTION)
    assert cutoff.previous_completed([thrown_away, good], None) is None
    assert cutoff.previous_completed([cancelled], None) is None


def test_the_result_kept_is_a_later_published_output_else_the_attempts_own():
    earlier = past(S.STALE, 5, output={"pages": 1})
    own = cutoff.kept_result(earlier, None)
    assert (own.output, own.summary, own.modified_by) == (
        {"pages": 1},
        {"type": "object", "keys": 1},
        "system",
    )
    published_before = ({"pages": 9}, {"pages": 9}, ["t"], "ann", T0)
    assert cutoff.kept_result(earlier, published_before).output == {"pages": 1}
    published_after = ({"pages": 9}, {"pages": 9}, ["t"], "ann", T0 + timedelta(seconds=6))
    kept = cutoff.kept_result(earlier, published_after)
    assert (kept.output, kept.summary, kept.tags, kept.modified_by) == (
        {"pages": 9},
        {"pages": 9},
        ["t"],
        "ann",
    )


def test_reuse_needs_exactly_the_same_json_input():
    earlier = cutoff.Reusable(uuid.uuid4(), {"n": 1}, "out", {})
    assert cutoff.reuses(earlier, {"n": 1})
    assert not cutoff.reuses(earlier, {"n": 1.0})  # JSON types are compared exactly
    assert not cutoff.reuses(earlier, {"n": True})
    assert not cutoff.reuses(None, {"n": 1})


# Staleness ---------------------------------------------------------------------------------


def test_only_results_and_live_work_go_stale_in_dependency_order():
    flow = spec({"a": [], "b": ["a"], "c": ["b"], "d": ["c"], "e": ["d"], "f": ["e"]})
    latest = {
        "f": attempt("f", S.QUEUED),
        "b": attempt("b", S.COMPLETED),
        "c": attempt("c", S.STALE),
        "d": attempt("d", S.FAILED),
        "e": attempt("e", S.DELETED),
        "a": attempt("a", S.RUNNING),
    }
    assert staleness.stale_candidates(flow, latest) == ["a", "b", "d", "f"]


def correction_stale(task: str, corrected: str) -> Attempt:
    return attempt(
        task, S.STALE, stale_reason=StaleReason.CORRECTION, stale_upstream_task=corrected
    )


def test_a_correction_takes_over_the_cause_unless_an_earlier_one_is_nearer():
    flow = spec({"a": [], "b": ["a"], "c": ["b"], "x": [], "d": ["c", "x"]})
    cause = staleness.correction_cause(uuid.uuid4(), "b")
    via_a = correction_stale("d", "a")  # a is upstream of b: b is nearer
    via_c = correction_stale("d", "c")  # c is downstream of b: c stays nearer
    via_x = correction_stale("d", "x")  # unrelated: the newer correction wins
    itself = correction_stale("d", "d")  # marked stale itself: nothing is nearer
    rerun = attempt("d", S.STALE, stale_reason=StaleReason.REEXECUTION)
    taken = staleness.nearer_cause(flow, [via_a, via_c, via_x, itself, rerun], cause)
    assert taken == [via_a, via_x]


def test_only_a_correction_of_a_known_task_moves_causes():
    flow = spec({"a": [], "b": ["a"]})
    stale = [correction_stale("b", "x")]
    assert staleness.nearer_cause(flow, stale, staleness.REEXECUTION) == []
    assert staleness.nearer_cause(flow, stale, staleness.correction_cause(None, "gone")) == []


# A settled flow's status -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        ({"a": S.COMPLETED, "b": S.COMPLETED, "c": S.COMPLETED}, "completed"),
        ({"a": S.COMPLETED, "b": S.FAILED}, "failed"),  # c is blocked by b
        ({"a": S.COMPLETED, "b": S.STALE}, "stale"),  # a re-execution would run b, then c
        ({"a": S.COMPLETED, "b": S.COMPLETED, "c": S.DELETED}, "stale"),
        ({"a": S.FAILED, "b": S.STALE}, "failed"),  # what is stale is blocked by a
        ({"a": S.COMPLETED}, "stale"),  # b never ran: it needs an attempt
    ],
)
def test_a_settled_flow_is_completed_stale_or_failed(latest, expected):
    flow = spec({"a": [], "b": ["a"], "c": ["b"]})
    assert status.settled_status(flow, latest, "in_progress") == expected


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from([S.COMPLETED, S.FAILED, S.STALE, S.DELETED]),
    )
)
def test_a_settled_flow_is_completed_only_when_every_task_completed(latest):
    flow = spec({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    result = status.settled_status(flow, latest, "in_progress")
    all_completed = len(latest) == 4 and set(latest.values()) == {S.COMPLETED}
    assert (result == "completed") is all_completed
    assert result in {"completed", "failed", "stale", "in_progress"}
    if S.FAILED not in latest.values() and not all_completed:
        assert result == "stale"
