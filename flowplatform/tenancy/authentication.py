"""DRF authentication by `Authorization: Bearer <api key>`, and the permission that requires a key
with the scope of the request (`read` for GET/HEAD/OPTIONS, `write` for the rest)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from flowplatform import logcontext
from flowplatform.exceptions import DomainError
from flowplatform.tenancy.models import ApiKey
from flowplatform.tenancy.services import KEY_PREFIX, authenticate_key

logger = logging.getLogger("flowplatform.auth")


class InsufficientScope(DomainError, exceptions.PermissionDenied):
    """The key lacks the scope the request needs (a read-only key sending a write): a 403
    `insufficient_scope`. Also a DRF PermissionDenied, so an OPTIONS answer just leaves out the
    methods the key may not use."""

    status_code = 403
    code = "insufficient_scope"

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        DomainError.__init__(self, message, details)
        self.detail = exceptions.ErrorDetail(message, code=self.code)


@dataclass(frozen=True)
class ApiClient:
    """request.user for API requests: the key's identity (there is no Django user behind it)."""

    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def actor(self) -> str:
        return self.api_key.default_actor


# A platform key is fp_<prefix>_<secret>; the prefix (8 hex digits) is not secret.
_PUBLIC_PREFIX = re.compile(rf"^{re.escape(KEY_PREFIX)}([0-9a-f]{{8}})_")


def describe_presented_key(raw_key: str) -> str:
    """What a log line may say about a presented key: its public prefix, never any other part
    (a mistyped or foreign secret, say a token of another service, is still a secret)."""
    match = _PUBLIC_PREFIX.match(raw_key.strip())
    return f"key {KEY_PREFIX}{match.group(1)}_…" if match else "a value that is not a platform key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>`. In an API request (flowplatform.api.views.TenantViewSet)
    the key is found by the first statement of the request's transaction, which also scopes
    the transaction to the key's organization (authenticate_key); the view records the key's
    use once the transaction is over."""

    keyword = "bearer"

    def authenticate(self, request: Request) -> tuple[ApiClient, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        if scheme.lower() != self.keyword or not raw_key.strip():
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        api_key = authenticate_key(raw_key.strip())
        if api_key is None:
            logger.warning("authentication failed for %s", describe_presented_key(raw_key))
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        logcontext.bind(organization_id=api_key.organization_id)
        return ApiClient(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class HasApiKey(permissions.BasePermission):
    """An API key is required, and it must have the scope of the request's method."""

    def has_permission(self, request: Request, view: object) -> bool:
        if not isinstance(request.auth, ApiKey):
            raise exceptions.NotAuthenticated(
                "An API key is required: 'Authorization: Bearer <key>'."
            )
        scope = required_scope(request.method)
        if not request.auth.has_scope(scope):
            raise InsufficientScope(
                f"This API key does not have the '{scope}' scope that {request.method} needs.",
                {"required_scope": scope, "key_scopes": list(request.auth.scopes)},
            )
        return True


def required_scope(method: str | None) -> str:
    """`read` for GET, HEAD and OPTIONS; `write` for everything else."""
    return ApiKey.Scope.READ if method in permissions.SAFE_METHODS else ApiKey.Scope.WRITE
