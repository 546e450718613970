from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from flowplatform.admin import (
    ReadOnlyModelAdmin,
    ScopedOrganizationFilter,
    TenantAdmin,
    organization_ids,
)
from flowplatform.exceptions import InvalidInput
from flowplatform.tenancy.models import ApiKey, IdempotencyKey, Membership, Organization
from flowplatform.tenancy.services import create_api_key, revoke_api_key


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(TenantAdmin):
    """Superusers manage organizations and their members; staff see their own."""

    organization_field = "pk"
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]

    def _sees(self, request: HttpRequest, obj: Any) -> bool:
        ids = organization_ids(request)
        return ids is None or obj.pk in ids

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        initial=ApiKey.Scope.values,
        widget=forms.CheckboxSelectMultiple,
        help_text="A read-only key is refused (403) every POST, PUT, PATCH and DELETE.",
    )

    class Meta:
        model = ApiKey
        fields = ["organization", "name", "kind", "user_id", "scopes", "expires_at"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("kind") == ApiKey.Kind.USER and not cleaned.get("user_id"):
            self.add_error("user_id", "A user key needs the user's UUID.")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(TenantAdmin):
    """Issue a key (its secret is shown once, on the page after saving), view, revoke."""

    list_display = [
        "prefix",
        "organization",
        "name",
        "kind",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["kind", ("organization", ScopedOrganizationFilter)]
    search_fields = ["prefix", "name"]
    autocomplete_fields = ["organization"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._member(request)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self._member(request)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return [f.name for f in ApiKey._meta.fields if f.name != "key_hash"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return list(ApiKeyCreateForm.Meta.fields)
        return self.get_readonly_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return  # issued keys do not change; revoke them instead
        data = form.cleaned_data
        try:
            issued = create_api_key(
                data["organization"],
                name=data.get("name") or "",
                kind=data["kind"],
                user_id=data.get("user_id"),
                expires_at=data.get("expires_at"),
                scopes=data["scopes"],
            )
        except InvalidInput as exc:
            request._issue_error = exc.message
            return
        form.instance = issued.api_key
        request._issued = issued

    def response_add(self, request: HttpRequest, obj: ApiKey, *args: Any) -> HttpResponse:
        issued = getattr(request, "_issued", None)
        if issued is None:
            self.message_user(
                request, getattr(request, "_issue_error", "Not issued."), messages.ERROR
            )
            return super().response_post_save_add(request, obj)
        response = TemplateResponse(
            request,
            "admin/tenancy/apikey/issued.html",
            {
                **self.admin_site.each_context(request),
                "title": "API key issued",
                "api_key": issued.api_key,
                "secret": issued.secret,
                "back": reverse("admin:tenancy_apikey_changelist"),
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        issued = getattr(request, "_issued", None)
        return super().log_addition(request, issued.api_key, message) if issued else None

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            revoke_api_key(api_key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyModelAdmin):
    list_display = ["key", "organization", "method", "path", "state", "response_status"]
    list_filter = ["state", "method", ("organization", ScopedOrganizationFilter)]
    search_fields = ["key", "path"]
    date_hierarchy = "created_at"
