import json
import re
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from executions.corrections import preview, task_executions
from executions.models import Correction, TaskExecution
from flowplatform import rls
from flowplatform.api.serializers import REASON_MAX_LENGTH
from flowplatform.commands import command_error
from flowplatform.exceptions import DomainError, InvalidInput
from flowplatform.tenancy.services import valid_actor


def json_option(options: dict[str, Any], name: str) -> Any:
    """The value of --NAME, parsed as JSON. Parsed here rather than by argparse: an error
    raised while argparse reads the command line is shown with a traceback."""
    text = options[name]
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--{name} is not valid JSON: {exc}") from None


PREVIEW_TOKEN = re.compile(r"[0-9a-f]{64}")


class Command(BaseCommand):
    help = (
        "Correct a task execution from a script: the same correction path as "
        "PUT /task-executions/{id} (transition rules, stale marking, optional re-execution), "
        "recorded as a Correction with source 'command'. Prints what it did as JSON; exits 1 "
        "on any error, changing nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_execution_id", metavar="TASK_EXECUTION_ID")
        parser.add_argument("--output", help="the corrected output, as JSON")
        parser.add_argument(
            "--status",
            choices=TaskExecution.Status.values,
            help="the new status (default: completed when --output is given)",
        )
        parser.add_argument("--error", help="the error, as JSON")
        parser.add_argument(
            "--summary",
            help="the corrected output's summary, as a JSON object (default: derived from it)",
        )
        parser.add_argument(
            "--execute-flow", action="store_true", help="re-run the tasks this makes stale"
        )
        parser.add_argument("--reason", default="", help="why (recorded on the correction)")
        parser.add_argument(
            "--actor", default="system", help="recorded as modified_by (default: system)"
        )
        parser.add_argument("--dry-run", action="store_true", help="show what would happen")
        parser.add_argument(
            "--preview-token", help="apply only if nothing changed since the dry run that gave it"
        )

    def handle(self, *args: object, **options: Any) -> None:
        try:
            valid_actor(options["actor"], "actor")
        except InvalidInput as exc:
            raise command_error(exc) from None
        try:
            pk = uuid.UUID(options["task_execution_id"])
        except ValueError:
            raise CommandError(
                f"not a task execution id: {options['task_execution_id']!r}"
            ) from None
        organization_id = rls.organization_of(TaskExecution, pk, actor="manage.py correct_task")
        if organization_id is None:
            raise CommandError(f"no such task execution: {pk}")
        with rls.tenant_scope(organization_id):
            result = self.correct(pk, options)
        self.stdout.write(
            json.dumps(
                {
                    "task_execution_id": str(result.task_execution.pk),
                    "status": result.task_execution.status,
                    "stale_tasks": result.stale_tasks,
                    "predictions": result.predictions,  # a dry run's (engine.predicting)
                    "started_tasks": [attempt.task_name for attempt in result.started],
                    "dry_run": result.dry_run,
                    "preview_token": result.preview_token if result.dry_run else None,
                    "correction_id": str(result.correction.pk) if result.correction else None,
                },
                indent=2,
            )
        )

    def correct(self, pk: uuid.UUID, options: dict[str, Any]) -> Any:
        """The correction, in the task execution's organization's scope."""
        task_execution = TaskExecution.objects.select_related("organization").get(pk=pk)
        changes = {
            name: json_option(options, name)
            for name in ("output", "error")
            if options[name] is not None
        }
        status = options["status"] or ("completed" if "output" in changes else None)
        if status is not None:
            changes["status"] = status
        if not changes:
            raise CommandError("nothing to change: give --output, --status or --error")
        if len(options["reason"]) > REASON_MAX_LENGTH:
            raise CommandError(f"--reason is longer than {REASON_MAX_LENGTH} characters")
        summary = json_option(options, "summary")
        if summary is not None and not isinstance(summary, dict):
            raise CommandError("--summary must be a JSON object")
        token = options["preview_token"]
        if token is not None and not PREVIEW_TOKEN.fullmatch(token):
            raise CommandError(
                "--preview-token must be the 64-character preview_token of a dry run"
            )
        kwargs = {
            "changes": changes,
            "identity": {},
            "expected_updated_at": None,
            "actor": options["actor"],
            "execute_flow": options["execute_flow"],
            "reason": options["reason"].strip(),
            "source": Correction.Source.COMMAND,
            "summary": summary,
        }
        correct = (
            task_executions.preview_correction
            if options["dry_run"]
            else task_executions.correct_task_execution
        )
        try:
            return correct(task_execution, preview_token=token, **kwargs)
        except preview.PreviewOutdated as exc:
            fresh = task_executions.preview_correction(task_execution, **kwargs)
            raise CommandError(
                f"{exc.what}. A dry run now would make stale: "
                f"{', '.join(fresh.stale_tasks) or 'nothing'}; to apply that, pass "
                f"--preview-token {fresh.preview_token}"
            ) from None
        except InvalidInput as exc:
            raise CommandError(
                "; ".join(f"{'.'.join(map(str, loc[1:]))}: {msg}" for loc, msg, _ in exc.errors)
            ) from None
        except DomainError as exc:
            raise CommandError(exc.message) from None
