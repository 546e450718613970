"""PostgreSQL row-level security: the database itself shows a transaction only its organization.

Every table with an `organization_id` column has a policy (created by migrations, see
`enable_row_level_security`) that admits a row only when its organization is one of those set
for the current transaction in `app.organization_id`, or when `app.rls_bypass` is `on`. With
neither set, tenant tables read as empty and refuse writes. The application connects as a role
that does not own the tables and is not a superuser, so the policies bind it (README, "Database
roles"); `FORCE ROW LEVEL SECURITY` binds the owner too.

The settings are transaction-local (`set_config(..., true)`), so they cannot leak to the next
user of a pooled connection. Every entry point opens one:

- `key_scope()` and `scope_to_api_key()`: an API request (flowplatform.api.views.TenantViewSet)
  is one transaction whose first statement finds the API key presented and scopes the
  transaction to the key's organization (the function `flowplatform_scope_to_api_key`, below);
- `tenant_scope(org)`: jobs (executions.jobs), a staff user's admin requests
  (`AdminScopeMiddleware`), commands that act for one organization, and an API request's
  transaction when it runs again or after its Idempotency-Key claim;
- `bypass(actor, reason)`: superusers in admin, maintenance commands and migrations; it is
  explicit and audited (a line on the `flowplatform.audit` logger);
- `lookup()`: ids the system reads across organizations (an admin user's memberships, the
  jobs and the reaper's ids). Not logged, used for nothing else.

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


# The one statement that scopes an API request (`scope_to_api_key`). It runs as the caller (no
# SECURITY DEFINER): the bypass is on for its read of the key by prefix, the only row it may
# read before there is a scope, and off again before it returns; then the organization is that
# of the key, or none when the key is unknown, its digest differs, or it is revoked or expired.
# A row of tenancy_apikey comes back only in the first case.
API_KEY_FUNCTION = "flowplatform_scope_to_api_key"
API_KEY_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION flowplatform_scope_to_api_key(key_prefix text, presented_hash text)
RETURNS SETOF tenancy_apikey
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    found tenancy_apikey;
BEGIN
    PERFORM set_config('app.rls_bypass', 'on', true);
    SELECT * INTO found FROM tenancy_apikey WHERE prefix = key_prefix;
    PERFORM set_config('app.rls_bypass', 'off', true);
    IF found.id IS NULL
        OR found.key_hash IS DISTINCT FROM presented_hash
        OR found.revoked_at IS NOT NULL
        OR found.expires_at <= statement_timestamp()
    THEN
        PERFORM set_config('app.organization_id', '', true);
        RETURN;
    END IF;
    PERFORM set_config('app.organization_id', found.organization_id::text, true);
    RETURN NEXT found;
END
$$
"""


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


def key_scope(*, using: str = "default", read_only: bool = False) -> Any:
    """An API request's transaction, opened before its organization is known: the API key it
    presents decides it (`scope_to_api_key`, its first statement); until then no organization's
    rows are visible. `read_only` on SQLite: no transaction at all (as `tenant_scope`)."""
    if connections[using].vendor != "postgresql":
        return nullcontext() if read_only else transaction.atomic(using=using)
    return _key_scope(using)


@contextmanager
def _key_scope(using: str) -> Iterator[None]:
    connection = connections[using]
    outer = getattr(connection, "flowplatform_rls_scope", None)
    nested = connection.in_atomic_block
    with transaction.atomic(using=using):
        previous = None
        if nested:  # an outer transaction's settings would still apply: none until the key
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT current_setting(%s, true), current_setting(%s, true), "
                    "set_config(%s, '', true), set_config(%s, 'off', true)",
                    [ORGANIZATION_SETTING, BYPASS_SETTING, ORGANIZATION_SETTING, BYPASS_SETTING],
                )
                previous = cursor.fetchone()[:2]
        connection.flowplatform_rls_scope = None  # no scope until scope_to_api_key sets one
        connection.flowplatform_key_scope = True
        try:
            yield
        finally:
            connection.flowplatform_key_scope = False
            connection.flowplatform_rls_scope = outer if nested else None
        if previous is not None and not connection.needs_rollback:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config(%s, %s, true), set_config(%s, %s, true)",
                    [ORGANIZATION_SETTING, previous[0] or "", BYPASS_SETTING, previous[1] or ""],
                )


def scope_to_api_key(model: Any, prefix: str, key_hash: str, *, using: str = "default") -> Any:
    """The API key (`model`: tenancy's ApiKey) with `prefix` if its digest is `key_hash` and it
    is neither revoked nor expired, with its organization; the transaction is then scoped to
    that organization. None otherwise, and no organization is visible.

    On PostgreSQL this is one statement, the first of the request's transaction (`key_scope`):
    the function `flowplatform_scope_to_api_key` reads the key by its prefix with the bypass on
    for that one read only, then sets the scope. Called outside a key scope, it opens one of
    its own, as short as the read. On SQLite it is a plain read.
    """
    connection = connections[using]
    keys = model.objects.using(using)
    if connection.vendor != "postgresql":
        return keys.select_related("organization").filter(prefix=prefix).first()
    if not getattr(connection, "flowplatform_key_scope", False):
        with _key_scope(using):
            return scope_to_api_key(model, prefix, key_hash, using=using)
    organization = model._meta.get_field("organization").related_model
    fields = organization._meta.concrete_fields
    quote = connection.ops.quote_name
    columns = ", ".join(f"o.{quote(f.column)} AS {quote(f'org_{f.column}')}" for f in fields)
    sql = (
        f"SELECT k.*, {columns} FROM {API_KEY_FUNCTION}(%s, %s) AS k "  # noqa: S608 - names
        f"JOIN {quote(organization._meta.db_table)} AS o ON o.id = k.organization_id"
    )
    found = next(iter(keys.raw(sql, [prefix, key_hash])), None)
    if found is None:
        return None
    found.organization = organization.from_db(
        using, [f.attname for f in fields], [getattr(found, f"org_{f.column}") for f in fields]
    )
    connection.flowplatform_rls_scope = (_org_value(found.organization_id), False)
    return found


def lookup(*, using: str = "default") -> Any:
    """An unscoped transaction for reading what decides a scope (an admin user's memberships)
    and the ids the system reads across organizations; not for anything else."""
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


def create_api_key_function() -> Any:
    """A migration operation: (re)create `flowplatform_scope_to_api_key` (PostgreSQL only)."""
    from django.db import migrations

    def forwards(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(API_KEY_FUNCTION_SQL, params=None)

    def backwards(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"DROP FUNCTION IF EXISTS {API_KEY_FUNCTION}(text, text)")

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
