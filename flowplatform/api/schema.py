"""OpenAPI: every operation documents the error answers it can give, in the one error shape."""

from __future__ import annotations

from typing import Any

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from flowplatform.api.serializers import StrictFieldsMixin
from flowplatform.headers import IDEMPOTENCY_HEADER, REPLAYED_HEADER
from flowplatform.idempotency import IDEMPOTENT_METHODS


class ErrorDetailSerializer(serializers.Serializer):
    """Standard error detail structure."""

    code = serializers.CharField(help_text="Machine-readable error code, e.g. `not_found`.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.JSONField(
        help_text="Structured context: for 409 the current record under `current`; "
        "for 422 the list of field errors under `errors`."
    )


class ErrorResponseSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
    request_id = serializers.CharField(
        allow_null=True, help_text="The request's id, also in the X-Request-ID header."
    )

    class Meta:
        ref_name = "ErrorResponse"


class ValidationItemSerializer(serializers.Serializer):
    loc = serializers.ListField(
        child=serializers.JSONField(),
        help_text='Where the problem is, e.g. ["body", "status"] or ["query", "limit"].',
    )
    msg = serializers.CharField(help_text="What is wrong.")
    type = serializers.CharField(help_text="Error type, e.g. `required`, `invalid`.")


class ValidationErrorResponseSerializer(ErrorResponseSerializer):
    detail = ValidationItemSerializer(many=True)

    class Meta:
        ref_name = "ValidationErrorResponse"


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorResponseSerializer, description=description)


ERRORS = {
    "400": _error("Bad Request - Invalid input parameters or request format (e.g. malformed JSON)"),
    "401": _error("Unauthorized - missing, unknown, revoked or expired API key"),
    "403": _error(
        "Forbidden - the API key lacks the scope this request needs (`insufficient_scope`: "
        "`read` for GET, `write` for POST, PUT, PATCH and DELETE; see "
        "`error.details.required_scope`)"
    ),
    "404": _error("Not Found - The requested resource does not exist"),
    "409": _error(
        "Conflict - the row changed since the client read it (optimistic lock on `updated_at`; "
        "the current record is in `error.details.current`), the change violates uniqueness, or "
        f"a request with the same `{IDEMPOTENCY_HEADER}` is still being processed"
    ),
    "411": _error(
        "Length Required - a body sent without Content-Length (`Transfer-Encoding: chunked`)"
    ),
    "413": _error("Payload Too Large - the request body is over the size limit"),
    "415": _error("Unsupported Media Type - the body is not sent as `application/json`"),
    "422": OpenApiResponse(ValidationErrorResponseSerializer, description="Validation Error"),
    "500": _error("Internal Server Error - An unexpected error occurred"),
    "503": _error("Service Unavailable - the database cannot be reached"),
}


IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name=IDEMPOTENCY_HEADER,
    location=OpenApiParameter.HEADER,
    required=False,
    type={"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    description=(
        "Makes a retry safe: 1 to 255 printable ASCII characters, unique per intended change "
        "(a UUID is a good choice); keys are per organization and kept 24 hours by default. "
        "The same key with the same request (method, path, query, body, and the key's identity) "
        "answers the first response again — the same status and body, with header "
        f"`{REPLAYED_HEADER}: true` — without doing the work again. The same key with a "
        "different request is a 422 (`idempotency_key_reused`). While the first request still "
        "runs, a duplicate waits for its result, or gets a 409 "
        "(`idempotency_key_in_progress`) when it takes too long. A 5xx answer is not kept: a "
        "retry with the key does the work."
    ),
)


def _header(description: str, required: bool = True, **schema: object) -> dict:
    return {
        "schema": {"type": "string", **schema},
        "required": required,
        "description": description,
    }


# Headers the middleware and the error handler put on answers (checked by the fuzz test).
REQUEST_ID_RESPONSE_HEADER = _header(
    "The request's id: the client's X-Request-ID when it is a plain token, else a new one "
    "(also `request_id` in error bodies and in the server's logs)."
)
STATUS_RESPONSE_HEADERS = {
    "401": {"WWW-Authenticate": _header('How to authenticate: `Bearer realm="api"`.')},
    "503": {"Retry-After": _header("Seconds to wait before retrying.", pattern="^[0-9]+$")},
}
REPLAYED_RESPONSE_HEADER = _header(
    f"`true` when this is the stored answer to an earlier request with the same "
    f"`{IDEMPOTENCY_HEADER}`.",
    required=False,
    enum=["true"],
)


