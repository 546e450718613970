"""Flows in admin: each version's YAML shown readably; a new definition is validated exactly as
the API validates it (flows.definitions.compile_definition) and saved through flows.services."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html, format_html_join

from flowplatform.admin import (
    ReadOnlyModelAdmin,
    ScopedOrganizationFilter,
    TenantAdmin,
    scope,
)
from flowplatform.exceptions import DomainError, InvalidInput
from flowplatform.tenancy.models import Organization
from flowplatform.tenancy.services import user_actor
from flows import services
from flows.definitions import compile_definition
from flows.models import Flow, FlowVersion


class FlowForm(forms.ModelForm):
    definition = forms.CharField(
        strip=False,
        widget=forms.Textarea(attrs={"rows": 20, "cols": 100, "style": "font-family:monospace"}),
        help_text="YAML. Saving a changed definition adds a new version; earlier versions and "
        "the executions pinned to them are kept.",
    )

    class Meta:
        model = Flow
        fields = ["organization", "name", "description"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.current_version_id:
            self.fields["definition"].initial = self.instance.current_version.definition
            self.fields.pop("organization", None)

    def clean_definition(self) -> str:
        text = self.cleaned_data["definition"]
        if "\r\n" in text and self.instance.pk and self.instance.current_version_id:
            # Browsers send CRLF; keep the stored text when only the line endings differ.
            stored = self.instance.current_version.definition
            if text.replace("\r\n", "\n") == stored.replace("\r\n", "\n"):
                return stored
        text = text.replace("\r\n", "\n")
        try:
            compile_definition(text)
        except InvalidInput as exc:
            raise forms.ValidationError(
                [
                    f"{'.'.join(map(str, loc[2:])) or 'definition'}: {msg}"
                    for loc, msg, _ in exc.errors
                ]
            ) from None
        return text


@admin.register(Flow)
class FlowAdmin(TenantAdmin):
    editable = True
    form = FlowForm
    list_display = ["name", "organization", "current_version", "created_at", "deleted_at"]
    list_filter = [("organization", ScopedOrganizationFilter)]
    list_select_related = ["organization", "current_version"]
    search_fields = ["name"]
    readonly_fields = ["versions", "modified_by", "created_at", "updated_at", "deleted_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._member(request)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        if "organization" in form.base_fields:
            form.base_fields["organization"].queryset = scope(
                Organization.objects.all(), request, "pk"
            )
        return form

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["organization", "name", "description", "definition"]
        return ["name", "description", "definition", *self.readonly_fields]

    @admin.display(description="Versions (newest first)")
    def versions(self, obj: Flow) -> str:
        rows = obj.versions.order_by("-version")
        return format_html_join(
            "",
            '<details{}><summary>version {} · {} · {}</summary><pre style="white-space:pre-wrap">'
            "{}</pre></details>",
            (
                (
                    " open" if v.pk == obj.current_version_id else "",
                    v.version,
                    v.created_by,
                    v.created_at,
                    v.definition,
                )
                for v in rows
            ),
        ) or format_html("-")

    def save_model(self, request: HttpRequest, obj: Flow, form: Any, change: bool) -> None:
        data = form.cleaned_data
        actor = user_actor(request.user)
        try:
            if change:
                services.update_flow(
                    obj,
                    actor=actor,
                    name=data["name"],
                    description=data.get("description", ""),
                    definition=data["definition"] if "definition" in form.changed_data else None,
                )
            else:
                flow = services.create_flow(
                    data["organization"],
                    name=data["name"],
                    description=data.get("description", ""),
                    definition=data["definition"],
                    actor=actor,
                )
                form.instance = flow
                request._flow_pk = flow.pk
        except DomainError as exc:
            request._flow_error = exc.message

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Nothing: the service wrote everything."""

    def _failed(self, request: HttpRequest) -> HttpResponse | None:
        error = getattr(request, "_flow_error", None)
        if error:
            self.message_user(request, f"Not saved: {error}", messages.ERROR)
            return HttpResponseRedirect(request.path)
        return None

    def response_change(self, request: HttpRequest, obj: Flow) -> HttpResponse:
        return self._failed(request) or super().response_change(request, obj)

    def response_add(self, request: HttpRequest, obj: Flow, *args: Any) -> HttpResponse:
        failed = self._failed(request)
        if failed:
            return failed
        return super().response_add(request, Flow.objects.get(pk=request._flow_pk))

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None  # flows record their author (modified_by / created_by) themselves

    log_change = log_addition


@admin.register(FlowVersion)
class FlowVersionAdmin(ReadOnlyModelAdmin):
    list_display = ["flow", "version", "organization", "created_by", "created_at"]
    list_select_related = ["flow", "organization"]
    list_filter = [("organization", ScopedOrganizationFilter)]
    readonly_fields = ["flow", "version", "organization", "created_by", "created_at", "yaml"]
    fields = readonly_fields

    @admin.display(description="Definition")
    def yaml(self, obj: FlowVersion) -> str:
        return format_html('<pre style="white-space:pre-wrap">{}</pre>', obj.definition)
