"""Shared fixtures: organizations, API keys, authenticated clients (built by tests/helpers/), and
the PostgreSQL role and row-level security checks every test runs under."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.handlers.base import BaseHandler
from django.core.management.base import BaseCommand
from django.db import IntegrityError, ProgrammingError, connection, connections, transaction
from django.db.backends.signals import connection_created
from rest_framework.test import APIClient

from flowplatform.rls import grant_privileges

# The shared builders' asserts explain a failure as a test module's do (registered before the
# first import of tests.helpers).
pytest.register_assert_rewrite("tests.helpers")

from flowplatform.tenancy.models import Membership  # noqa: E402
from tests.helpers.database import APP_ROLE, tenant_tables  # noqa: E402
from tests.helpers.tenants import Tenant  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgresql` are skipped when the suite runs on SQLite."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (run with DATABASE_URL=postgres://…)")
    for item in items:
        if "postgresql" in item.keywords:
            item.add_marker(skip)


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
def jobs_per_attempt(settings: Any) -> None:
    """Every task a job of its own, pure ones too (FLOWPLATFORM_INLINE_PURE_TASKS off): for
    tests of the worker's path, the one impure tasks and every db_worker always take."""
    settings.FLOWPLATFORM_INLINE_PURE_TASKS = False


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


# The schemathesis fuzz test's per-operation summary (tests/helpers/fuzz_report.py).
pytest_plugins = ["tests.helpers.fuzz_report"]


# Admin users (tests/test_admin*.py): a logged-in superuser, and staff members of organizations.
@pytest.fixture
def superuser(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return user


@pytest.fixture
def staff_of(django_user_model):
    def make(*tenants: Any, name: str = "staff") -> Any:
        user = django_user_model.objects.create_user(name, f"{name}@example.com", "pw")
        user.is_staff = True
        user.save()
        for tenant in tenants:
            Membership.objects.create(user=user, organization=tenant.org)
        return user

    return make
