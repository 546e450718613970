"""Every management command README lists, run as an operator runs it: a real `manage.py`
subprocess (Django's system checks on, which `call_command` skips), on a throwaway SQLite
database of its own. Each must exit as documented, print what README says, and never a
traceback.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def readme_commands() -> set[str]:
    """The commands in README's "Management commands" table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Management commands", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)[ `]", section, re.MULTILINE))


class Shell:
    """`manage.py` against one throwaway database."""

    def __init__(self, directory: Path) -> None:
        self.database = directory / "commands.sqlite3"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_", "DJANGO_", "TASKS_", "FLOWPLATFORM_"))
        }
        self.env |= {
            "DATABASE_URL": f"sqlite:///{self.database}",
            "FLOWPLATFORM_VAR_DIR": str(directory),
            "PYTHONUNBUFFERED": "1",
        }

    def __call__(
        self, *args: str, status: int = 0, env: dict[str, str] | None = None, timeout: int = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 - our own manage.py, with our own arguments
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        shown = f"manage.py {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == status, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        return result

    def rows(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(self.database) as connection:
            return connection.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Shell:
    shell = Shell(tmp_path_factory.mktemp("commands"))
    shell("migrate", "--noinput", "-v0")
    return shell


@pytest.fixture(scope="module")
def demo(shell: Shell) -> dict[str, str]:
    """`demo`: the example flows and a document-review execution waiting for its review."""
    out = shell("demo", "--org", "demo", "--admin", env={"DEBUG": "true"}).stdout
    assert re.search(r"user: admin   password: \S+", out)
    assert "export KEY=fp_" in out
    assert "'review' waits for a person" in out
    execution = re.search(rf"Flow execution ({UUID}) is in_progress", out)
    review = re.search(rf"/task-executions/({UUID})", out)
    assert execution, out
    assert review, out
    return {"flow_execution": execution[1], "review": review[1]}


def test_create_org_and_create_api_key(shell: Shell) -> None:
    out = shell("create_org", "acme", "--name", "Acme").stdout
    assert "acme" in out
    key = shell("create_api_key", "--org", "acme", "--name", "ci").stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"fp_\S+", key), key
    shell("create_api_key", "--org", "nobody", status=1)


def test_load_flow_creates_then_reports_unchanged(shell: Shell, tmp_path: Path) -> None:
    path = ROOT / "examples" / "word-stats.yaml"
    shell("create_org", "loader")
    first = shell("load_flow", str(path), "--org", "loader").stdout
    assert re.search(UUID, first), first
    assert "version 1" in first, first
    again = shell("load_flow", str(path), "--org", "loader").stdout
    assert "unchanged" in again
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "tasks:\n"
        "  - {name: a, type: transform, depends_on: [b]}\n"
        "  - {name: b, type: transform, depends_on: [a]}\n"
        "  - {name: c}\n"
    )
    refused = shell("load_flow", str(broken), "--org", "loader", status=1).stderr
    assert "the tasks form a cycle: a → b → a" in refused  # with the other problem
    assert "task 'c': 'type' is required" in refused


def test_check_freshness_checks_every_settled_execution(shell: Shell, demo: dict) -> None:
    out = shell("check_freshness").stdout
    assert re.search(r"checked \d+ settled flow execution\(s\), skipped \d+ not settled", out)
    assert out.rstrip().endswith("0 violation(s)")
    shell("check_freshness", demo["flow_execution"])
    shell("check_freshness", "not-a-uuid", status=1)


def test_correct_task_previews_then_applies_the_correction(shell: Shell, demo: dict) -> None:
    args = ["correct_task", demo["review"], "--output", '{"approved": true}', "--reason", "ok"]
    preview = json.loads(shell(*args, "--dry-run").stdout)
    assert preview["dry_run"] is True
    assert preview["started_tasks"] == ["publish"]
    publish = preview["predictions"]["publish"]  # a transform: its result is known before
    assert (publish["action"], publish["output"]["approved"]) == ("run", True)
    assert shell.rows("SELECT count(*) FROM executions_correction") == [(0,)]
    applied = json.loads(shell(*args, "--preview-token", preview["preview_token"]).stdout)
    assert applied["started_tasks"] == ["publish"]
    assert re.fullmatch(UUID, applied["correction_id"])
    for bad in (["--output", "not json"], ["--output", "1", "--actor", "bad actor!"]):
        refused = shell("correct_task", demo["review"], *bad, status=1)
        assert refused.stderr.count("\n") == 1, refused.stderr  # one line, no traceback
        assert refused.stderr.startswith("CommandError: --")


