"""Shared fixtures: organizations, API keys, authenticated clients, and small row factories."""

from __future__ import annotations

import functools
import re
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.handlers.base import BaseHandler
from django.core.management.base import BaseCommand
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
        connection.execute_wrappers.append(_unscoped_query_tripwire)


# The session-level bypass would hide product code that reads a tenant table without setting
# its organization (in production it would find nothing). So during every HTTP request the
# tests make (API, admin, the jobs they run) and every command of ours they call, a query
# naming a tenant table outside any scope of flowplatform.rls is recorded, and the test fails
# (`_no_unscoped_queries`).
_request_state = threading.local()
UNSCOPED_QUERIES: list[str] = []


_original_get_response = BaseHandler.get_response
_original_execute = BaseCommand.execute


@contextmanager
def _product_code() -> Any:
    previous = getattr(_request_state, "active", False)
    _request_state.active = True
    try:
        yield
    finally:
        _request_state.active = previous


def _get_response_watched(self: BaseHandler, request: Any) -> Any:
    """A request: every middleware, the view, and the jobs run when its transaction commits."""
    with _product_code():
        return _original_get_response(self, request)


def _execute_watched(self: BaseCommand, *args: Any, **options: Any) -> Any:
    """Our management commands are entry points too (Django's own, e.g. flush, are not)."""
    if not type(self).__module__.startswith(("executions.", "flows.", "flowplatform.")):
        return _original_execute(self, *args, **options)
    with _product_code():
        return _original_execute(self, *args, **options)


def tenant_tables() -> dict[str, Any]:
    """db_table → model, for every model with an organization_id column (under RLS)."""
    from django.apps import apps

    return {
        model._meta.db_table: model
        for model in apps.get_models()
        if "organization_id" in {field.column for field in model._meta.concrete_fields}
    }


@functools.cache
def _tenant_table_pattern() -> re.Pattern[str]:
    return re.compile("|".join(f'"{re.escape(table)}"' for table in tenant_tables()))


def _unscoped_query_tripwire(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    db = context["connection"]
    if (
        getattr(_request_state, "active", False)
        and getattr(db, "flowplatform_rls_scope", None) is None
        and _tenant_table_pattern().search(sql)
    ):
        UNSCOPED_QUERIES.append(sql[:300])
    return execute(sql, params, many, context)


@pytest.fixture(autouse=True)
def _no_unscoped_queries() -> Any:
    UNSCOPED_QUERIES.clear()
    yield
    assert not UNSCOPED_QUERIES, (
        "a request queried a tenant table outside a row-level security scope (in production "
        f"it would see no rows): {UNSCOPED_QUERIES[:3]}"
    )


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
    BaseHandler.get_response = _get_response_watched
    BaseCommand.execute = _execute_watched
    yield
    BaseCommand.execute = _original_execute
    BaseHandler.get_response = _original_get_response
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
