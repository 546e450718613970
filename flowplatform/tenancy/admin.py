from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from flowplatform.admin import ReadOnlyModelAdmin
from flowplatform.tenancy.models import ApiKey, IdempotencyKey, Organization
from flowplatform.tenancy.services import revoke_api_key


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued by `manage.py create_api_key` (secret shown once); here: view, revoke."""

    list_display = [
        "prefix",
        "organization",
        "name",
        "kind",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["kind", "organization"]
    search_fields = ["prefix", "name"]
    readonly_fields = [f.name for f in ApiKey._meta.fields]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            revoke_api_key(api_key)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyModelAdmin):
    list_display = ["key", "organization", "method", "path", "state", "response_status"]
    list_filter = ["state", "method", "organization"]
    search_fields = ["key", "path"]
    date_hierarchy = "created_at"