def test_reexecute_flow_dry_run_then_for_real(shell: Shell, demo: dict) -> None:
    fe = demo["flow_execution"]
    dry = shell("reexecute_flow", fe, "--task", "publish", "--dry-run").stdout
    assert f"Dry run, nothing written: flow execution {fe}" in dry
    assert "Would start: publish (idx" in dry
    out = shell("reexecute_flow", fe, "--task", "publish").stdout
    assert "Started: publish (idx" in out
    assert "Status: completed" in out
    shell("reexecute_flow", fe, "--task", "missing", status=1)


def test_reexecute_stale_lists_in_a_dry_run_then_reexecutes(shell: Shell, demo: dict) -> None:
    [(extract,)] = shell.rows(
        "SELECT id FROM executions_taskexecution WHERE flow_execution_id = ? AND task_name = ?"
        " ORDER BY task_execution_idx DESC LIMIT 1",
        demo["flow_execution"].replace("-", ""),
        "extract",
    )
    extract = str(uuid.UUID(extract))
    corrected = json.loads(shell("correct_task", extract, "--output", '{"pages": 9}').stdout)
    assert corrected["stale_tasks"] == ["review", "publish"]
    args = ["reexecute_stale", "--org", "demo", "--no-progress"]
    dry = shell(*args, "--dry-run").stdout
    assert f"{demo['flow_execution']} (demo/" in dry, dry
    assert "1 stale flow execution(s) would be re-executed (dry run, nothing written)" in dry
    assert shell(*args).stdout.rstrip().endswith("1 stale flow execution(s) re-executed")
    shell("reexecute_stale", "--older-than", "soon", status=2)  # a usage error, as argparse says


def test_purge_idempotency_keys(shell: Shell) -> None:
    assert re.search(r"\d+", shell("purge_idempotency_keys").stdout)


def test_reap_expired_dry_run_then_for_real(shell: Shell) -> None:
    assert "0 attempt(s) would be reaped (dry run)" in shell("reap_expired", "--dry-run").stdout
    assert "0 attempt(s) reaped" in shell("reap_expired").stdout


def test_db_worker_runs_the_queued_attempts_and_exits_in_batch_mode(
    shell: Shell, demo: dict
) -> None:
    database = {"TASKS_BACKEND": "database"}
    shell("reexecute_flow", demo["flow_execution"], "--task", "publish", env=database)
    assert shell.rows("SELECT count(*) FROM executions_taskexecution WHERE status = 'queued'")
    shell(
        "db_worker",
        "--batch",
        "--no-startup-delay",
        "--no-reload",
        "--reap-interval",
        "0",
        env=database,
    )
    assert shell.rows(
        "SELECT count(*) FROM executions_taskexecution WHERE status IN ('queued', 'running')"
        " AND task_name = 'publish'"
    ) == [(0,)]


def test_webhook_endpoints_lists_and_refuses_a_host_not_allowed(shell: Shell, demo: dict) -> None:
    assert shell("webhook_endpoints", "--org", "demo", "list").stdout == ""
    args = ["add", "--url", "https://evil.example/", "--event", "flow_execution.settled"]
    refused = shell("webhook_endpoints", "--org", "demo", *args, status=1).stderr
    assert refused.startswith("CommandError: --url: host of 'https://evil.example/' is not allowed")
    assert refused.count("\n") == 1, refused  # one line, no traceback


def test_every_command_readme_lists_is_run_here() -> None:
    """Keep this module in step with README: a command README lists must be run above."""
    listed = readme_commands()
    assert {"check_freshness", "correct_task", "db_worker", "demo"} <= listed
    ran = set(re.findall(r'shell\(\s*"([a-z_]+)"', Path(__file__).read_text()))
    assert listed <= ran, f"run as a subprocess nowhere: {sorted(listed - ran)}"


def test_bad_settings_and_arguments_are_one_line_not_a_traceback(shell: Shell) -> None:
    for args, env, starts in [
        (["check"], {"DEBUG": "maybe"}, "error: DEBUG='maybe' is not a boolean"),
        (["demo", "--org", "Bad Org"], {}, "CommandError: --org: use lowercase letters"),
        (["demo", "--base-url", "notaurl"], {}, "CommandError: --base-url must be"),
        (["db_worker"], {}, "CommandError: db_worker runs the jobs of TASKS_BACKEND=database"),
        (["create_org", "Bad Slug!"], {}, "CommandError: SLUG: use lowercase letters"),
        (
            ["create_api_key", "--org", "acme", "--scope", "admin"],
            {},
            "CommandError: --scope: must be one or more of read, write",
        ),
        (["reexecute_stale", "--actor", "bad actor!"], {}, "CommandError: --actor: must be"),
    ]:
        refused = shell(*args, status=1, env=env)
        assert refused.stderr.startswith(starts), refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr


