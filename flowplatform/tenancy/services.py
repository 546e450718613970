"""Creating organizations and API keys, and resolving a presented key to its organization."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from flowplatform import rls
from flowplatform.exceptions import Conflict, InvalidInput, NotFound
from flowplatform.tenancy.models import ApiKey, IdempotencyKey, Organization, UserIdentity

KEY_PREFIX = "fp_"
# The seed allows: 'system', a user UUID, or an integration identifier ('integration', …).
MODIFIED_BY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,199}$")
ACTOR_RULE = (
    "must be 'system', a UUID, or an identifier of letters, digits and ._:@- "
    "(at most 200 characters)"
)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # the full key; shown once, never stored


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_organization(slug: str, name: str | None = None) -> Organization:
    if not slug or slugify(slug) != slug:
        raise InvalidInput.field("slug", "use lowercase letters, digits and hyphens")
    if Organization.objects.filter(slug=slug).exists():
        raise Conflict(f"organization '{slug}' already exists")
    return Organization.objects.create(slug=slug, name=name or slug)


def get_organization(slug: str) -> Organization:
    try:
        return Organization.objects.get(slug=slug)
    except Organization.DoesNotExist:
        raise NotFound(f"organization '{slug}' does not exist") from None


@transaction.atomic
def create_api_key(
    organization: Organization,
    name: str = "",
    kind: str = ApiKey.Kind.SERVICE,
    user_id: uuid.UUID | None = None,
    expires_at: timezone.datetime | None = None,
    scopes: Iterable[str] | None = None,
) -> IssuedKey:
    """Issue a key; `scopes` (default: all) is any non-empty set of 'read' and 'write'."""
    if kind not in ApiKey.Kind.values:
        raise InvalidInput.field("kind", f"must be one of {', '.join(ApiKey.Kind.values)}")
    if kind == ApiKey.Kind.USER and user_id is None:
        raise InvalidInput.field("user_id", "a user key needs the user's UUID")
    scopes = valid_scopes(ApiKey.Scope.values if scopes is None else scopes)
    prefix = secrets.token_hex(4)
    raw_key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name,
        prefix=prefix,
        key_hash=hash_key(raw_key),
        kind=kind,
        user_id=user_id if kind == ApiKey.Kind.USER else None,
        expires_at=expires_at,
        scopes=scopes,
    )
    return IssuedKey(api_key=api_key, secret=raw_key)


def valid_scopes(scopes: Iterable[str]) -> list[str]:
    """`scopes` as stored: known, without repeats, in a fixed order; at least one."""
    requested = set(scopes) if not isinstance(scopes, str) else {scopes}
    unknown = sorted(map(str, requested - set(ApiKey.Scope.values)))
    if unknown or not requested:
        raise InvalidInput.field(
            "scopes",
            f"must be one or more of {', '.join(ApiKey.Scope.values)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
        )
    return [scope for scope in ApiKey.Scope.values if scope in requested]


def revoke_api_key(api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def authenticate_key(raw_key: str) -> ApiKey | None:
    """The active key matching `raw_key`, with its organization, or None.

    On PostgreSQL one statement, which also scopes the current transaction (an API request's,
    rls.key_scope) to the key's organization (rls.scope_to_api_key). Nothing is written: the
    request records the key's use afterwards (`record_key_usage`).
    """
    if not raw_key.startswith(KEY_PREFIX):
        return None
    prefix, _, secret = raw_key[len(KEY_PREFIX) :].partition("_")
    if not prefix or not secret:
        return None
    digest = hash_key(raw_key)
    api_key = rls.scope_to_api_key(ApiKey, prefix, digest)
    # PostgreSQL's statement already refused a wrong digest or an inactive key; SQLite's read
    # did not, and the rule is the same for both.
    if api_key is None or not hmac.compare_digest(api_key.key_hash, digest):
        return None
    return api_key if api_key.is_active() else None


def record_key_usage(api_key: ApiKey, now: datetime | None = None) -> None:
    """Write `last_used_at` when the last write is FLOWPLATFORM_KEY_USAGE_RESOLUTION_SECONDS
    old or more, so reads do not become writes: at most once per period, whatever the number
    of processes. A transaction of its own, after the request's (so a request's answer never
    waits for another's lock on the key's row, and a rolled-back answer still counts)."""
    now = now or timezone.now()
    due_before = now - timedelta(seconds=settings.FLOWPLATFORM_KEY_USAGE_RESOLUTION_SECONDS)
    if api_key.last_used_at is not None and api_key.last_used_at > due_before:
        return
    with rls.tenant_scope(api_key.organization_id):
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=due_before), pk=api_key.pk
        ).update(last_used_at=now)
    api_key.last_used_at = now


def resolve_actor(api_key: ApiKey, supplied: str | None) -> str:
    """The `modified_by` to record for a change made with `api_key`.

    A user key always acts as its user; a service key may name the end user or integration it
    acts for ('system', a UUID, or a short identifier); without one, the key itself is recorded.
    """
    if api_key.kind == ApiKey.Kind.USER:
        if supplied is not None and supplied != str(api_key.user_id):
            raise InvalidInput.field(
                "modified_by", "a user key can only act as its own user", "actor_mismatch"
            )
        return str(api_key.user_id)
    if supplied is None:
        return api_key.default_actor
    return valid_actor(supplied)


def valid_actor(text: str, field: str = "modified_by") -> str:
    """`text` if a caller may name it as `modified_by` (the API's body field, a command's
    --actor), else InvalidInput at `field`."""
    if not MODIFIED_BY_PATTERN.match(text):
        raise InvalidInput.field(field, ACTOR_RULE)
    return text


def purge_expired_keys(now: datetime | None = None) -> int:
    """Delete every expired Idempotency-Key record; returns how many. Expired keys are never
    replayed anyway."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def user_actor(user: Any) -> str:
    """`modified_by` for a Django (admin) user's changes: the user's stable UUID
    (UserIdentity), created on their first change. One query, cached on the user object (one
    per request)."""
    cached = getattr(user, "_flowplatform_actor", None)
    if cached is None:
        identity, _ = UserIdentity.objects.get_or_create(user=user)
        cached = user._flowplatform_actor = str(identity.uuid)
    return cached
