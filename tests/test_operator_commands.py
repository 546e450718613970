"""Operator commands (issue 6): reexecute_flow, reexecute_stale and load_flow."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from executions import locking, services
from executions.management.commands.reexecute_stale import duration
from executions.models import Correction, FlowExecution, TaskExecution
from flows.models import Flow, FlowVersion
from outputs.models import TaskOutput
from tests.helpers.callables import CALLS, allow_test_callables  # noqa: F401 - autouse fixture
from tests.helpers.corrections import correct_as_key, counted_task, lossy_chain
from tests.helpers.flows import attempts, latest, start_execution

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so the progress bar is drawn."""

    def isatty(self) -> bool:
        return True


def call(*args: str, stderr: io.StringIO | None = None) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=stderr or io.StringIO())
    return out.getvalue()


def chain() -> list[dict]:
    """a → b → c, c counted (every run of it is in CALLS)."""
    return [
        {"name": "a", "type": "transform", "input": {"x": "${{ flow.input.x }}"}},
        {"name": "b", "type": "transform", "input": "${{ tasks.a.output }}"},
        counted_task("c", "b"),
    ]


def stale_execution(tenant: Any, x: int = 1, flow_id: str | None = None) -> str:
    """A settled chain (a new flow, or `flow_id`) whose `a` was corrected without
    execute_flow: b and c are stale."""
    if flow_id is None:
        fe = start_execution(tenant, chain(), {"x": x})
    else:
        response = tenant.client.post(
            "/flow-executions", {"flow_id": flow_id, "input": {"x": x}}, format="json"
        )
        assert response.status_code == 201, response.json()
        fe = response.json()["id"]
    response = correct_as_key(tenant, latest(fe, "a"), {"x": x + 100})
    assert response.status_code == 200, response.json()
    assert FlowExecution.objects.get(pk=fe).status == FlowExecution.Status.STALE
    CALLS.clear()
    return fe


def snapshot() -> dict[str, Any]:
    """Everything a dry run must leave as it was: row counts and every `updated_at`."""
    return {
        "flow_executions": sorted(FlowExecution.objects.values_list("id", "status", "updated_at")),
        "attempts": sorted(TaskExecution.objects.values_list("id", "status", "updated_at")),
        "outputs": sorted(TaskOutput.objects.values_list("id", "status", "updated_at")),
        "corrections": Correction.objects.count(),
        "flows": sorted(Flow.objects.values_list("id", "updated_at")),
        "versions": FlowVersion.objects.count(),
    }


def counts(fe: str) -> dict[str, int]:
    return {name: len(items) for name, items in attempts(fe).items()}


# --- reexecute_flow -------------------------------------------------------------------------


def test_reexecute_flow_runs_every_task_again_and_keeps_history(tenant):
    fe = start_execution(tenant, chain(), {"x": 1})
    first = {name: items[0] for name, items in attempts(fe).items()}
    CALLS.clear()

    out = call("reexecute_flow", fe, "--actor", "ops")

    assert "Re-executed flow execution" in out
    assert "the whole flow" in out
    assert "Started: a (idx 1)" in out  # b and c start as their upstream tasks complete
    assert "Status: completed" in out
    assert counts(fe) == {"a": 2, "b": 2, "c": 2}
    for name, items in attempts(fe).items():
        old, new = items
        assert (old.task_execution_idx, new.task_execution_idx) == (0, 1)
        assert old.status == TaskExecution.Status.STALE
        assert old.stale_reason == "reexecution"
        assert old.output == first[name].output  # history kept, with its output
        assert new.status == TaskExecution.Status.COMPLETED
    assert {items[0].stale_by for items in attempts(fe).values()} == {"ops"}
    assert len(CALLS) == 1  # c really ran again
    assert FlowExecution.objects.get(pk=fe).status == FlowExecution.Status.COMPLETED


