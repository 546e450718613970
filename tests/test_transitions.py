"""One owner of status changes: executions.transitions.

The table of moves is checked pair by pair against the one documented here (README,
"Statuses"); each write function is run against attempts in every status and must change
exactly the ones its move leaves from; and no other product module writes a status.
"""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from executions import transitions
from executions.models import FlowExecution, TaskExecution
from flowplatform.exceptions import InvalidInput, InvalidTransition
from outputs.models import TaskOutput

ROOT = Path(__file__).resolve().parent.parent
S = TaskExecution.Status
F = FlowExecution.Status
NEW = transitions.NEW
EVERY_STATUS = list(S)
EVERY_FLOW_STATUS = list(F)

# What a person may do to a task execution, from each status (NEW: create one). Written out
# here, not derived from the module, so a change to the table is a change to this test.
PERSON = {
    NEW: {S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.STALE},
    S.QUEUED: {S.RUNNING, S.DELETED},
    S.RUNNING: {S.COMPLETED, S.FAILED, S.DELETED},
    S.COMPLETED: {S.COMPLETED, S.STALE, S.DELETED},
    S.FAILED: {S.COMPLETED, S.STALE, S.DELETED},
    S.STALE: {S.DELETED},
    S.DELETED: {S.DELETED},
}
# The engine's own moves: name → (from, to).
ENGINE = {
    "queue": ({NEW}, S.QUEUED),
    "await_person": ({NEW}, S.RUNNING),
    "reuse": ({NEW}, S.COMPLETED),
    "unresolvable": ({NEW}, S.FAILED),
    "claim": ({S.QUEUED}, S.RUNNING),
    "complete": ({S.RUNNING}, S.COMPLETED),
    "fail": ({S.RUNNING}, S.FAILED),
    "reap": ({S.RUNNING}, S.FAILED),
    "go_stale": ({S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED}, S.STALE),
    "cancel": ({S.QUEUED, S.RUNNING}, S.STALE),
    "run_pure": ({NEW}, S.COMPLETED),
    "fail_pure": ({NEW}, S.FAILED),
    "hand_back": ({S.RUNNING}, S.QUEUED),
    # Loops: a for_each over no items; an iteration retired (its item left the list, or its
    # until loop ended before it), also one already stale for another cause.
    "empty_loop": ({NEW}, S.COMPLETED),
    "retire": ({S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED, S.STALE}, S.STALE),
}


@pytest.mark.parametrize("current", [NEW, *EVERY_STATUS])
@pytest.mark.parametrize("requested", EVERY_STATUS)
def test_every_pair_a_person_may_or_may_not_move(current: Any, requested: str) -> None:
    allowed = requested in PERSON[current]
    assert transitions.person_may(current, requested) is allowed
    human = allowed or (current, requested) == (S.QUEUED, S.COMPLETED)
    assert transitions.person_may(current, requested, human_task=True) is human
    if current is not NEW:
        if allowed:
            transitions.check_person_move(current, requested)
        else:
            with pytest.raises(InvalidTransition):
                transitions.check_person_move(current, requested)


def test_the_engines_moves_are_the_documented_ones() -> None:
    moves = {m.name: (set(m.sources), m.target) for m in transitions.ENGINE_MOVES}
    assert moves == ENGINE


def test_every_pair_the_engine_may_make() -> None:
    """Across all its moves, the engine moves a task execution only along these pairs."""
    pairs = {(source, m.target) for m in transitions.ENGINE_MOVES for source in m.sources}
    expected = {(source, target) for sources, target in ENGINE.values() for source in sources}
    assert pairs == expected
    for current in [NEW, *EVERY_STATUS]:
        for requested in EVERY_STATUS:
            assert ((current, requested) in pairs) is ((current, requested) in expected)


def test_the_named_groups() -> None:
    assert {S.QUEUED, S.RUNNING} == transitions.LIVE
    assert {S.STALE, S.DELETED} == transitions.NEEDS_ATTEMPT
    assert {S.QUEUED, S.RUNNING, S.COMPLETED, S.FAILED} == transitions.CAN_GO_STALE
    assert {
        F.RUNNING,
        F.IN_PROGRESS,
        F.COMPLETED,
        F.FAILED,
        F.STALE,
    } == transitions.DERIVED_FLOW_STATUSES


def test_the_flow_executions_moves() -> None:
    assert (set(transitions.FLOW_CREATE.sources), transitions.FLOW_CREATE.target) == (
        {NEW},
        F.QUEUED,
    )
    assert (set(transitions.FLOW_START.sources), transitions.FLOW_START.target) == (
        {F.QUEUED},
        F.RUNNING,
    )
    assert set(transitions.FLOW_RERUN.sources) == set(F) - {F.DELETED}
    assert set(transitions.FLOW_DELETE.sources) == set(F)
    assert set(transitions.FLOW_DERIVE_SOURCES) == set(F) - {F.DELETED}


def test_a_person_cannot_create_a_deleted_attempt_or_output() -> None:
    with pytest.raises(InvalidInput):
        transitions.check_new_attempt_status(S.DELETED)
    with pytest.raises(InvalidInput):
        transitions.new_output_by_person(TaskOutput.Status.DELETED)
    for status in PERSON[NEW]:
        transitions.check_new_attempt_status(status)


