"""`__any_of`: the same rows as `__in` (one array parameter on PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.models import TaskExecution

pytestmark = pytest.mark.django_db


def test_any_of_selects_what_in_selects(tenant):
    fe = tenant.flow_execution()
    rows = [tenant.task_execution(fe, task_name=f"t{i}") for i in range(5)]
    wanted = [rows[0].pk, rows[3].pk, uuid.uuid4(), rows[3].pk]
    names = ["t1", "t4", "missing", "t1"]
    by_pk = TaskExecution.objects.filter(pk__any_of=wanted)
    by_name = TaskExecution.objects.filter(task_name__any_of=names)
    assert set(by_pk) == set(TaskExecution.objects.filter(pk__in=wanted)) == {rows[0], rows[3]}
    assert set(by_name) == set(TaskExecution.objects.filter(task_name__in=names))
    assert not TaskExecution.objects.filter(pk__any_of=[]).exists()
    assert TaskExecution.objects.filter(pk__any_of=[]).update(status="stale") == 0
    assert TaskExecution.objects.filter(task_name__any_of=names).update(status="stale") == 2


@pytest.mark.postgresql
def test_any_of_sends_one_array_parameter_on_postgresql(tenant):
    ids = [uuid.uuid4() for _ in range(1000)]
    with CaptureQueriesContext(connection) as queries:
        list(TaskExecution.objects.filter(pk__any_of=ids))
    [query] = queries.captured_queries
    assert "= ANY(" in query["sql"]
    assert query["sql"].count("::uuid") <= 2  # one array, not 1,000 placeholders


def test_any_of_selects_what_in_selects_on_an_integer_field(tenant):
    fe = tenant.flow_execution()
    rows = [tenant.task_execution(fe, task_name=f"t{i}") for i in range(3)]
    assert set(TaskExecution.objects.filter(task_execution_idx__any_of=[0, 7])) == set(rows)