def test_reexecute_flow_stale_only_reruns_only_the_stale_tasks(tenant):
    fe = stale_execution(tenant)

    out = call("reexecute_flow", fe, "--stale-only")

    assert "its stale tasks" in out
    assert "Started: b (idx 1)" in out
    assert "Status: completed" in out
    assert counts(fe) == {"a": 1, "b": 2, "c": 2}
    assert latest(fe, "a").output == {"x": 101}  # the correction stays
    assert latest(fe, "c").output["up"] == {"x": 101}
    assert attempts(fe)["c"][0].status == TaskExecution.Status.STALE
    assert FlowExecution.objects.get(pk=fe).status == FlowExecution.Status.COMPLETED


def test_reexecute_flow_task_reruns_that_task_and_its_dependents(tenant):
    fe = start_execution(tenant, chain(), {"x": 1})
    CALLS.clear()

    out = call("reexecute_flow", fe, "--task", "b")

    assert "task 'b' and its dependents" in out
    assert "Started: b (idx 1)" in out
    assert counts(fe) == {"a": 1, "b": 2, "c": 2}
    assert [a.status for a in attempts(fe)["b"]] == ["stale", "completed"]
    assert latest(fe, "c").status == TaskExecution.Status.COMPLETED
    assert FlowExecution.objects.get(pk=fe).status == FlowExecution.Status.COMPLETED


def test_reexecute_flow_dry_run_writes_nothing_and_runs_no_job(tenant):
    fe = start_execution(tenant, lossy_chain(), None)
    CALLS.clear()
    before = snapshot()

    out = call("reexecute_flow", fe, "--task", "c", "--dry-run")

    assert "Dry run, nothing written" in out
    assert "Would start: c (idx 1)" in out
    assert "Status would be: in_progress" in out  # a and b completed, c queued
    assert snapshot() == before
    assert CALLS == []  # c's job was never enqueued


def test_reexecute_flow_dry_run_of_the_whole_flow_reports_the_root_tasks(tenant):
    fe = start_execution(tenant, chain(), {"x": 1})
    before = snapshot()

    out = call("reexecute_flow", fe, "--dry-run")

    # the whole set that will run, not only the first wave
    assert "Would start: a (idx 1); then, as their upstream tasks complete: b, c" in out
    assert snapshot() == before


def test_a_dry_run_of_one_task_names_every_task_that_will_run(tenant):
    fe = start_execution(tenant, chain(), {"x": 1})
    before = snapshot()

    out = call("reexecute_flow", fe, "--task", "b", "--dry-run")

    assert "Would start: b (idx 1); then, as their upstream tasks complete: c" in out
    assert snapshot() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-a-uuid"], "not a flow execution id: 'not-a-uuid'"),
        ([str(uuid.UUID(int=7))], "no such flow execution: 00000000-0000-0000-0000-000000000007"),
        (["{fe}", "--task", "nope"], "'nope' is not a task of version 1 of this flow"),
        (["{fe}", "--stale-only", "--task", "b"], "not allowed with argument"),
        (["{fe}", "--actor", ""], "--actor: must be 'system', a UUID, or an identifier"),
        (["{fe}", "--actor", "bad actor!"], "--actor: must be 'system', a UUID, or an identifier"),
        ([], "the following arguments are required: FLOW_EXECUTION_ID"),
    ],
)
def test_reexecute_flow_rejects_bad_input_and_changes_nothing(tenant, args, message):
    fe = start_execution(tenant, chain(), {"x": 1})
    before = snapshot()
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        call("reexecute_flow", *(arg.format(fe=fe) for arg in args))
    assert snapshot() == before


def test_reexecute_flow_refuses_a_deleted_flow_execution(tenant):
    fe = start_execution(tenant, chain(), {"x": 1})
    services.delete_flow_execution(FlowExecution.objects.get(pk=fe), actor="ops")
    before = snapshot()
    with pytest.raises(CommandError, match="the flow execution is deleted"):
        call("reexecute_flow", fe)
    assert snapshot() == before


