import argparse
import uuid
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime
from tqdm import tqdm

from executions.corrections import upgrade_jobs
from executions.management.commands._reexecution import check_actor
from executions.models import Correction, FlowExecution, UpgradeJob, UpgradeJobItem
from flowplatform import rls
from flowplatform.commands import command_error
from flowplatform.exceptions import DomainError, NotFound
from flowplatform.tenancy.services import get_organization
from flows.models import Flow

ARGUMENTS_OF_A_NEW_JOB = (
    "flow",
    "org",
    "from_version",
    "to_version",
    "status",
    "created_after",
    "created_before",
    "execute_flow",
    "dry_run",
    "reason",
)
ARGUMENTS = {"to_version": "--to-version", "filters": "--from-version/--status/--created-*"}


def timestamp(text: str) -> datetime:
    value = parse_datetime(text)
    if value is None or value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time with a zone: {text!r} (e.g. 2026-12-01T00:00:00Z)"
        )
    return value


class Command(BaseCommand):
    help = (
        "Upgrade a flow's executions to one of its versions, as POST "
        "/flows/{id}/upgrade-executions does: the same upgrade job (GET /upgrade-jobs/{id}), "
        "run here in batches with a progress bar instead of by a worker. Each execution is "
        "upgraded at most once; an interrupted run continues with --resume JOB_ID. Exits 1 if "
        "any execution failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--flow", metavar="NAME_OR_ID", help="the flow (its name needs --org)")
        parser.add_argument("--org", metavar="SLUG", help="the flow's organization")
        parser.add_argument("--from-version", type=int, metavar="N", help="only executions on N")
        parser.add_argument(
            "--to-version", type=int, metavar="N", help="the version to move to (default: latest)"
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=[s for s in FlowExecution.Status.values if s != "deleted"],
            help="only executions in this status (repeat for several)",
        )
        parser.add_argument("--created-after", type=timestamp, metavar="TIME")
        parser.add_argument("--created-before", type=timestamp, metavar="TIME")
        parser.add_argument(
            "--execute-flow",
            action="store_true",
            help="re-run each upgraded execution's stale tasks (else they are only marked stale)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="upgrade nothing: per execution, how many tasks would go stale and run",
        )
        parser.add_argument("--reason", default="", help="recorded on every correction")
        parser.add_argument("--actor", default="system", help="recorded as modified_by")
        parser.add_argument("--resume", metavar="JOB_ID", help="continue an interrupted job")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args: object, **options: Any) -> None:
        check_actor(options["actor"])
        if options["resume"]:
            given = [
                f"--{name.replace('_', '-')}"
                for name in ARGUMENTS_OF_A_NEW_JOB
                if options[name] not in (None, False, "", [])
            ]
            if given:
                raise CommandError(f"--resume continues a job as it was made: not with {given[0]}")
        after, before = options["created_after"], options["created_before"]
        if after and before and after >= before:
            raise CommandError("--created-before: must be later than --created-after")
        job = self.resumed(options["resume"]) if options["resume"] else self.created(options)
        self.stdout.write(f"upgrade job {job.pk}: {job.matched} execution(s) matched")
        with tqdm(
            total=job.matched,
            desc="executions",
            unit="fe",
            file=self.stderr._out,  # the real stream: Django's wrapper would add newlines
            disable=options["no_progress"] or not self.stderr.isatty(),
        ) as bar:
            done = {"n": job.matched - self.pending(job)}
            bar.update(done["n"])

            def progress(current: UpgradeJob) -> None:
                handled = current.upgraded + current.skipped + current.failed
                bar.update(handled - done["n"])
                done["n"] = handled

            job = upgrade_jobs.process(job.pk, job.organization_id, progress=progress)
        self.report(job)

    def created(self, options: dict[str, Any]) -> UpgradeJob:
        if not options["flow"]:
            raise CommandError("--flow is required (or --resume JOB_ID)")
        with rls.bypass("manage.py upgrade_executions", "finding the flow to upgrade"):
            flow = self.flow(options["flow"], options["org"])
        with rls.tenant_scope(flow.organization_id):
            try:
                return upgrade_jobs.create_job(
                    flow,
                    actor=options["actor"],
                    to_version=options["to_version"],
                    from_version=options["from_version"],
                    statuses=options["status"],
                    created_after=options["created_after"],
                    created_before=options["created_before"],
                    execute_flow=options["execute_flow"],
                    dry_run=options["dry_run"],
                    reason=options["reason"],
                    source=Correction.Source.COMMAND,
                    enqueue=False,
                )
            except DomainError as exc:
                raise command_error(exc, ARGUMENTS) from None

    def flow(self, name_or_id: str, org: str | None) -> Flow:
        flows = Flow.objects.filter(deleted_at__isnull=True)
        try:
            by_id = flows.filter(pk=uuid.UUID(name_or_id)).first()
        except ValueError:
            by_id = None
        if by_id is not None:
            return by_id
        if org is None:
            raise CommandError(
                f"--flow: no flow with id or name {name_or_id!r} (a name needs --org)"
            )
        try:
            organization = get_organization(org)
        except NotFound as exc:
            raise CommandError(exc.message) from None
        found = flows.filter(organization=organization, name=name_or_id).first()
        if found is None:
            raise CommandError(f"no flow named {name_or_id!r} in organization {org!r}")
        return found

    def resumed(self, job_id: str) -> UpgradeJob:
        with rls.bypass("manage.py upgrade_executions", "finding the job to resume"):
            try:
                job = UpgradeJob.objects.filter(pk=uuid.UUID(job_id)).first()
            except ValueError:
                job = None
        if job is None:
            raise CommandError(f"--resume: no upgrade job {job_id!r}")
        return job

    def pending(self, job: UpgradeJob) -> int:
        return max(job.matched - job.upgraded - job.skipped - job.failed, 0)

    def report(self, job: UpgradeJob) -> None:
        with rls.tenant_scope(job.organization_id):
            items = list(
                job.items.exclude(outcome=UpgradeJobItem.Outcome.UPGRADED)
                .order_by("position")
                .values_list("flow_execution_id", "outcome", "code", "message")
            )
            if job.dry_run:
                previews = job.items.filter(outcome=UpgradeJobItem.Outcome.UPGRADED).order_by(
                    "position"
                )
                for fe, stale, run in previews.values_list(
                    "flow_execution_id", "stale_tasks", "tasks_to_run"
                ):
                    self.stdout.write(f"{fe}: would mark {stale} task(s) stale, run {run}")
        for fe, outcome, code, message in items:
            (self.stderr if outcome == "failed" else self.stdout).write(
                f"{fe}: {outcome} ({code}): {message}"
            )
        verb = "would be upgraded (dry run, nothing written)" if job.dry_run else "upgraded"
        self.stdout.write(
            f"{job.upgraded} {verb}, {job.skipped} skipped, {job.failed} failed "
            f"(to version {job.to_version.version})"
        )
        if job.failed:
            raise CommandError(f"{job.failed} of {job.matched} execution(s) failed")