# Each write function against attempts in every status -------------------------------------


def attempts_in_every_status(tenant: Any) -> dict[str, TaskExecution]:
    fe = tenant.flow_execution()
    return {
        status: tenant.task_execution(
            fe,
            task_name=f"t-{status}",
            status=status,
            lease_owner="host:1",
            lease_expires_at=timezone.now() - timedelta(seconds=5),
        )
        for status in EVERY_STATUS
    }


def changed(rows: dict[str, TaskExecution]) -> dict[str, str]:
    """from → to, for the attempts whose status changed."""
    now = dict(
        TaskExecution.objects.filter(pk__in=[a.pk for a in rows.values()]).values_list(
            "task_name", "status"
        )
    )
    return {s: now[f"t-{s}"] for s in rows if now[f"t-{s}"] != s}


def call_write(name: str, attempt: TaskExecution) -> Any:
    now = timezone.now()
    return {
        "claim": lambda: transitions.claim(attempt, owner="me", expires=Now(), now=now),
        "complete": lambda: transitions.complete(attempt.pk, output=1, now=now),
        "fail": lambda: transitions.fail(attempt.pk, error={}, now=now),
        "reap": lambda: transitions.reap(attempt.pk, error={}, now=now),
        "go_stale": lambda: transitions.go_stale([attempt.pk], updated_at=now),
        "cancel": lambda: transitions.cancel([attempt.pk], updated_at=now),
        "hand_back": lambda: transitions.hand_back(attempt.pk, owner="host:1", now=now),
        "retire": lambda: transitions.retire([attempt.pk], updated_at=now),
    }[name]()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", ["claim", "complete", "fail", "reap", "go_stale", "cancel", "hand_back", "retire"]
)
def test_each_write_changes_exactly_the_attempts_its_move_leaves_from(tenant, name) -> None:
    rows = attempts_in_every_status(tenant)
    sources, target = ENGINE[name]
    for attempt in rows.values():
        call_write(name, attempt)
    assert changed(rows) == {source: target for source in sources if source != target}


@pytest.mark.django_db
def test_only_the_worker_holding_an_attempt_hands_it_back(tenant) -> None:
    attempt = tenant.task_execution(status=S.RUNNING, lease_owner="host:1")
    assert transitions.hand_back(attempt.pk, owner="host:2", now=timezone.now()) is False
    assert transitions.hand_back(attempt.pk, owner="host:1", now=timezone.now()) is True
    attempt.refresh_from_db()
    assert (attempt.status, attempt.lease_owner, attempt.lease_expires_at) == (S.QUEUED, "", None)


