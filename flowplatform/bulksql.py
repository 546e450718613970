"""Set-based writes the ORM cannot say in one statement, on PostgreSQL and SQLite: an UPDATE
that returns the rows it changed, and an UPDATE of many rows, each to its own values, from one
JSON parameter. Callers name the model, the columns and the values; only the model's own table
and column names and placeholders are interpolated into the SQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models


def _ids(ids: Sequence[uuid.UUID]) -> tuple[str, list[Any]]:
    """`id` is one of `ids`: one array parameter on PostgreSQL, placeholders on SQLite."""
    if connection.vendor == "postgresql":
        return "id = ANY(%s::uuid[])", [list(ids)]
    return f"id IN ({', '.join(['%s'] * len(ids))})", [i.hex for i in ids]


def _prep(model: type[models.Model], column: str, value: Any) -> Any:
    return model._meta.get_field(column).get_db_prep_value(value, connection)


def update_returning(
    model: type[models.Model],
    ids: Sequence[uuid.UUID],
    *,
    where: dict[str, Sequence[Any]],
    values: dict[str, Any],
    returning: Sequence[str],
) -> list[models.Model]:
    """UPDATE the rows of `ids` that match `where` (column → allowed values) to `values`;
    the changed rows, loaded with the `returning` fields only (their other fields deferred)."""
    if not ids:
        return []
    meta = model._meta
    table = connection.ops.quote_name(meta.db_table)
    chosen, params = _ids(ids)
    wanted = {meta.get_field(name) for name in returning}
    fields = [f for f in meta.concrete_fields if f in wanted]  # the order from_db expects
    setting = ", ".join(f"{connection.ops.quote_name(c)} = %s" for c in values)
    matching = "".join(
        f" AND {connection.ops.quote_name(c)} IN ({', '.join(['%s'] * len(allowed))})"
        for c, allowed in where.items()
    )
    sql = (
        f"UPDATE {table} SET {setting} WHERE {chosen}{matching} "  # noqa: S608
        f"RETURNING {', '.join(connection.ops.quote_name(f.column) for f in fields)}"
    )
    arguments = [_prep(model, c, v) for c, v in values.items()] + params
    arguments += [_prep(model, c, v) for c, allowed in where.items() for v in allowed]
    with connection.cursor() as cursor:
        cursor.execute(sql, arguments)
        rows = cursor.fetchall()
    converters = []
    for field in fields:
        column = field.get_col(meta.db_table)
        funcs = [*connection.ops.get_db_converters(column), *field.get_db_converters(connection)]
        converters.append((column, funcs))
    names = [f.attname for f in fields]
    loaded = []
    for row in rows:
        converted = []
        for (column, funcs), value in zip(converters, row, strict=True):
            for convert in funcs:
                value = convert(value, column, connection)
            converted.append(value)
        loaded.append(model.from_db(connection.alias, names, converted))
    return loaded


def update_each(
    model: type[models.Model], rows: Sequence[dict[str, Any]], *, same: dict[str, Any]
) -> None:
    """UPDATE each row (a dict: its `id` and its own values by column, as Python values) in one
    statement, and give every one the `same` values: the rows travel as one JSON parameter the
    database unpacks (jsonb_to_recordset on PostgreSQL, json_each on SQLite)."""
    if not rows:
        return
    meta = model._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = [c for c in rows[0] if c != "id"]
    fields = {c: meta.get_field(c) for c in columns}
    pg = connection.vendor == "postgresql"
    records = []
    for row in rows:
        record = {"id": str(row["id"]) if pg else row["id"].hex}
        for c, field in fields.items():
            value = row[c]
            if isinstance(field, models.JSONField) and not pg and value is not None:
                value = json.dumps(value)  # stored as the JSON text json_extract returns
            elif isinstance(value, datetime):
                value = value.isoformat() if pg else _prep(model, c, value)
            record[c] = value
        records.append(record)
    if pg:
        shape = ", ".join(
            ["id uuid", *(f"{quote(f.column)} {f.db_type(connection)}" for f in fields.values())]
        )
        source = f"jsonb_to_recordset(%s::jsonb) AS v({shape})"
    else:
        picked = ", ".join(f"json_extract(value, '$.{c}') AS {quote(c)}" for c in ["id", *columns])
        source = f"(SELECT {picked} FROM json_each(%s)) AS v"  # noqa: S608
    assigned = [f"{quote(f.column)} = v.{quote(f.column)}" for f in fields.values()]
    assigned += [f"{quote(meta.get_field(c).column)} = %s" for c in same]
    sql = (
        f"UPDATE {table} SET {', '.join(assigned)} FROM {source} "  # noqa: S608
        f"WHERE {table}.id = v.id"
    )
    arguments = [_prep(model, c, v) for c, v in same.items()] + [json.dumps(records)]
    with connection.cursor() as cursor:
        cursor.execute(sql, arguments)


def _encoded(field: models.Field, value: Any, pg: bool) -> Any:
    """A Python value as a JSON record carries it for the database to unpack."""
    if value is None:
        return None
    if isinstance(field, models.JSONField):
        return value if pg else json.dumps(value)  # SQLite: the JSON text json_extract returns
    if isinstance(value, uuid.UUID):
        return str(value) if pg else value.hex
    if isinstance(value, datetime):
        return value.isoformat() if pg else connection.ops.adapt_datetimefield_value(value)
    return value


def insert_many(objs: Sequence[models.Model], *, now: datetime) -> None:
    """INSERT these new rows of one model in one statement from one JSON parameter (what
    bulk_create does, without compiling a placeholder per field per row: for thousands of
    rows that compilation is most of the cost). Their auto_now(_add) fields become `now`."""
    if not objs:
        return
    model = type(objs[0])
    meta = model._meta
    quote = connection.ops.quote_name
    pg = connection.vendor == "postgresql"
    fields = list(meta.concrete_fields)
    stamped = [
        f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
    ]
    records = []
    for obj in objs:
        for field in stamped:
            setattr(obj, field.attname, now)
        records.append({f.column: _encoded(f, getattr(obj, f.attname), pg) for f in fields})
    columns = ", ".join(quote(f.column) for f in fields)
    if pg:
        shape = ", ".join(f"{quote(f.column)} {f.db_type(connection)}" for f in fields)
        source = f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS v({shape})"  # noqa: S608
    else:
        picked = ", ".join(f"json_extract(value, '$.{f.column}')" for f in fields)
        source = f"SELECT {picked} FROM json_each(%s)"  # noqa: S608
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) {source}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps(records)])
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
