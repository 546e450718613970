"""DRF authentication by `Authorization: Bearer <api key>` and the permission that requires it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from flowplatform.tenancy.models import ApiKey
from flowplatform.tenancy.services import authenticate_key

logger = logging.getLogger("flowplatform.auth")


@dataclass(frozen=True)
class ApiClient:
    """request.user for API requests: the key's identity (there is no Django user behind it)."""

    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def actor(self) -> str:
        return self.api_key.default_actor


class ApiKeyAuthentication(authentication.BaseAuthentication):
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
            # Never log the presented key; its first characters say which prefix was tried.
            logger.warning("authentication failed for key starting %r", raw_key.strip()[:11])
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        return ApiClient(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class HasApiKey(permissions.BasePermission):
    def has_permission(self, request: Request, view: object) -> bool:
        if not isinstance(request.auth, ApiKey):
            raise exceptions.NotAuthenticated(
                "An API key is required: 'Authorization: Bearer <key>'."
            )
        return True
