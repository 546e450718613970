"""Organizations (tenants), their API keys, and the abstract base of every tenant-owned row."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Organization(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class TenantOwned(models.Model):
    """A row that belongs to exactly one organization; every query filters on it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=True,
        help_text="ID of the organization owning this row. Used for tenant isolation.",
    )

    class Meta:
        abstract = True


def all_scopes() -> list[str]:
    """A key's scopes unless it is issued with fewer: it may read and write."""
    return list(ApiKey.Scope.values)


class ApiKey(models.Model):
    """An organization's API key. Only a SHA-256 digest of the key is stored.

    Keys are 256-bit random secrets, so a fast digest is as strong as a slow KDF here and keeps
    authentication to one indexed lookup by the non-secret `prefix`.

    `scopes` is a set: `read` allows GET, HEAD and OPTIONS; `write` allows POST, PUT, PATCH and
    DELETE. A key needs the scope of every request it makes (a write-only key cannot list).
    """

    class Kind(models.TextChoices):
        SERVICE = "service", "Service (an integration)"
        USER = "user", "User (acts as one person)"

    class Scope(models.TextChoices):
        READ = "read", "Read (GET, HEAD, OPTIONS)"
        WRITE = "write", "Write (POST, PUT, PATCH, DELETE)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SERVICE)
    user_id = models.UUIDField(
        null=True, blank=True, help_text="For user keys: the user every change is attributed to."
    )
    scopes = models.JSONField(
        default=all_scopes,
        help_text="What the key may do: a list of 'read' (GET, HEAD, OPTIONS) and/or 'write' "
        "(POST, PUT, PATCH, DELETE).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind="service") | models.Q(user_id__isnull=False),
                name="apikey_user_key_has_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}:{self.prefix} ({self.name or self.kind})"

    def is_active(self, now: timezone.datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def default_actor(self) -> str:
        """What `modified_by` records when a request does not name an actor."""
        return str(self.user_id) if self.kind == self.Kind.USER else f"api-key:{self.prefix}"


class IdempotencyKey(TenantOwned):
    """One `Idempotency-Key` of one organization: the request it was first used for and, once
    that request finished, its response, replayed to every retry until `expires_at`.

    The body is kept as the exact text that was sent, not as JSON: PostgreSQL's jsonb reorders
    object keys, and a replay must be the same bytes as the first answer.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=2000)
    fingerprint = models.CharField(
        max_length=64, help_text="SHA-256 of the request: method, path, query, body, actor."
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_content_type = models.CharField(max_length=200, blank=True)
    response_body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "key"], name="idempotencykey_unique_per_organization"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.method} {self.path}, {self.state})"


class Membership(models.Model):
    """A Django (admin) user's access to one organization's data in admin.

    Superusers see every organization; a staff user sees, and may correct, only the data of
    the organizations they are a member of.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "user"]
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization}"


class UserIdentity(models.Model):
    """The UUID a Django (admin) user is recorded as: `modified_by` names a user by UUID (the
    seed's contract), and Django's user ids are integers that a new database reuses. Created
    on the user's first change in admin."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identity"
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    def __str__(self) -> str:
        return f"{self.user} is {self.uuid}"