class AutoSchema(openapi.AutoSchema):
    def get_override_parameters(self) -> list:
        parameters = super().get_override_parameters()
        if self.method.upper() in IDEMPOTENT_METHODS:
            parameters = [*parameters, IDEMPOTENCY_KEY_PARAMETER]
        return parameters

    def _get_response_bodies(self, direction: str = "response") -> dict:
        responses = super()._get_response_bodies(direction)
        method = self.method.upper()
        codes = ["401", "403", "500", "503"]  # 403: a key without the request's scope
        if self.path.rstrip("/").endswith("}") or "{" in self.path:
            codes.append("404")
        if method in {"GET"} and self._is_list_view():
            codes.append("422")  # bad filter, ordering or pagination parameter
        if self.get_override_parameters():
            codes.append("422")  # a bad header or query parameter (e.g. X-Correction-Reason)
        if method in {"POST", "PUT", "PATCH"}:
            codes += ["400", "404", "409", "422"]
            if self.get_request_serializer() is not None:
                codes += ["411", "413", "415"]
        for code in sorted(set(codes)):
            if code not in responses:
                responses[code] = self._get_response_for_code(ERRORS[code], code)
        for code, response in responses.items():
            response["headers"] = {**response.get("headers", {}), **self._headers_for(code)}
        return dict(sorted(responses.items()))

    def _map_serializer(self, serializer: Any, direction: str, bypass_extensions: bool = False):  # type: ignore[no-untyped-def]
        """A request body that refuses unknown fields (StrictFieldsMixin) says so:
        `additionalProperties: false`. (The server also accepts, and ignores, the read-only
        fields a GET returned, so GET → edit → PUT works; README says so.)"""
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        if direction == "request" and isinstance(serializer, StrictFieldsMixin):
            schema["additionalProperties"] = False
        return schema

    def _headers_for(self, code: str) -> dict:
        headers = {
            "X-Request-ID": REQUEST_ID_RESPONSE_HEADER,
            **STATUS_RESPONSE_HEADERS.get(code, {}),
        }
        if self.method.upper() in IDEMPOTENT_METHODS:
            headers[REPLAYED_HEADER] = REPLAYED_RESPONSE_HEADER
        return headers


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "flowplatform.tenancy.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An organization's API key: `Authorization: Bearer fp_…`.",
        }


def seed_paths(result: dict, generator: object, request: object, public: bool) -> dict:
    """Postprocessing hook: paths as the seed pages write them (no trailing slash, UUID ids)."""
    paths = {}
    for path, operations in result["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "id":
                    parameter["schema"] = {"type": "string", "format": "uuid"}
                    parameter.setdefault("description", "The object's UUID.")
        paths[path.rstrip("/") or "/"] = operations
    result["paths"] = paths
    return result


def _health_operation(summary: str, description: str, answers: dict[str, str]) -> dict:
    ok = {
        "type": "object",
        "properties": {"status": {"type": "string"}, "database": {"type": "string"}},
        "required": ["status"],
    }
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    return {
        "get": {
            "operationId": summary.lower(),
            "summary": summary,
            "description": description,
            "tags": ["health"],
            "security": [],
            "responses": {
                code: {
                    "description": text,
                    "content": {"application/json": {"schema": ok if code < "300" else error}},
                    "headers": {"X-Request-ID": REQUEST_ID_RESPONSE_HEADER},
                }
                for code, text in answers.items()
            },
        }
    }


def health_paths(result: dict, generator: object, request: object, public: bool) -> dict:
    """Postprocessing hook: /healthz and /readyz (plain Django views) in the schema too."""
    result["paths"]["/healthz"] = _health_operation(
        "Liveness",
        'The process answers: `{"status": "ok"}`. No key needed; it never touches the database.',
        {"200": "The process is alive."},
    )
    result["paths"]["/readyz"] = _health_operation(
        "Readiness",
        'The database answers: `{"status": "ready", "database": "ok"}`. On a 503 (`not_ready`) '
        "take the process out of the load balancer. No key needed.",
        {"200": "Ready.", "503": "The database cannot be reached (`not_ready`)."},
    )
    return result


ANY_OR_NULL = {"oneOf": [{}, {"type": "null"}]}


def nullable_any_values(result: dict, generator: object, request: object, public: bool) -> dict:
    """Postprocessing hook: a nullable JSON field (`input`, `output`, `tags`, …) is any value.

    For OpenAPI 3.1 drf-spectacular writes it as `oneOf: [{}, {"type": "null"}]`, which no value
    satisfies when it is null (null matches both branches, and oneOf wants exactly one), so the
    schema would forbid the nulls the API sends and accepts. `{}` already allows null.
    """

    def simplify(node: object) -> object:
        if isinstance(node, dict):
            node = {key: simplify(value) for key, value in node.items()}
            if node.get("oneOf") == ANY_OR_NULL["oneOf"]:
                node = {key: value for key, value in node.items() if key != "oneOf"}
            return node
        if isinstance(node, list):
            return [simplify(item) for item in node]
        return node

    return simplify(result)  # type: ignore[return-value]
