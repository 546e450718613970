"""GET /metrics: Prometheus' scrape of the product's numbers (flowplatform.metrics in each
process, executions.metrics from the database), for the operator.

Closed unless METRICS_TOKEN is set: until then the path does not exist (404, as any unknown
path); then it answers only `Authorization: Bearer <METRICS_TOKEN>` (else 401), compared in
constant time. Not an API endpoint: no API key, no organization, not in the OpenAPI schema.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from executions.metrics import DatabaseCollector
from flowplatform import metrics
from flowplatform.api.errors import error_response


def _presented_token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@csrf_exempt  # it writes nothing; any method gets the answers below, not a CSRF page
def scrape(request: HttpRequest) -> HttpResponse:
    expected = settings.METRICS_TOKEN
    if not expected:
        return error_response(request, 404, "not_found", "No such endpoint.")
    if not hmac.compare_digest(_presented_token(request).encode(), expected.encode()):
        return error_response(
            request,
            401,
            "unauthorized",
            "Send the metrics token: 'Authorization: Bearer <METRICS_TOKEN>'.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    if request.method not in ("GET", "HEAD"):
        return error_response(
            request,
            405,
            "method_not_allowed",
            f'Method "{request.method}" not allowed.',
            headers={"Allow": "GET, HEAD"},
        )
    body, content_type = metrics.exposition([DatabaseCollector()], request.headers.get("Accept"))
    return HttpResponse(body, content_type=content_type)