def test_reexecute_flow_help_from_the_command_line():
    result = subprocess.run(
        [sys.executable, "manage.py", "reexecute_flow", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "FLOW_EXECUTION_ID" in result.stdout
    assert "--stale-only" in result.stdout
    assert "--dry-run" in result.stdout
    assert "Re-execute a flow execution" in result.stdout


# --- reexecute_stale ------------------------------------------------------------------------


def test_reexecute_stale_reexecutes_the_stale_executions_of_one_org(tenant, other_tenant):
    stale = [stale_execution(tenant, 1), stale_execution(tenant, 2)]
    settled = start_execution(tenant, chain(), {"x": 3})
    elsewhere = stale_execution(other_tenant)

    out = call("reexecute_stale", "--org", "acme", "--actor", "ops")

    for fe in stale:
        assert counts(fe) == {"a": 1, "b": 2, "c": 2}
        flow_execution = FlowExecution.objects.get(pk=fe)
        assert flow_execution.status == FlowExecution.Status.COMPLETED
        assert flow_execution.modified_by == "ops"
        assert f"{fe} (acme/" in out
    # the whole set that ran: b now, c as b completed
    assert "started b (idx 1); then, as their upstream tasks complete: c; status completed" in out
    assert "2 stale flow execution(s) re-executed" in out
    assert counts(settled) == {"a": 1, "b": 1, "c": 1}
    assert FlowExecution.objects.get(pk=elsewhere).status == FlowExecution.Status.STALE
    assert counts(elsewhere) == {"a": 1, "b": 1, "c": 1}


def test_reexecute_stale_filters_by_flow_name_and_age(tenant):
    old = stale_execution(tenant)
    flow = FlowExecution.objects.get(pk=old).flow
    recent = stale_execution(tenant, flow_id=str(flow.pk))
    other_flow = stale_execution(tenant)
    name = flow.name
    FlowExecution.objects.filter(pk=old).update(updated_at=timezone.now() - timedelta(hours=3))

    out = call("reexecute_stale", "--org", "acme", "--flow", name, "--older-than", "2h30m")

    assert "1 stale flow execution(s) re-executed" in out
    assert FlowExecution.objects.get(pk=old).status == FlowExecution.Status.COMPLETED
    assert FlowExecution.objects.get(pk=recent).status == FlowExecution.Status.STALE
    assert FlowExecution.objects.get(pk=other_flow).status == FlowExecution.Status.STALE


def test_reexecute_stale_dry_run_lists_what_would_run_and_writes_nothing(tenant):
    fe = stale_execution(tenant)
    before = snapshot()

    out = call("reexecute_stale", "--dry-run")

    assert f"{fe} (acme/" in out
    assert "would start b (idx 1); then, as their upstream tasks complete: c" in out
    assert "1 stale flow execution(s) would be re-executed (dry run, nothing written)" in out
    assert snapshot() == before
    assert CALLS == []


def test_reexecute_stale_reports_a_failure_goes_on_and_exits_non_zero(tenant, monkeypatch):
    failing, fine = stale_execution(tenant, 1), stale_execution(tenant, 2)
    real = services.start_reexecution
    fired: list[str] = []

    def reexecute(flow_execution: FlowExecution, **kwargs: Any) -> Any:
        if str(flow_execution.pk) == failing:
            fired.append(failing)
            raise RuntimeError("disk full")
        return real(flow_execution, **kwargs)

    monkeypatch.setattr(services, "start_reexecution", reexecute)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=r"1 of 2 flow execution\(s\) failed"):
        call_command("reexecute_stale", stdout=out, stderr=err)

    assert fired == [failing], "the injected failure did not happen"
    assert f"{failing} (acme/" in err.getvalue()
    assert "failed: RuntimeError: disk full" in err.getvalue()
    assert "1 stale flow execution(s) re-executed" in out.getvalue()
    assert FlowExecution.objects.get(pk=fine).status == FlowExecution.Status.COMPLETED
    assert FlowExecution.objects.get(pk=failing).status == FlowExecution.Status.STALE
    assert counts(failing) == {"a": 1, "b": 1, "c": 1}  # its transaction was rolled back


def test_reexecute_stale_skips_an_execution_no_longer_stale_when_its_turn_comes(
    tenant, monkeypatch
):
    first, second = stale_execution(tenant, 1), stale_execution(tenant, 2)
    real = locking.lock_flow_execution
    fired: list[str] = []

    def lock(flow_execution_id: uuid.UUID) -> FlowExecution:
        if str(flow_execution_id) == second:  # somebody re-ran it after the command listed it
            fired.append(second)
            FlowExecution.objects.filter(pk=second).update(status=FlowExecution.Status.COMPLETED)
        return real(flow_execution_id)

    monkeypatch.setattr(locking, "lock_flow_execution", lock)
    out = call("reexecute_stale")

    assert fired, "the injected change did not happen"
    assert f"{second} (acme/" in out
    assert "skipped: no longer stale (status completed)" in out
    assert "1 stale flow execution(s) re-executed, 1 skipped (no longer stale)" in out
    assert counts(first) == {"a": 1, "b": 2, "c": 2}
    assert counts(second) == {"a": 1, "b": 1, "c": 1}


def test_reexecute_stale_draws_a_progress_bar_on_a_terminal_only(tenant):
    stale_execution(tenant, 1)
    stale_execution(tenant, 2)
    terminal = Terminal()
    call("reexecute_stale", "--dry-run", stderr=terminal)
    assert "flow executions" in terminal.getvalue()
    assert "2/2" in terminal.getvalue()

    quiet = Terminal()
    call("reexecute_stale", "--dry-run", "--no-progress", stderr=quiet)
    assert quiet.getvalue() == ""
    piped = io.StringIO()
    call("reexecute_stale", "--dry-run", stderr=piped)
    assert piped.getvalue() == ""


def test_reexecute_stale_with_nothing_stale_says_so(tenant):
    start_execution(tenant, chain(), {"x": 1})
    assert "No stale flow executions match." in call("reexecute_stale")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "nobody"], "organization 'nobody' does not exist"),
        (["--flow", "nothing"], "no flow named 'nothing'"),
        (["--org", "globex", "--flow", "{flow}"], "no flow named '.*' in organization 'globex'"),
        (["--older-than", "5x"], "not a duration: '5x'"),
        (["--older-than", ""], "not a duration: ''"),
        (["--older-than", "30m1h"], "not a duration: '30m1h'"),
        (["--older-than", "h"], "not a duration: 'h'"),
        (["--actor", "x" * 201], "--actor: must be 'system', a UUID, or an identifier"),
        (["--actor", "bad actor!"], "--actor: must be 'system', a UUID, or an identifier"),
    ],
)
def test_reexecute_stale_rejects_bad_arguments_and_changes_nothing(
    tenant, other_tenant, args, message
):
    fe = stale_execution(tenant)
    flow = FlowExecution.objects.get(pk=fe).flow.name
    before = snapshot()
    with pytest.raises(CommandError, match=message):
        call("reexecute_stale", *(arg.format(flow=flow) for arg in args))
    assert snapshot() == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_older_than_accepts_durations(text, expected):
    assert duration(text) == expected


