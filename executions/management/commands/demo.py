import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from executions.models import TaskExecution
from executions.services import start_flow_execution
from flowplatform import rls
from flowplatform.commands import command_error
from flowplatform.exceptions import DomainError
from flowplatform.tenancy.models import Organization
from flowplatform.tenancy.services import create_api_key, create_organization
from flows.models import Flow
from flows.services import create_flow, update_flow

EXAMPLES = Path(settings.BASE_DIR) / "examples"
DOCUMENT = (
    "Quarterly report. Revenue grew in every region while costs stayed flat, and the board "
    "asks for a review of the numbers before they are published to the shareholders."
)


class Command(BaseCommand):
    help = (
        "Prepare the demo organization: the example flows from examples/ (created, or a new "
        "version when a file changed), a document-review execution waiting for a person's "
        "review, and a fresh API key. Prints the key and curl examples."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default="demo", help="Organization slug (default: demo).")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="For the examples.")
        parser.add_argument(
            "--admin",
            action="store_true",
            help="also (re)create the local admin superuser 'admin' with a new password, shown "
            "once (only with DEBUG on: the embedded demo, never production)",
        )

    def handle(
        self, *args: object, org: str, base_url: str, admin: bool, **options: object
    ) -> None:
        if admin and not settings.DEBUG:
            raise CommandError(
                "--admin creates a local admin user for the embedded demo and needs DEBUG on; "
                "in production create one with: manage.py createsuperuser"
            )
        try:
            organization = Organization.objects.filter(slug=org).first() or create_organization(org)
        except DomainError as exc:
            raise command_error(exc, {"slug": "--org"}) from None
        if not base_url.startswith(("http://", "https://")):
            raise CommandError(f"--base-url must be an http:// or https:// URL, not {base_url!r}")
        with rls.tenant_scope(organization):
            flows = {
                path.stem: self.load(organization, path) for path in sorted(EXAMPLES.glob("*.yaml"))
            }
            execution = start_flow_execution(
                organization,
                flow_id=flows["document-review"].id,
                input={"document": DOCUMENT},
                actor="system",
            )
        # Its jobs ran when that transaction committed.
        with rls.tenant_scope(organization):
            review = TaskExecution.objects.get(flow_execution=execution, task_name="review")
            execution.refresh_from_db(fields=["status"])
            key = create_api_key(organization, name="demo").secret
        auth = f'-H "Authorization: Bearer {key}"'
        self.stdout.write(
            f"""
Demo organization '{organization.slug}': flows {", ".join(sorted(flows))}.
Flow execution {execution.id} is {execution.status}: 'extract' ran, 'review' waits for a person.

API key (shown once, only its hash is stored):
  export KEY={key}

See the flow execution and its attempts:
  curl -s {auth} {base_url}/flow-executions/{execution.id}
  curl -s {auth} "{base_url}/task-executions?flow_execution_id={execution.id}"

Approve the review (the 'publish' task then runs):
  curl -s {auth} -X PATCH -H 'Content-Type: application/json' \\
       -d '{{"status": "completed", "output": {{"approved": true}}}}' \\
       {base_url}/task-executions/{review.id}

Start another run:
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{{"flow_id": "{flows["word-stats"].id}", "input": {{"text": "to be or not to be"}}}}' \\
       {base_url}/flow-executions

API docs: {base_url}/api/docs/
"""
        )
        if admin:
            password = self.admin_user()
            self.stdout.write(
                f"""Admin (shown once; each run sets a new password):
  {base_url}/admin/   user: admin   password: {password}
"""
            )

    def admin_user(self) -> str:
        """The local superuser 'admin', with a new random password."""
        password = secrets.token_urlsafe(12)
        user = get_user_model().objects.filter(username="admin").first()
        if user is None:
            get_user_model().objects.create_superuser("admin", password=password)
        else:
            user.is_active = user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save()
        return password

    def load(self, organization: Organization, path: Path) -> Flow:
        definition = path.read_text()
        flow = Flow.objects.filter(
            organization=organization, name=path.stem, deleted_at__isnull=True
        ).first()
        if flow is None:
            return create_flow(organization, name=path.stem, definition=definition, actor="system")
        return update_flow(flow, definition=definition, actor="system")
