"""Shared fixtures: organizations, API keys, authenticated clients, and small row factories."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgresql` are skipped when the suite runs on SQLite."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (run with DATABASE_URL=postgres://…)")
    for item in items:
        if "postgresql" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture
def tenant(db: None) -> Tenant:
    return Tenant("acme")


@pytest.fixture
def other_tenant(db: None) -> Tenant:
    return Tenant("globex")


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def make_tenant(db: None) -> Callable[[str], Tenant]:
    return Tenant


@pytest.fixture
def is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def random_uuid() -> str:
    return str(uuid.uuid4())
