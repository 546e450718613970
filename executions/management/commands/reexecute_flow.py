import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from executions.management.commands._reexecution import check_actor, describe, reexecute
from executions.models import FlowExecution
from flowplatform import rls
from flowplatform.exceptions import DomainError, InvalidInput


class Command(BaseCommand):
    help = (
        "Re-execute a flow execution, as POST /flow-executions/{id}/execute does: the whole "
        "flow (every task gets a new attempt, idx + 1), only its stale tasks (--stale-only), or "
        "one task and every task downstream of it (--task). Earlier attempts are kept. Prints "
        "the attempts started and the resulting status; exits 1 on any error, changing nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "flow_execution_id", metavar="FLOW_EXECUTION_ID", help="the flow execution's id (UUID)"
        )
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument(
            "--stale-only", action="store_true", help="run only the stale tasks again"
        )
        scope.add_argument(
            "--task", metavar="NAME", help="run this task and every task downstream of it again"
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="show what would start; nothing is written and no job runs",
        )
        parser.add_argument(
            "--actor",
            default="system",
            help="recorded as modified_by (default: system)",
        )

    def handle(self, *args: object, **options: Any) -> None:
        check_actor(options["actor"])
        try:
            pk = uuid.UUID(options["flow_execution_id"])
        except ValueError:
            raise CommandError(
                f"not a flow execution id: {options['flow_execution_id']!r}"
            ) from None
        organization_id = rls.organization_of(FlowExecution, pk, actor="manage.py reexecute_flow")
        if organization_id is None:
            raise CommandError(f"no such flow execution: {pk}")
        try:
            result = reexecute(
                pk,
                organization_id,
                actor=options["actor"],
                only_stale=options["stale_only"],
                task=options["task"],
                dry_run=options["dry_run"],
            )
        except InvalidInput as exc:
            raise CommandError("; ".join(msg for _, msg, _ in exc.errors)) from None
        except DomainError as exc:
            raise CommandError(exc.message) from None
        if options["task"]:
            scope = f"task '{options['task']}' and its dependents"
        elif options["stale_only"]:
            scope = "its stale tasks"
        else:
            scope = "the whole flow"
        if result.dry_run:
            self.stdout.write(f"Dry run, nothing written: flow execution {pk}, {scope}.")
            self.stdout.write(f"Would start: {describe(result)}")
            self.stdout.write(f"Status would be: {result.flow_execution.status}")
        else:
            self.stdout.write(f"Re-executed flow execution {pk}, {scope}.")
            self.stdout.write(f"Started: {describe(result)}")
            self.stdout.write(f"Status: {result.flow_execution.status}")
