"""Admin for webhook endpoints (add, change, delete; the secret shown once) and their delivery
log (with "send again"), scoped to the user's organizations like every tenant admin."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from flowplatform.admin import ReadOnlyModelAdmin, ScopedOrganizationFilter, TenantAdmin
from flowplatform.exceptions import DomainError, InvalidInput
from flowplatform.webhooks import services
from flowplatform.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint


class WebhookEndpointForm(forms.ModelForm):
    events = forms.MultipleChoiceField(
        choices=EventType.choices, widget=forms.CheckboxSelectMultiple
    )
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),  # write-only: never shown again
        help_text="Leave empty to generate one (shown once, after saving). A new one replaces "
        "the old one.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["organization", "url", "events", "enabled", "description"]


def _error_messages(exc: DomainError) -> dict[str, str]:
    if not isinstance(exc, InvalidInput):
        return {"__all__": exc.message}
    return {str(loc[1]) if len(loc) > 1 else "__all__": msg for loc, msg, _ in exc.errors}


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TenantAdmin):
    editable = True
    form = WebhookEndpointForm
    list_display = ["url", "organization", "events", "enabled", "created_at"]
    list_filter = ["enabled", ("organization", ScopedOrganizationFilter)]
    search_fields = ["url", "description"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._member(request)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["organization", "created_at", "updated_at"] if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, **kwargs)

        class Validated(form_class):  # the service's checks, as form errors
            def clean(self) -> dict[str, Any]:
                cleaned = super().clean()
                fields = {k: cleaned.get(k) for k in ("url", "events") if k in cleaned}
                fields["secret"] = cleaned.get("secret") or None
                for field, message in _error_messages_for(fields).items():
                    self.add_error(field if field in self.fields else None, message)
                return cleaned

        return Validated

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        data = form.cleaned_data
        fields = {
            "url": data["url"],
            "events": list(data["events"]),
            "enabled": data["enabled"],
            "description": data.get("description") or "",
            "secret": data.get("secret") or None,
        }
        if change:
            services.update_endpoint(obj, **fields)
            return
        created = services.create_endpoint(data["organization"], **fields)
        form.instance = created.endpoint
        request._webhook_created = created

    def response_add(self, request: HttpRequest, obj: Any, *args: Any) -> HttpResponse:
        created = getattr(request, "_webhook_created", None)
        if created is None:
            return super().response_add(request, obj, *args)
        response = TemplateResponse(
            request,
            "admin/webhooks/secret.html",
            {
                **self.admin_site.each_context(request),
                "title": "Webhook endpoint added",
                "endpoint": created.endpoint,
                "secret": created.secret,
                "back": reverse("admin:webhooks_webhookendpoint_changelist"),
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        created = getattr(request, "_webhook_created", None)
        return super().log_addition(request, created.endpoint, message) if created else None

    def delete_model(self, request: HttpRequest, obj: WebhookEndpoint) -> None:
        services.delete_endpoint(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for endpoint in queryset:
            services.delete_endpoint(endpoint)


def _error_messages_for(fields: dict[str, Any]) -> dict[str, str]:
    try:
        services.check_endpoint(**fields)
    except DomainError as exc:
        return _error_messages(exc)
    return {}


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyModelAdmin):
    """The delivery log: what was sent where, how it went; "send again" for any of them."""

    list_display = [
        "event_type",
        "endpoint",
        "state",
        "attempts",
        "latency_ms",
        "last_error",
        "created_at",
        "finished_at",
    ]
    list_filter = ["state", "event__type", ("organization", ScopedOrganizationFilter)]
    list_select_related = ["event", "endpoint"]
    search_fields = ["event__id", "endpoint__url"]
    actions = ["send_again"]

    @admin.display(description="event", ordering="event__type")
    def event_type(self, obj: WebhookDelivery) -> str:
        return f"{obj.event.type} {obj.event_id}"

    def has_send_again_permission(self, request: HttpRequest) -> bool:
        return self._member(request)

    @admin.action(description="Send the selected deliveries again", permissions=["send_again"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        sent, refused = 0, []
        for delivery in queryset:
            try:
                services.send_again(delivery)
                sent += 1
            except DomainError as exc:
                refused.append(exc.message)
        self.message_user(request, f"Sending {sent} delivery(ies) again.")
        for message in refused:
            self.message_user(request, message, messages.WARNING)
