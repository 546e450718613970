"""History rows for set-based changes, which django-simple-history's signals do not see.

Bulk stale marking changes thousands of rows at once. `update_with_history` makes the change
and records a history row for every row it changed in a single statement on PostgreSQL (the
UPDATE's RETURNING feeds an INSERT; the rows never travel to Python); `record_history` copies
rows as they are now with one INSERT … SELECT. History stays complete at a constant number of
queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, connections, models
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from flowplatform.lookups import any_of_sql


def _columns(model: type[models.Model], qn: Any) -> str:
    return ", ".join(qn(field.column) for field in model._meta.concrete_fields)


def _insert_history(
    model: type[models.Model], source: str, *, reason: str, history_type: str, using: str
) -> tuple[str, list[Any]]:
    """`INSERT INTO` the model's history table one row per row of `source` (SQL naming rows
    with the model's columns: its table, or a CTE), with when, why and what kind of change;
    the parameters of the SELECT list (those of `source` follow)."""
    ops = connections[using].ops
    historical = model.history.model  # type: ignore[attr-defined]
    extra = ["history_date", "history_change_reason", "history_type", "history_user_id"]
    columns = _columns(model, ops.quote_name)
    # Only identifiers from the models' metadata are interpolated; values are parameters.
    sql = (
        f"INSERT INTO {ops.quote_name(historical._meta.db_table)} "  # noqa: S608
        f"({columns}, {', '.join(ops.quote_name(c) for c in extra)}) "
        f"SELECT {columns}, %s, %s, %s, NULL FROM {source}"
    )
    now = ops.adapt_datetimefield_value(timezone.now())
    return sql, [now, reason[:100], history_type]


def record_history(
    model: type[models.Model], pks: Iterable[Any], *, reason: str, history_type: str = "~"
) -> None:
    """Add one history row per row of `model` in `pks`, as those rows are now. One query."""
    pks = list(pks)
    if not pks:
        return
    qn = connection.ops.quote_name
    pk_values = [model._meta.pk.get_db_prep_value(pk, connection) for pk in pks]
    condition, condition_params = any_of_sql(
        qn(model._meta.pk.column), pk_values, connection.vendor
    )
    source = f"{qn(model._meta.db_table)} WHERE {condition}"
    sql, params = _insert_history(
        model, source, reason=reason, history_type=history_type, using=connection.alias
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *condition_params])


def update_with_history(
    rows: models.QuerySet, values: dict[str, Any], *, reason: str, history_type: str = "~"
) -> int:
    """`rows.update(**values)`, and one history row for each row it changed, as it is after
    the change: how many it changed. PostgreSQL: one statement (`WITH changed AS (UPDATE …
    RETURNING …) INSERT …`); SQLite, which has no data-modifying CTEs: two (the UPDATE
    returns the keys of the rows it changed, then record_history)."""
    model, db = rows.model, connections[rows.db]
    query = rows.query.chain(UpdateQuery)
    query.add_update_values(values)
    try:
        update_sql, update_params = query.get_compiler(rows.db).as_sql()
    except EmptyResultSet:  # an empty `__any_of` / `__in`: nothing to change
        return 0
    qn = db.ops.quote_name
    if db.vendor != "postgresql":
        with db.cursor() as cursor:
            cursor.execute(f"{update_sql} RETURNING {qn(model._meta.pk.column)}", update_params)
            changed = [row[0] for row in cursor.fetchall()]
        record_history(model, changed, reason=reason, history_type=history_type)
        return len(changed)
    insert_sql, insert_params = _insert_history(
        model, "changed", reason=reason, history_type=history_type, using=rows.db
    )
    # The ORM's own UPDATE, and identifiers from the models' metadata; values are parameters.
    sql = (
        f"WITH changed AS ({update_sql} RETURNING {_columns(model, qn)}), "  # noqa: S608
        f"recorded AS ({insert_sql}) SELECT count(*) FROM changed"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, [*update_params, *insert_params])
        return cursor.fetchone()[0]


def history_user(instance: Any = None, request: Any = None, **kwargs: Any) -> Any:
    """The admin user behind a change, for HistoricalRecords(get_user=…). API requests are
    made by API keys, not users: their actor is the row's own `modified_by`."""
    from django.contrib.auth.base_user import AbstractBaseUser

    user = getattr(request, "user", None)
    return user if isinstance(user, AbstractBaseUser) and user.is_authenticated else None


def ensure_baseline(model: type[models.Model], pk: Any) -> None:
    """Give a row a history row of how it is now, if it has none yet (rows the engine created
    in bulk have none), so the first manual change shows what it changed. One or two queries."""
    if not model.history.filter(**{model._meta.pk.attname: pk}).exists():  # type: ignore[attr-defined]
        record_history(model, [pk], reason="before the first manual change", history_type="+")