# --- load_flow ------------------------------------------------------------------------------

DEFINITION = """\
name: review
tasks:
  - name: extract
    type: transform
    input: {x: 1}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "review.yaml") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_flow_creates_then_versions_and_skips_an_unchanged_definition(tenant, tmp_path):
    path = write(tmp_path, DEFINITION, "file-stem.yaml")
    out = call("load_flow", path, "--org", "acme", "--actor", "deploy")
    flow = Flow.objects.get(organization=tenant.org)
    assert flow.name == "review"  # the definition's own name
    assert out.strip() == f"created: flow 'review' {flow.pk} version 1"
    assert flow.current_version.created_by == "deploy"

    changed = DEFINITION.replace("x: 1", "x: 2")
    out = call("load_flow", write(tmp_path, changed, "file-stem.yaml"), "--org", "acme")
    assert out.strip() == f"new version of: flow 'review' {flow.pk} version 2"
    versions = list(FlowVersion.objects.filter(flow=flow).order_by("version"))
    assert [v.definition for v in versions] == [DEFINITION, changed]  # history kept

    before = snapshot()
    out = call("load_flow", path, "--org", "acme")
    assert out.strip() == f"unchanged: flow 'review' {flow.pk} version 2"
    assert snapshot() == before
    # A flow loaded this way runs like one created through the API.
    response = tenant.client.post("/flow-executions", {"flow_id": str(flow.pk)}, format="json")
    assert response.status_code == 201
    assert response.json()["status"] == "completed"


def test_load_flow_names_the_flow_from_the_option_else_the_file(tenant, other_tenant, tmp_path):
    nameless = DEFINITION.replace("name: review\n", "")
    call("load_flow", write(tmp_path, nameless, "from-stem.yaml"), "--org", "acme")
    call("load_flow", write(tmp_path, DEFINITION), "--org", "acme", "--name", "chosen")
    call("load_flow", write(tmp_path, DEFINITION), "--org", "globex")
    assert sorted(Flow.objects.filter(organization=tenant.org).values_list("name", flat=True)) == [
        "chosen",
        "from-stem",
    ]
    # Same name in another organization: a flow of its own, version 1.
    assert Flow.objects.get(organization=other_tenant.org).current_version.version == 1


def test_load_flow_reports_every_problem_as_the_api_does_and_writes_nothing(tenant, tmp_path):
    broken = """\
