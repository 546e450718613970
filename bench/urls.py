"""The product's routes plus the floor: one indexed SELECT returned as JSON by bare Django.

The floor is what any endpoint of this stack costs at least — gunicorn, Django's request
handling and middleware, one round trip to PostgreSQL for one row by primary key, JSON out —
without DRF, authentication or the product's scoping. Under row-level security the row is
visible only with `app.organization_id` set, so the floor sets it once per connection
(session-level) and then costs one SELECT per request. Run it last: the session setting stays
on the connection (`python -m bench api` does).
"""

from __future__ import annotations

import uuid

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from executions.models import TaskExecution

FIELDS = ("id", "flow_execution_id", "task_name", "task_execution_idx", "status", "output",
          "updated_at")  # fmt: skip


def floor(request: HttpRequest, organization_id: uuid.UUID, pk: uuid.UUID) -> JsonResponse:
    connection.ensure_connection()
    if getattr(connection, "bench_floor_connection", None) is not connection.connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('app.organization_id', %s, false)",
                           [str(organization_id)])  # fmt: skip
        connection.bench_floor_connection = connection.connection
    row = TaskExecution.objects.filter(pk=pk).values(*FIELDS).first()
    if row is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse(row)


urlpatterns = [
    path("bench/floor/<uuid:organization_id>/<uuid:pk>", floor),
    path("", include("flowplatform.urls")),
]
