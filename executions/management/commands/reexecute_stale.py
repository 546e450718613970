import argparse
import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from executions.management.commands._reexecution import (
    Reexecution,
    check_actor,
    describe,
    reexecute,
)
from executions.models import FlowExecution
from flowplatform import rls
from flowplatform.exceptions import DomainError, InvalidInput, NotFound
from flowplatform.tenancy.services import get_organization
from flows.models import Flow

DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `7d`, or combined largest unit first: `1h30m`, `2d12h`."""
    match = DURATION.fullmatch(text)
    if not text or match is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 7d or 1h30m)"
        )
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def failure(exc: Exception) -> str:
    if isinstance(exc, InvalidInput):
        return "; ".join(msg for _, msg, _ in exc.errors)
    if isinstance(exc, DomainError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class Command(BaseCommand):
    help = (
        "Re-execute the stale tasks of every stale flow execution matching the filters, as "
        "POST /flow-executions/{id}/execute?only=stale does, one transaction per flow "
        "execution, oldest first. A flow execution that fails is reported and the others go "
        "on; the command then exits 1. Shows a progress bar on stderr when it is a terminal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", metavar="SLUG", help="only this organization's executions")
        parser.add_argument(
            "--flow", metavar="NAME", help="only executions of flows with this name"
        )
        parser.add_argument(
            "--older-than",
            type=duration,
            metavar="DURATION",
            help="only executions last updated longer ago than this: 90s, 30m, 2h, 7d, 1h30m",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="list what would be re-executed and would start; nothing is written",
        )
        parser.add_argument(
            "--actor",
            default="system",
            help="recorded as modified_by (default: system)",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: object, **options: Any) -> None:
        check_actor(options["actor"])
        # Choosing the flow executions may span organizations: maintenance, audited. Each
        # re-execution then runs in its own organization's scope.
        with rls.bypass("manage.py reexecute_stale", "selecting stale flow executions"):
            selected = self.select(options)
        if not selected:
            self.stdout.write("No stale flow executions match.")
            return
        self.reexecute_all(selected, options)

    def select(self, options: dict[str, Any]) -> list[FlowExecution]:
        executions = FlowExecution.objects.filter(status=FlowExecution.Status.STALE)
        flows = Flow.objects.all()
        if options["org"] is not None:
            try:
                organization = get_organization(options["org"])
            except NotFound as exc:
                raise CommandError(exc.message) from None
            executions = executions.filter(organization=organization)
            flows = flows.filter(organization=organization)
        if options["flow"] is not None:
            if not flows.filter(name=options["flow"]).exists():
                where = f" in organization '{options['org']}'" if options["org"] else ""
                raise CommandError(f"no flow named '{options['flow']}'{where}")
            executions = executions.filter(flow__name=options["flow"])
        if options["older_than"] is not None:
            executions = executions.filter(updated_at__lt=timezone.now() - options["older_than"])
        return list(
            executions.select_related("organization", "flow")
            .only("id", "organization__slug", "flow__name")
            .order_by("updated_at", "id")
        )

    def reexecute_all(self, selected: list[FlowExecution], options: dict[str, Any]) -> None:
        dry_run = options["dry_run"]
        done = skipped = failed = 0
        # The bar goes to the real stderr stream: Django's wrapper would end every redraw
        # with a newline.
        with tqdm(
            selected,
            desc="flow executions",
            unit="fe",
            file=self.stderr._out,
            disable=options["no_progress"] or not self.stderr.isatty(),
        ) as bar:
            for flow_execution in bar:
                label = (
                    f"{flow_execution.pk} "
                    f"({flow_execution.organization.slug}/{flow_execution.flow.name})"
                )
                try:
                    result = reexecute(
                        flow_execution.pk,
                        flow_execution.organization_id,
                        actor=options["actor"],
                        only_stale=True,
                        dry_run=dry_run,
                        only_if_stale=True,
                    )
                except Exception as exc:  # one flow execution's failure must not stop the others
                    failed += 1
                    with bar.external_write_mode():
                        self.stderr.write(f"{label}: failed: {failure(exc)}")
                    continue
                if result.skipped:
                    skipped += 1
                else:
                    done += 1
                with bar.external_write_mode():
                    self.stdout.write(f"{label}: {self.outcome(result)}")

        verb = "would be re-executed (dry run, nothing written)" if dry_run else "re-executed"
        summary = f"{done} stale flow execution(s) {verb}"
        if skipped:
            summary += f", {skipped} skipped (no longer stale)"
        self.stdout.write(summary)
        if failed:
            raise CommandError(f"{failed} of {len(selected)} flow execution(s) failed")

    def outcome(self, result: Reexecution) -> str:
        if result.skipped:
            return f"skipped: no longer stale (status {result.flow_execution.status})"
        if result.dry_run:
            return f"would start {describe(result)}"
        return f"started {describe(result)}; status {result.flow_execution.status}"
