"""Liveness (/healthz: the process answers) and readiness (/readyz: the database answers)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from flowplatform.api.errors import error_response


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return error_response(
            request, 503, "not_ready", "The database is unreachable.", {"database": "unreachable"}
        )
    return JsonResponse({"status": "ready", "database": "ok"})
