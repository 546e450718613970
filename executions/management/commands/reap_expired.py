from django.core.management.base import BaseCommand, CommandParser

from executions.engine import reaper


class Command(BaseCommand):
    help = (
        "Fail every running task attempt whose worker was lost (its lease expired without being "
        "renewed) and queue its next attempt if the task has retries left. Every db_worker does "
        "this periodically; run it by hand or from cron when no worker runs. --dry-run lists "
        "the expired attempts and changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be reaped; change nothing"
        )

    def handle(self, *args: object, dry_run: bool, **options: object) -> None:
        if dry_run:
            expired = reaper.expired_leases()
            for organization_id, flow_execution_id, attempt_id in expired:
                self.stdout.write(
                    f"expired: attempt {attempt_id} of flow execution {flow_execution_id} "
                    f"(organization {organization_id})"
                )
            self.stdout.write(f"{len(expired)} attempt(s) would be reaped (dry run)")
            return
        reaped = reaper.reap_expired()
        for r in reaped:
            outcome = f"retrying as attempt {r.retry_id}" if r.retry_id else "no retry left"
            self.stdout.write(
                f"reaped: {r.task_name}#{r.idx} (attempt {r.attempt_id}) of flow execution "
                f"{r.flow_execution_id}, worker {r.lease_owner or 'unknown'} lost; {outcome}"
            )
        self.stdout.write(self.style.SUCCESS(f"{len(reaped)} attempt(s) reaped"))
