import uuid

from django.core.management.base import BaseCommand, CommandError, CommandParser

from executions.models import FlowExecution
from executions.selectors import freshness_violations, is_settled
from flowplatform import rls


class Command(BaseCommand):
    help = (
        "Check the freshness invariant: in a settled flow execution, every current completed "
        "attempt's input equals what its expressions resolve to from the current outputs of its "
        "upstream tasks, and every task an upgrade changed or added holds a result computed "
        "after that upgrade (following reused_from). Lists violations; exits 1 if there are "
        "any. Without ids, checks every flow execution that is not deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("flow_execution_ids", nargs="*", metavar="FLOW_EXECUTION_ID")

    def handle(self, *args: object, flow_execution_ids: list[str], **options: object) -> None:
        # A read-only check across organizations: maintenance, through the audited bypass.
        with rls.bypass("manage.py check_freshness", "checking the freshness invariant"):
            self.check_flow_executions(flow_execution_ids)

    def check_flow_executions(self, flow_execution_ids: list[str]) -> None:
        executions = FlowExecution.objects.exclude(status=FlowExecution.Status.DELETED)
        if flow_execution_ids:
            try:
                ids = [uuid.UUID(value) for value in flow_execution_ids]
            except ValueError as exc:
                raise CommandError(f"not a flow execution id: {exc}") from None
            executions = FlowExecution.objects.filter(pk__in=ids)
            missing = set(ids) - set(executions.values_list("pk", flat=True))
            if missing:
                raise CommandError(
                    f"no such flow execution: {', '.join(map(str, sorted(missing)))}"
                )
        checked = unsettled = 0
        violations = []
        for flow_execution in executions.select_related("flow_version").iterator():
            if not is_settled(flow_execution):
                unsettled += 1
                continue
            checked += 1
            violations += [(flow_execution.pk, v) for v in freshness_violations(flow_execution)]
        for flow_execution_id, violation in violations:
            self.stdout.write(f"{flow_execution_id}: {violation}")
        self.stdout.write(
            f"checked {checked} settled flow execution(s), skipped {unsettled} not settled "
            "(an attempt queued or running, or a task waiting for a person): "
            f"{len(violations)} violation(s)"
        )
        if violations:
            raise CommandError(f"{len(violations)} freshness violation(s)")