def test_a_bad_preview_token_is_refused_and_an_outdated_one_says_the_fresh_one(
    shell: Shell, demo: dict
) -> None:
    [(review,)] = shell.rows(
        "SELECT id FROM executions_taskexecution WHERE flow_execution_id = ? AND task_name = ?"
        " ORDER BY task_execution_idx DESC LIMIT 1",
        demo["flow_execution"].replace("-", ""),
        "review",
    )
    args = ["correct_task", str(uuid.UUID(review)), "--output", '{"approved": false}']
    bad = shell(*args, "--preview-token", "abc", status=1).stderr
    assert bad.startswith("CommandError: --preview-token must be the 64-character preview_token")
    outdated = shell(*args, "--preview-token", "0" * 64, status=1).stderr
    token = re.search(r"pass --preview-token ([0-9a-f]{64})", outdated)
    assert token, outdated
    applied = json.loads(shell(*args, "--preview-token", token[1]).stdout)
    assert re.fullmatch(UUID, applied["correction_id"])


def test_upgrade_executions_previews_upgrades_once_and_resumes(tmp_path: Path) -> None:
    shell = Shell(tmp_path)
    shell("migrate", "--noinput", "-v0")
    out = shell("demo", "--org", "up", env={"DEBUG": "true"}).stdout
    review = re.search(rf"/task-executions/({UUID})", out)[1]
    fe = re.search(rf"Flow execution ({UUID}) is in_progress", out)[1]
    changed = tmp_path / "document-review.yaml"
    text = (ROOT / "examples" / "document-review.yaml").read_text()
    changed.write_text(
        text.replace("    type: transform\n", "    type: transform\n    version: '2'\n")
    )
    assert "version 2" in shell("load_flow", str(changed), "--org", "up").stdout
    args = ["upgrade_executions", "--flow", "document-review", "--org", "up", "--no-progress"]
    waiting = shell(*args, "--dry-run").stdout
    assert f"{fe}: skipped (live)" in waiting, waiting  # a person is awaited
    shell("correct_task", review, "--output", '{"approved": true}')
    assert f"{fe}: would mark 1 task(s) stale, run 0" in shell(*args, "--dry-run").stdout
    dry = shell(*args, "--dry-run", "--execute-flow").stdout
    assert f"{fe}: would mark 1 task(s) stale, run 1" in dry, dry
    assert "1 would be upgraded (dry run, nothing written), 0 skipped, 0 failed" in dry
    assert shell.rows("SELECT count(*) FROM executions_correction WHERE operation = 'upgrade'") == [
        (0,)
    ]
    done = shell(*args, "--execute-flow", "--reason", "publish v2").stdout
    assert "1 upgraded, 0 skipped, 0 failed (to version 2)" in done, done
    job = re.search(rf"upgrade job ({UUID})", done)[1]
    assert shell.rows(
        "SELECT count(*), max(reason), max(source) FROM executions_correction"
        " WHERE operation = 'upgrade'"
    ) == [(1, "publish v2", "command")]
    again = shell("upgrade_executions", "--resume", job, "--no-progress").stdout
    assert "1 upgraded, 0 skipped, 0 failed" in again
    assert shell.rows("SELECT count(*) FROM executions_correction WHERE operation = 'upgrade'") == [
        (1,)
    ]
    for bad in (
        ["--flow", "nope", "--org", "up"],
        ["--flow", "nope"],
        ["--resume", "x"],
        ["--resume", job, "--dry-run"],
        ["--flow", "document-review", "--org", "up", "--actor", "bad actor!"],
        ["--flow", "document-review", "--org", "up", "--created-after", "2026-12-02T00:00Z",
         "--created-before", "2026-12-01T00:00Z"],
    ):  # fmt: skip
        refused = shell("upgrade_executions", *bad, status=1).stderr
        assert refused.startswith("CommandError: "), refused
    refused = shell(*args, "--to-version", "9", status=1).stderr
    assert refused.startswith("CommandError: --to-version: the flow has no version 9"), refused
