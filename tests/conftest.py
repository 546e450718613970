"""Shared fixtures: organizations, API keys, authenticated clients, and small row factories."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, ProgrammingError, connection, connections, transaction
from django.db.backends.signals import connection_created
from rest_framework.test import APIClient

from executions.models import FlowExecution, TaskExecution
from executions.services import create_flow_execution
from flowplatform.rls import grant_privileges
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


# PostgreSQL: the suite runs as the application's role, so row-level security binds the
# product's code as in production. Migrations run as the DATABASE_URL user (the owner).
APP_ROLE = "flowplatform_app"


def _become_app_role(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Every connection the tests open acts as the application's role. Tests' own setup and
    assertions (ORM calls outside any product scope) see every organization through a
    session-level bypass; the product's scopes (flowplatform.rls) switch it off for their
    transactions, and `strict_rls` switches it off for a whole test."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {APP_ROLE}; SET app.rls_bypass = 'on'")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Any:
    if connection.vendor != "postgresql":
        yield
        return
    with django_db_blocker.unblock():
        create_app_role(connection)
        grant_privileges(connection, APP_ROLE)
        with connection.cursor() as cursor:
            # Only for the test harness: transactional tests empty the tables between tests.
            cursor.execute(f"GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
    connections.close_all()
    connection_created.connect(_become_app_role)
    yield
    connection_created.disconnect(_become_app_role)
    connections.close_all()


def create_app_role(connection: Any) -> None:
    """The application's role: may log in, is no superuser and cannot bypass row-level
    security (README, "Database roles")."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE])
        if cursor.fetchone():
            return
        try:
            with transaction.atomic():
                cursor.execute(
                    f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
                )
        except ProgrammingError as exc:  # another test run created it meanwhile, or no right
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE])
            if not cursor.fetchone():
                raise RuntimeError(
                    f"the tests need a PostgreSQL role {APP_ROLE!r} and could not create it "
                    f"({exc}); create it as a superuser: CREATE ROLE {APP_ROLE} LOGIN"
                ) from exc
        except IntegrityError:
            pass


def app_database_url() -> str:
    """The test database's URL as the application's role (for worker subprocesses)."""
    db = connection.settings_dict
    return f"postgres://{APP_ROLE}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def strict_rls(db: None) -> Any:
    """Row-level security as production has it: without a product scope, nothing is visible.
    Create the test's data inside `rls.tenant_scope(org)`."""
    if connection.vendor != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")
    with connection.cursor() as cursor:
        cursor.execute("SET app.rls_bypass = 'off'")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET app.rls_bypass = 'on'")


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


# The schemathesis fuzz test's per-operation summary (tests/fuzz_report.py).
pytest_plugins = ["tests.fuzz_report"]
