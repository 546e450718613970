"""The test database: the application's role the suite runs as (PostgreSQL), the tenant tables
under row-level security, and a snapshot of every row in them."""

from __future__ import annotations

from typing import Any

from django.db import connection

# PostgreSQL: the suite runs as the application's role, so row-level security binds the
# product's code as in production. Migrations run as the DATABASE_URL user (the owner).
APP_ROLE = "flowplatform_app"


def database_address() -> tuple[str, int]:
    """Where the configured test database listens (host, port)."""
    db = connection.settings_dict
    return db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)


def app_database_url() -> str:
    """The test database's URL as the application's role (for worker subprocesses)."""
    host, port = database_address()
    return f"postgres://{APP_ROLE}@{host}:{port}/{connection.settings_dict['NAME']}"


def tenant_tables() -> dict[str, Any]:
    """db_table → model, for every model with an organization_id column (under RLS)."""
    from django.apps import apps

    return {
        model._meta.db_table: model
        for model in apps.get_models()
        if "organization_id" in {field.column for field in model._meta.concrete_fields}
    }


def snapshot_tenant_tables() -> dict[str, list[dict[str, Any]]]:
    """Every row of every tenant table (the tests see all organizations)."""
    return {
        table: list(model._base_manager.order_by("pk").values())
        for table, model in sorted(tenant_tables().items())
    }