@pytest.mark.django_db
def test_reaping_leaves_an_attempt_whose_lease_is_still_running(tenant) -> None:
    attempt = tenant.task_execution(
        status=S.RUNNING, lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    assert transitions.reap(attempt.pk, error={}, now=timezone.now()) is False
    attempt.refresh_from_db()
    assert attempt.status == S.RUNNING


@pytest.mark.django_db
@pytest.mark.parametrize("current", EVERY_STATUS)
def test_a_persons_move_sets_the_status_only_if_allowed(tenant, current) -> None:
    for requested in EVERY_STATUS:
        attempt = TaskExecution(status=current)
        if requested in PERSON[current]:
            transitions.move_by_person(attempt, requested, human_task=False, now=timezone.now())
            assert attempt.status == requested
            assert (attempt.completed_at is not None) is (
                requested == S.COMPLETED and current != S.COMPLETED
            )
        else:
            with pytest.raises(InvalidTransition):
                transitions.move_by_person(attempt, requested, human_task=False, now=timezone.now())
            assert attempt.status == current


@pytest.mark.django_db
@pytest.mark.parametrize("current", EVERY_FLOW_STATUS)
def test_flow_execution_writes_leave_only_from_their_sources(tenant, current) -> None:
    fe = tenant.flow_execution()
    FlowExecution.objects.filter(pk=fe.pk).update(status=current)
    fe.refresh_from_db()
    started = transitions.start_flow(fe.pk, now=timezone.now())
    assert started is (current == F.QUEUED)
    FlowExecution.objects.filter(pk=fe.pk).update(status=current)
    transitions.derive_flow(fe, F.COMPLETED)
    expected = current if current == F.DELETED else F.COMPLETED
    assert FlowExecution.objects.get(pk=fe.pk).status == expected
    FlowExecution.objects.filter(pk=fe.pk).update(status=current)
    transitions.rerun_flow(fe, actor="t")
    expected = current if current == F.DELETED else F.RUNNING
    assert FlowExecution.objects.get(pk=fe.pk).status == expected


@pytest.mark.django_db
def test_only_completed_outputs_go_stale(tenant) -> None:
    fe = tenant.flow_execution()
    outputs = {
        status: tenant.task_output(fe, task_name=f"t-{status}", status=status)
        for status in TaskOutput.Status
    }
    transitions.outputs_go_stale([o.pk for o in outputs.values()], actor="t", now=timezone.now())
    now = dict(TaskOutput.objects.filter(flow_execution=fe).values_list("task_name", "status"))
    assert {s: now[f"t-{s}"] for s in outputs if now[f"t-{s}"] != s} == {
        TaskOutput.Status.COMPLETED: TaskOutput.Status.STALE
    }


@pytest.mark.django_db
def test_retired_outputs_become_deleted_from_any_status_but_deleted(tenant) -> None:
    fe = tenant.flow_execution()
    outputs = {
        status: tenant.task_output(fe, task_name=f"t-{status}", status=status)
        for status in TaskOutput.Status
    }
    rows = TaskOutput.objects.filter(flow_execution=fe)
    moved = transitions.retire_outputs(rows, actor="t", now=timezone.now(), history="retired")
    now = dict(TaskOutput.objects.filter(flow_execution=fe).values_list("task_name", "status"))
    assert moved == len(outputs) - 1
    assert set(now.values()) == {TaskOutput.Status.DELETED}


# No other module writes a status ----------------------------------------------------------

PRODUCT = ("flowplatform", "flows", "executions", "outputs")
OWNER = ROOT / "executions" / "transitions.py"
# Rows with a status of their own that is not a run's: django-tasks-db's job rows, and upgrade
# jobs' progress (executions.upgrade_models, written by executions.corrections.upgrade_jobs).
OTHER_STATUSES = {"TaskResultStatus", "JobStatus"}
WRITES = {"update", "create", "get_or_create", "update_or_create", "bulk_update"}


def product_modules() -> list[Path]:
    return sorted(
        path
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and path != OWNER
    )


def status_writes(path: Path) -> list[str]:
    """Every place in `path` that writes a `status`: an assignment to `.status`, setattr of
    "status", `status=` in an update/create call or a model's constructor, "status" in
    update_fields."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:" + str(
            getattr(node, "lineno", 0)
        )
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append(where)
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        args = node.args
        if name == "setattr" and len(args) > 1 and getattr(args[1], "value", None) == "status":
            found.append(where)
        for keyword in node.keywords:
            mentions_other = any(
                getattr(n, "id", None) in OTHER_STATUSES for n in ast.walk(keyword.value)
            )
            written = name in WRITES or name in {"TaskExecution", "FlowExecution", "TaskOutput"}
            if keyword.arg == "status" and not mentions_other and written:
                found.append(where)
            if keyword.arg == "update_fields" and "'status'" in ast.unparse(keyword.value):
                found.append(where)
    return found


def test_no_module_but_transitions_writes_a_status() -> None:
    writes = [w for path in product_modules() for w in status_writes(path)]
    assert writes == [], "status written outside executions.transitions"


def test_the_status_scan_finds_a_write_when_there_is_one(tmp_path: Path) -> None:
    """The scan above is not vacuous: each kind of write it looks for is found."""
    module = tmp_path / "probe.py"
    module.write_text(
        "def f(a, qs):\n"
        "    a.status = 'stale'\n"
        "    setattr(a, 'status', 'stale')\n"
        "    qs.update(status='failed')\n"
        "    TaskExecution(status='queued')\n"
        "    a.save(update_fields=['status'])\n"
        "    jobs.update(status=TaskResultStatus.READY)\n"
    )
    assert [w.rsplit(":", 1)[1] for w in status_writes(module)] == ["2", "3", "4", "5", "6"]


def test_every_write_site_uses_a_declared_move() -> None:
    """Every call of a transitions write function in the product names a function this test
    knows the move of, and every move of the engine has a write site."""
    write_functions = {
        "new_attempt": None,  # takes the move as its argument
        "new_attempt_by_person": "person",
        "move_by_person": "person",
        "delete_attempt": "person",
        "claim": "claim",
        "claim_many": "claim",
        "ran_pure": "run_pure or fail_pure",
        "record_claimed": "complete or fail",
        "complete": "complete",
        "fail": "fail",
        "reap": "reap",
        "go_stale": "go_stale",
        "cancel": "cancel",
        "hand_back": "hand_back",
        "retire": "retire",
        "start_flow": "flow start",
        "derive_flow": "flow derive",
        "rerun_flow": "flow rerun",
        "delete_flow": "flow delete",
        "new_output": "publish",
        "new_output_by_person": "person",
        "move_output_by_person": "person",
        "delete_output": "person",
        "outputs_go_stale": "output_go_stale",
        "retire_outputs": "retire_output",
    }
    called: set[str] = set()
    moves_passed: set[str] = set()
    for path in product_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "transitions"
            ):
                if node.attr.isupper():
                    moves_passed.add(node.attr)
                else:
                    called.add(node.attr)
    checks = {"person_may", "check_person_move", "check_new_attempt_status"}
    assert called - checks <= set(write_functions), called - checks - set(write_functions)
    unused = set(write_functions) - called
    assert unused == set(), f"write functions nothing calls: {unused}"
    created_by_new_attempt = {"QUEUE", "AWAIT_PERSON", "REUSE", "UNRESOLVABLE", "EMPTY_LOOP"}
    assert created_by_new_attempt <= moves_passed
