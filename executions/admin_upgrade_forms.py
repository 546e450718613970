"""The forms of the upgrade pages in admin (executions.admin_upgrades): one execution's target
version, many executions' filters; both with "Execute flow" and a reason."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin import helpers
from django.http import HttpRequest

from executions.models import Correction, FlowExecution
from flowplatform.api.serializers import REASON_MAX_LENGTH
from flowplatform.tenancy.services import user_actor
from flows.models import Flow, FlowVersion

EXECUTE_HELP = (
    "Re-run the tasks the upgrade makes stale and start the added ones, on the new version "
    "(early cutoff reuses a result whose input does not change). Unchecked: they are only "
    "marked stale."
)


def reason_field() -> forms.CharField:
    return forms.CharField(
        required=False,
        max_length=REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why (recorded on the correction).",
    )


def _version_choices(flow_id: Any, exclude: Any = None) -> list[tuple[int, str]]:
    rows = list(
        FlowVersion.objects.filter(flow_id=flow_id)
        .order_by("-version")
        .values_list("pk", "version", "created_by", "created_at")
    )
    latest = rows[0][1] if rows else None
    return [
        (v, f"version {v}{' (latest)' if v == latest else ''} · {by} · {at:%Y-%m-%d %H:%M}")
        for pk, v, by, at in rows
        if pk != exclude
    ]


class UpgradeForm(forms.Form):
    """One execution: the version to move to, execute flow, reason (and the preview token)."""

    to_version = forms.TypedChoiceField(coerce=int, label="Target version")
    execute_flow = forms.BooleanField(required=False, help_text=EXECUTE_HELP)
    reason = reason_field()
    preview_token = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, flow_execution: FlowExecution, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = _version_choices(flow_execution.flow_id, flow_execution.flow_version_id)
        self.fields["to_version"].choices = choices
        if choices:
            self.fields["to_version"].initial = choices[0][0]

    def upgrade_kwargs(self, request: HttpRequest) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "flow_version": data["to_version"],
            "actor": user_actor(request.user),
            "execute_flow": data["execute_flow"],
            "reason": data["reason"].strip() or None,
            "source": Correction.Source.ADMIN,
        }


class UpgradeJobForm(forms.Form):
    """Many executions: which of the flow's executions, execute flow, reason."""

    from_version = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        help_text="Only executions pinned to this version (blank: any version).",
    )
    statuses = forms.MultipleChoiceField(
        required=False,
        choices=[c for c in FlowExecution.Status.choices if c[0] != FlowExecution.Status.DELETED],
        widget=forms.CheckboxSelectMultiple,
        help_text="Only executions in these statuses (none ticked: any status).",
    )
    created_after = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Only executions created at or after this time.",
    )
    created_before = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Only executions created before this time.",
    )
    execute_flow = forms.BooleanField(required=False, help_text=EXECUTE_HELP)
    reason = reason_field()
    dry_run_job = forms.UUIDField(required=False, widget=forms.HiddenInput)

    def __init__(self, flow: Flow, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["from_version"].choices = [("", "any version"), *_version_choices(flow.pk)]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        after, before = data.get("created_after"), data.get("created_before")
        if after and before and after >= before:
            self.add_error("created_before", "Must be later than “created after”.")
        return data

    def job_kwargs(self, request: HttpRequest, version: FlowVersion) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "actor": user_actor(request.user),
            "to_version": version.version,
            **self.filters(),
            "execute_flow": data["execute_flow"],
            "reason": data["reason"].strip() or None,
            "source": Correction.Source.ADMIN,
        }

    def filters(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "from_version": data["from_version"],
            "statuses": data["statuses"] or None,
            "created_after": data["created_after"],
            "created_before": data["created_before"],
        }


def admin_form(form: forms.Form | None) -> Any:
    """The form laid out as admin's change forms are (one fieldset of its visible fields)."""
    names = [field.name for field in form.visible_fields()] if form else []
    return form and helpers.AdminForm(form, [(None, {"fields": names})], {})


def confirm_data(request: HttpRequest, **values: str) -> Any:
    data = request.POST.copy()
    for name, value in values.items():
        data[name] = value
    return data
