"""History rows for set-based changes, which django-simple-history's signals do not see.

Bulk stale marking changes thousands of rows with one UPDATE; `record_history` then copies
them into the model's history table with one INSERT … SELECT, so history stays complete at a
constant number of queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection, models
from django.utils import timezone

from flowplatform.lookups import any_of_sql


def record_history(
    model: type[models.Model], pks: Iterable[Any], *, reason: str, history_type: str = "~"
) -> None:
    """Add one history row per row of `model` in `pks`, as those rows are now. One query."""
    pks = list(pks)
    if not pks:
        return
    historical = model.history.model  # type: ignore[attr-defined]
    qn = connection.ops.quote_name
    columns = [field.column for field in model._meta.concrete_fields]
    extra = ["history_date", "history_change_reason", "history_type", "history_user_id"]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    pk_values = [model._meta.pk.get_db_prep_value(pk, connection) for pk in pks]
    condition, condition_params = any_of_sql(
        qn(model._meta.pk.column), pk_values, connection.vendor
    )
    # Only identifiers from the models' metadata are interpolated; values are parameters.
    sql = (
        f"INSERT INTO {qn(historical._meta.db_table)} "  # noqa: S608
        f"({', '.join(qn(c) for c in [*columns, *extra])}) "
        f"SELECT {', '.join(qn(c) for c in columns)}, %s, %s, %s, NULL "
        f"FROM {qn(model._meta.db_table)} WHERE {condition}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, reason[:100], history_type, *condition_params])


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
