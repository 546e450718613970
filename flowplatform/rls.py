"""PostgreSQL row-level security: the database itself shows a transaction only its organization.

Every table with an `organization_id` column has a policy (created by migrations, see
`enable_row_level_security`) that admits a row only when its organization is one of those set
for the current transaction in `app.organization_id`, or when `app.rls_bypass` is `on`. With
neither set, tenant tables read as empty and refuse writes. The application connects as a role
that does not own the tables and is not a superuser, so the policies bind it (README, "Database
roles"); `FORCE ROW LEVEL SECURITY` binds the owner too.

The settings are transaction-local (`set_config(..., true)`), so they cannot leak to the next
user of a pooled connection. Every entry point opens one:

- `tenant_scope(org)`: API requests (flowplatform.api.views.TenantViewSet), jobs
  (executions.jobs), a staff user's admin requests (`AdminScopeMiddleware`), and commands that
  act for one organization;
- `bypass(actor, reason)`: superusers in admin, maintenance commands and migrations; it is
  explicit and audited (a line on the `flowplatform.audit` logger);
- `lookup()`: the two reads that decide the scope, before there is one (the API key being
  presented, an admin user's memberships). Not logged, used for nothing else.

On SQLite there is no row-level security: the scopes are plain transactions and the
application's own filters are the only isolation.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

ORGANIZATION_SETTING = "app.organization_id"
BYPASS_SETTING = "app.rls_bypass"
POLICY_NAME = "tenant_isolation"

audit = logging.getLogger("flowplatform.audit")

# Evaluated once per query (uncorrelated sub-selects become init plans), not once per row.
POLICY_CONDITION = (
    "(SELECT current_setting('app.rls_bypass', true)) IS NOT DISTINCT FROM 'on' "
    "OR organization_id = ANY ((SELECT string_to_array("
    "current_setting('app.organization_id', true), ',')::uuid[])::uuid[])"
)


def _org_value(organizations: Any) -> str:
    """One organization (a model, UUID or string) or several → 'uuid,uuid'."""
    if organizations is None:
        raise ValueError("an organization is required; use bypass() to see every organization")
    if not isinstance(organizations, Iterable) or isinstance(organizations, str):
        organizations = [organizations]
    ids = sorted({str(uuid.UUID(str(getattr(org, "pk", org)))) for org in organizations})
    return ",".join(ids)


@contextmanager
def _scope(organizations: str, bypass: bool, using: str) -> Iterator[None]:
    """A transaction (a savepoint when nested) with the row-level security settings applied.

    Nested in a transaction that has other settings, the outer ones come back on the way out.
    """
    connection = connections[using]
    wanted = (organizations, bypass)
    outer = getattr(connection, "flowplatform_rls_scope", None)
    nested = connection.in_atomic_block
    with transaction.atomic(using=using):
        if connection.vendor != "postgresql" or (nested and outer == wanted):
            yield
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting(%s, true), current_setting(%s, true), "
                "set_config(%s, %s, true), set_config(%s, %s, true)",
                [
                    ORGANIZATION_SETTING,
                    BYPASS_SETTING,
                    ORGANIZATION_SETTING,
                    organizations,
                    BYPASS_SETTING,
                    "on" if bypass else "off",
                ],
            )
            previous_org, previous_bypass = cursor.fetchone()[:2]
        connection.flowplatform_rls_scope = wanted
        try:
            yield
        finally:
            connection.flowplatform_rls_scope = outer if nested else None
        if nested and not connection.needs_rollback:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                    [
                        ORGANIZATION_SETTING,
                        previous_org or "",
                        BYPASS_SETTING,
                        previous_bypass or "",
                    ],
                )


def tenant_scope(organizations: Any, *, using: str = "default", read_only: bool = False) -> Any:
    """A transaction that sees and writes only `organizations`' rows (one or several).
    `read_only`: on a database without row-level security (SQLite), no transaction at all."""
    value = _org_value(organizations)
    if read_only and connections[using].vendor != "postgresql":
        return nullcontext()
    return _scope(value, False, using)


def bypass(actor: str, reason: str, *, using: str = "default") -> Any:
    """A transaction that sees every organization's rows: audited, for superusers in admin and
    for maintenance. Say who (`actor`) and why (`reason`). The audit line is written where there
    is something to bypass (PostgreSQL); SQLite has no row-level security."""
    if connections[using].vendor == "postgresql":
        audit.info("row-level security bypassed by %s: %s", actor, reason)
    return _scope("", True, using)


def lookup(*, using: str = "default") -> Any:
    """An unscoped transaction for reading what decides a scope (an API key by its prefix, an
    admin user's memberships); not for anything else."""
    if connections[using].vendor != "postgresql":
        return nullcontext()
    return _scope("", True, using)


def organization_of(model: Any, pk: Any, *, actor: str) -> uuid.UUID | None:
    """The organization of `model`'s row `pk` (None if there is none), read through an audited
    bypass: for commands and jobs that are given only an id."""
    with bypass(actor, f"finding the organization of {model._meta.label} {pk}"):
        return model.objects.filter(pk=pk).values_list("organization_id", flat=True).first()


def check_database_role(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list:
    """`manage.py check --deploy --database default`: warn when the application's connection
    would ignore the policies (a superuser or BYPASSRLS role, or the tables' owner)."""
    from django.core.checks import Warning as CheckWarning

    problems = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles "
                "WHERE rolname = current_user"
            )
            user, superuser, bypassrls = cursor.fetchone()
            cursor.execute(
                "SELECT count(*) FROM pg_tables WHERE tableowner = current_user "
                "AND tablename = 'executions_taskexecution'"
            )
            owner = cursor.fetchone()[0] > 0
        if superuser or bypassrls:
            problems.append(
                CheckWarning(
                    f"database {alias!r}: connected as {user!r}, a "
                    f"{'superuser' if superuser else 'BYPASSRLS role'}; row-level security "
                    "does not apply to it",
                    hint="Connect as the application's role (README, 'Two roles').",
                    id="flowplatform.W001",
                )
            )
        elif owner:
            problems.append(
                CheckWarning(
                    f"database {alias!r}: connected as {user!r}, which owns the tables and "
                    "could turn row-level security off",
                    hint="Migrate as the owner; run the application as its own role.",
                    id="flowplatform.W002",
                )
            )
    return problems


# Migrations ---------------------------------------------------------------------------------


def _quote(connection: Any, table: str) -> str:
    return connection.ops.quote_name(table)


def enable_row_level_security(*tables: str) -> Any:
    """A migration operation: force row-level security with the tenant policy on `tables`
    (PostgreSQL only; nothing on SQLite). Re-running it replaces the policy."""
    from django.db import migrations

    def forwards(apps: Any, schema_editor: Any) -> None:
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            return
        for table in tables:
            name = _quote(connection, table)
            schema_editor.execute(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
            schema_editor.execute(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
            schema_editor.execute(f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}")
            schema_editor.execute(
                f"CREATE POLICY {POLICY_NAME} ON {name} "
                f"USING ({POLICY_CONDITION}) WITH CHECK ({POLICY_CONDITION})"
            )

    def backwards(apps: Any, schema_editor: Any) -> None:
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            return
        for table in tables:
            name = _quote(connection, table)
            schema_editor.execute(f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}")
            schema_editor.execute(f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY")
            schema_editor.execute(f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY")

    return migrations.RunPython(forwards, backwards, elidable=False)


def bypass_for_migrations(using: str, **kwargs: Any) -> None:
    """pre_migrate: `migrate` is maintenance; its connection sees every row (audited), so a
    migration that reads or rewrites tenant rows does not silently find none."""
    connection = connections[using]
    if connection.vendor != "postgresql" or getattr(connection, "flowplatform_migrating", False):
        return
    audit.info("row-level security bypassed by manage.py migrate on database %r", using)
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, 'on', false)", [BYPASS_SETTING])
    connection.flowplatform_migrating = True


def grant_to_app_role(using: str, **kwargs: Any) -> None:
    """post_migrate: give the application's role (settings.DATABASE_APP_ROLE) what it needs."""
    from django.conf import settings

    role = getattr(settings, "DATABASE_APP_ROLE", "")
    connection = connections[using]
    if role and connection.vendor == "postgresql":
        grant_privileges(connection, role)


def grant_privileges(connection: Any, role: str) -> None:
    """The data privileges the application's role needs on every table and sequence of the
    schema, and nothing more: it does not own them, so it cannot alter or drop them or turn
    row-level security off."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, current_schema()")
        current_user, schema = cursor.fetchone()
        if current_user == role:
            return  # the application itself (e.g. a test flush): it owns nothing to grant
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone() is None:
            raise ImproperlyConfigured(
                f"DATABASE_APP_ROLE={role!r}: there is no such role; create it first (README, "
                "'Tenant isolation in the database'), or leave DATABASE_APP_ROLE empty"
            )
        quoted_role = connection.ops.quote_name(role)
        quoted_schema = connection.ops.quote_name(schema)
        cursor.execute(f"GRANT USAGE ON SCHEMA {quoted_schema} TO {quoted_role}")
        cursor.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {quoted_schema} "
            f"TO {quoted_role}"
        )
        cursor.execute(
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quoted_schema} TO {quoted_role}"
        )
