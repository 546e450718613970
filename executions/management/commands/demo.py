from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from executions.services import create_flow_execution
from flowplatform.tenancy.models import Organization
from flowplatform.tenancy.services import create_api_key, create_organization
from flows.models import Flow
from flows.services import create_flow, update_flow

EXAMPLE = Path(settings.BASE_DIR) / "examples" / "document-review.yaml"


class Command(BaseCommand):
    help = (
        "Prepare the demo organization: the example flow (created, or a new version if the file "
        "changed), a flow execution of it, and a fresh API key. Prints the key and curl examples."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default="demo", help="Organization slug (default: demo).")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="For the examples.")

    @transaction.atomic
    def handle(self, *args: object, org: str, base_url: str, **options: object) -> None:
        organization = Organization.objects.filter(slug=org).first() or create_organization(org)
        definition = EXAMPLE.read_text()
        flow = Flow.objects.filter(
            organization=organization, name="document-review", deleted_at__isnull=True
        ).first()
        if flow is None:
            flow = create_flow(
                organization,
                name="document-review",
                description="Extract, review by a person, publish.",
                definition=definition,
                actor="system",
            )
        else:
            flow = update_flow(flow, definition=definition, actor="system")
        execution = create_flow_execution(
            organization, flow, input={"document": "s3://demo/contract.pdf"}
        )
        key = create_api_key(organization, name="demo").secret
        self.stdout.write(
            f"""
API key for '{organization.slug}' (shown once, only its hash is stored):
  export KEY={key}

Demo organization '{organization.slug}': flow '{flow.name}' v{flow.current_version.version},
flow execution {execution.id} ({execution.status}).

Try it:
  curl -s -H "Authorization: Bearer $KEY" {base_url}/flows
  curl -s -H "Authorization: Bearer $KEY" {base_url}/flow-executions/{execution.id}
  curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
       -d '{{"flow_execution_id": "{execution.id}", "organization_id": "{organization.id}",
            "task_name": "extract", "status": "completed", "summary": {{"pages": 10}}}}' \\
       {base_url}/task-outputs
  API docs: {base_url}/api/docs/
"""
        )