tasks:
  - name: a
    type: nope
  - name: b
    type: transform
    depends_on: [missing]
"""
    before = snapshot()
    with pytest.raises(CommandError) as raised:
        call("load_flow", write(tmp_path, broken), "--org", "acme")
    assert snapshot() == before

    response = tenant.client.post("/flows", {"name": "x", "definition": broken}, format="json")
    assert response.status_code == 422
    api = response.json()["detail"]
    lines = str(raised.value).splitlines()
    assert lines[0] == f"cannot load {tmp_path / 'review.yaml'}:"
    assert lines[1:] == [
        f"  {'.'.join(map(str, item['loc'][1:]))}: {item['msg']} ({item['type']})" for item in api
    ]
    assert len(lines) >= 3  # both problems, each on its own line


def test_load_flow_validates_a_new_version_too(tenant, tmp_path):
    call("load_flow", write(tmp_path, DEFINITION), "--org", "acme")
    before = snapshot()
    with pytest.raises(CommandError, match="not valid YAML"):
        call("load_flow", write(tmp_path, "name: review\ntasks: [\n"), "--org", "acme")
    assert snapshot() == before


@pytest.mark.parametrize(
    ("setup", "org", "message"),
    [
        (lambda d: str(d / "missing.yaml"), "acme", "no such file: .*missing.yaml"),
        (lambda d: str(d), "acme", "cannot read .*: Is a directory"),
        (lambda d: write(d, b"name: r\xe9view\n"), "acme", "is not UTF-8 text"),
        (lambda d: write(d, DEFINITION), "nobody", "organization 'nobody' does not exist"),
    ],
)
def test_load_flow_rejects_unreadable_files_and_unknown_orgs(tenant, tmp_path, setup, org, message):
    path = setup(tmp_path)
    before = snapshot()
    with pytest.raises(CommandError, match=message):
        call("load_flow", path, "--org", org)
    assert snapshot() == before


def test_load_flow_requires_the_org(tenant, tmp_path):
    with pytest.raises(CommandError, match="the following arguments are required: --org"):
        call("load_flow", write(tmp_path, DEFINITION))
