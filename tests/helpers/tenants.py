"""Organizations for the tests: a tenant with a service key and an authenticated client, the
flow definition most tests start from, and random ids (the fixtures are in conftest.py)."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework.test import APIClient

from executions.models import FlowExecution, TaskExecution
from executions.services import create_flow_execution
from flowplatform.tenancy.models import ApiKey, Organization
from flowplatform.tenancy.services import create_api_key, create_organization
from flows.models import Flow
from flows.services import create_flow
from outputs.models import TaskOutput

DEFINITION = """\
name: document-review
tasks:
  - name: extract
    type: transform
  - name: review
    type: human
    depends_on: [extract]
"""


class Tenant:
    """One organization with a service key and a client authenticated with it."""

    def __init__(self, slug: str) -> None:
        self.org: Organization = create_organization(slug)
        issued = create_api_key(self.org, name=f"{slug}-key")
        self.key: ApiKey = issued.api_key
        self.secret: str = issued.secret
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")

    @property
    def actor(self) -> str:
        return self.key.default_actor

    def flow(self, name: str = "document-review", definition: str = DEFINITION) -> Flow:
        return create_flow(self.org, name=name, definition=definition, actor="system")

    def flow_execution(self, flow: Flow | None = None, **kwargs: Any) -> FlowExecution:
        flow = flow or Flow.objects.filter(organization=self.org).first() or self.flow()
        return create_flow_execution(self.org, flow, **kwargs)

    def task_execution(
        self, flow_execution: FlowExecution | None = None, **fields: Any
    ) -> TaskExecution:
        flow_execution = flow_execution or self.flow_execution()
        fields.setdefault("task_name", "extract")
        fields.setdefault("status", TaskExecution.Status.COMPLETED)  # what people correct
        return TaskExecution.objects.create(
            organization=self.org, flow_execution=flow_execution, **fields
        )

    def task_output(self, flow_execution: FlowExecution | None = None, **fields: Any) -> TaskOutput:
        flow_execution = flow_execution or self.flow_execution()
        fields.setdefault("task_name", "extract")
        fields.setdefault("summary", {"pages": 1})
        fields.setdefault("flow_version", flow_execution.flow_version.version)
        return TaskOutput.objects.create(
            organization=self.org, flow_execution=flow_execution, **fields
        )


def random_uuid() -> str:
    return str(uuid.uuid4())
