"""The task execution change form is a correction: its form (output and error in the JSON
editor, admin_json_editor), its live preview (/admin/executions/taskexecution/<id>/
correction-preview/) and its save.

The save calls correct_task_execution as PUT does. The live preview (executions/static/
executions/correction_preview.js) posts the form's current values to the preview view, which
dry-runs them (preview_correction) and answers an HTML fragment: the stale set, what runs,
what is reused, the predicted values, and the preview token, which the script puts in the
form's hidden `preview_token`. A save carrying a token applies only what that preview showed
(else it is refused with a fresh preview); without JavaScript there is no token and the save
works as PUT without one.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from executions import selectors, transitions
from executions.admin_json_editor import json_field
from executions.corrections import task_executions
from executions.corrections.preview import PreviewOutdated
from executions.engine import staleness
from executions.executors import get_executor
from executions.models import Correction, TaskExecution
from flowplatform.api.serializers import REASON_MAX_LENGTH
from flowplatform.canonical import same_json
from flowplatform.exceptions import ConcurrentUpdate, DomainError, InvalidInput
from flowplatform.tenancy.services import user_actor
from flows.definitions import spec_for

PREVIEW_FRAGMENT = "admin/executions/taskexecution/correction_preview.html"
PREVIEW_FIELDSET = "What a save does"  # the live preview is shown right after it
ACTIONS = {"run": "runs", "reuse": "reuses its result", "unknown": "runs; result unknown"}
OUTDATED = (
    "Not saved: the flow execution changed since the preview you saw (someone corrected a task "
    "it covers, or a task ran), so nothing was applied. Review the fresh preview below and "
    "save again."
)


def task_execution_url(pk: Any) -> str:
    return reverse("admin:executions_taskexecution_change", args=[pk])


def of_iteration(number: int | None) -> str:
    return "" if number is None else f" (iteration {number})"


class TaskExecutionCorrectionForm(forms.ModelForm):
    """status / output / error of the attempt, plus what PUT takes in its query and body, and
    the token of the preview the person saw (blank without one)."""

    output = json_field(rows=10)
    error = json_field(rows=3)
    execute_flow = forms.BooleanField(
        required=False,
        help_text="Re-run the tasks this correction makes stale, with the corrected inputs "
        "(unchecked: they are only marked stale).",
    )
    reason = forms.CharField(
        required=False,
        max_length=REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why (recorded on the correction).",
    )
    lock = forms.CharField(widget=forms.HiddenInput, required=False)
    preview_token = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = TaskExecution
        fields = ["status", "output", "error"]

    request: HttpRequest  # set by TaskExecutionCorrections.get_form
    outdated = False  # set by clean: the posted preview token is not the fresh preview's

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["lock"] = self.instance.updated_at.isoformat()
        if self.instance.pk and "status" in self.fields:  # (absent for a view-only user)
            # Only the statuses a person may move it to (and where it is).
            current = self.instance.status
            spec = spec_for(self.instance.flow_execution.flow_version)
            task = spec.tasks.get(self.instance.task_name)
            human = task is not None and get_executor(task.type).waits_for_person
            self.fields["status"].choices = [
                (value, label)
                for value, label in self.fields["status"].choices
                if value == current or transitions.person_may(current, value, human_task=human)
            ]

    def changes(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in ("status", "output", "error")}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors or not self.instance.pk:
            return cleaned
        try:
            self.expected_updated_at = datetime.fromisoformat(cleaned.get("lock") or "")
        except ValueError:
            raise forms.ValidationError("The form is missing its version; reload it.") from None
        stored = TaskExecution.objects.get(pk=self.instance.pk)
        try:  # the same checks as PUT, without writing anything
            self.preview = task_executions.preview_correction(stored, **self.correction_kwargs())
        except ConcurrentUpdate:
            raise forms.ValidationError(
                "Someone changed this task execution since you opened it (it was modified at "
                f"{stored.updated_at:%Y-%m-%d %H:%M:%S} by {stored.modified_by}). Reload the "
                "page to see the current values; your changes were not saved."
            ) from None
        except InvalidInput as exc:
            for loc, msg, _ in exc.errors:
                field = loc[-1] if loc and loc[-1] in self.fields else None
                self.add_error(field, msg)
            return cleaned
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None
        seen = cleaned.get("preview_token")
        if seen and seen != self.preview.preview_token:
            # What the person saw is not what a save would do now: show the fresh preview,
            # and carry its token, so saving again applies what is shown then.
            self.outdated = True
            self.data = self.data.copy()
            self.data[self.add_prefix("preview_token")] = self.preview.preview_token
            raise forms.ValidationError(OUTDATED)
        return cleaned

    def correction_kwargs(self) -> dict[str, Any]:
        return {
            "changes": self.changes(),
            "identity": {},
            "expected_updated_at": self.expected_updated_at,
            "actor": user_actor(self.request.user),
            "execute_flow": self.cleaned_data.get("execute_flow", False),
            "reason": self.cleaned_data.get("reason", "").strip(),
            "source": Correction.Source.ADMIN,
        }


def preview_context(form: TaskExecutionCorrectionForm) -> dict[str, Any]:
    """What the preview fragment shows: the form's errors (nothing to preview), else the stale
    set in dependency order (each with its current attempt) and, per task the prediction
    covers, what it does and its predicted input and output. One query besides the dry run."""
    if not hasattr(form, "preview"):
        errors = [
            (None if name == "__all__" else name, message)
            for name, texts in form.errors.items()
            for message in texts
        ]
        return {
            "errors": errors or [(None, "Nothing to preview.")],
            "summary": "Nothing to preview: this correction cannot be saved as it is.",
        }
    result = form.preview
    stale = result.stale_tasks
    predictions = result.predictions
    names = [*stale, *(name for name in predictions if name not in stale)]
    fe = result.task_execution.flow_execution
    latest = selectors.latest_attempts(fe, names) if names else {}
    current = selectors.current_outputs(fe, names) if predictions else {}
    rows = []
    for name in names:
        predicted = predictions.get(name, {})
        row = {
            "name": name,
            "attempt": latest.get(name),
            "iterations": result.stale_iterations.get(name, []),
            "stale": name in stale,
            "action": predicted.get("action"),
            "action_label": ACTIONS.get(predicted.get("action"), "not predicted"),
        }
        for side in ("input", "output"):
            if side in predicted:
                row[side] = json.dumps(predicted[side], ensure_ascii=False, indent=2)
        if "output" in predicted and name in current:
            row["same_output"] = same_json(predicted["output"], current[name])
        rows.append(row)
    by_action = {action: [r["name"] for r in rows if r["action"] == action] for action in ACTIONS}
    return {
        "result": result,
        "rows": rows,
        "execute_flow": form.cleaned_data.get("execute_flow", False),
        "runs": by_action["run"] + by_action["unknown"],
        "reused": by_action["reuse"],
        "predicted": bool(predictions),
        "summary": (
            f"A save marks {len(stale)} task(s) stale"
            + (f": {', '.join(stale)}." if stale else ".")
        ),
    }


class TaskExecutionCorrections:
    """TaskExecutionAdmin's correction: the form, the static and the live preview, the save."""

    admin_site: Any
    form = TaskExecutionCorrectionForm

    class Media:
        js = [forms.Script("executions/correction_preview.js", defer=True)]
        css = {"all": ["executions/correction_form.css"]}

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.correction_preview_view)
        name = "executions_taskexecution_correction_preview"
        return [path("<path:object_id>/correction-preview/", view, name=name), *super().get_urls()]  # type: ignore[misc]

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)  # type: ignore[misc]
        return type(form.__name__, (form,), {"request": request})

    def correction_preview_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The dry run of the posted form (never a save): the preview fragment, also for a
        refused correction (its reason). Not found, forbidden and non-POST as the change form."""
        return require_POST(self._preview)(request, object_id)

    def _preview(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if obj is None:
            raise Http404("No such task execution.")
        if not self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        data = request.POST.copy()
        data.pop("preview_token", None)  # a preview is always of the state now
        form = self.get_form(request, obj, change=True)(data, instance=obj)
        form.is_valid()
        return TemplateResponse(request, PREVIEW_FRAGMENT, preview_context(form))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> Any:
        if obj is not None and obj.pk:
            form = context["adminform"].form
            context.update(
                correction_preview_url=reverse(
                    "admin:executions_taskexecution_correction_preview", args=[obj.pk]
                ),
                correction_preview_fieldset=PREVIEW_FIELDSET,
                correction_preview_fragment=(
                    render_to_string(PREVIEW_FRAGMENT, preview_context(form), request)
                    if form.outdated
                    else ""
                ),
            )
        return super().render_change_form(  # type: ignore[misc]
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    @admin.display(description="Tasks a changed output marks stale")
    def correction_preview(self, obj: TaskExecution) -> str:
        spec = spec_for(obj.flow_execution.flow_version)
        if obj.task_name not in spec.tasks:
            return "-"
        downstream = spec.dag.descendants(obj.task_name)
        latest = selectors.latest_attempts(obj.flow_execution, downstream)
        going_stale = staleness.stale_candidates(spec, latest)
        already = [n for n in spec.dag.in_order(latest) if n not in going_stale]
        if not latest:
            headline = "Nothing downstream has run: a changed output marks nothing stale."
        else:
            headline = (
                f"{len(going_stale)} task(s) downstream would be marked stale"
                + (f"; {len(already)} already stale or deleted" if already else "")
                + "."
            )
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a> ({}{})</li>',
            (
                (
                    task_execution_url(latest[n].id),
                    n,
                    latest[n].status,
                    " → stale" if n in going_stale else ", stays so",
                )
                for n in spec.dag.in_order(latest)
            ),
        )
        return format_html(
            '<div id="correction-preview">{}<ul>{}</ul>{}</div>',
            headline,
            items,
            "With “Execute flow” every stale task downstream runs again with the corrected "
            "inputs; a task whose input does not change reuses its result (early cutoff).",
        )

    @admin.display(description="Input")
    def input_json(self, obj: TaskExecution) -> str:
        text = json.dumps(obj.input, ensure_ascii=False, indent=2)
        return format_html('<pre class="json-view" tabindex="0">{}</pre>', text)

    def save_model(self, request: HttpRequest, obj: TaskExecution, form: Any, change: bool) -> None:
        if not change:
            raise PermissionDenied
        stored = TaskExecution.objects.get(pk=obj.pk)
        # The token of the preview the person saw (clean checked it is still the state's);
        # without one (no JavaScript), the one of the form's own check moments ago.
        token = form.cleaned_data.get("preview_token") or form.preview.preview_token
        try:
            result = task_executions.correct_task_execution(
                stored, preview_token=token, **form.correction_kwargs()
            )
        except PreviewOutdated:  # something changed between validation and save
            request._correction_error = OUTDATED.removeprefix("Not saved: ")
            return
        except DomainError as exc:
            request._correction_error = exc.message
            return
        request._correction_result = result

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Nothing: the correction service wrote everything."""

    def response_change(self, request: HttpRequest, obj: TaskExecution) -> HttpResponse:
        error = getattr(request, "_correction_error", None)
        if error:
            self.message_user(request, f"Not saved: {error}", messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.path)
        result = request._correction_result
        self.message_user(  # type: ignore[attr-defined]
            request,
            f"Corrected {obj.task_name}{of_iteration(obj.iteration)}: "
            f"{len(result.stale_tasks)} task(s) marked stale"
            + (f" ({', '.join(result.stale_tasks)})" if result.stale_tasks else "")
            + (
                f"; started {', '.join(a.task_name for a in result.started)}"
                if result.started
                else ""
            )
            + ".",
        )
        return super().response_change(request, obj)  # type: ignore[misc]

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if getattr(request, "_correction_error", None):
            return None  # nothing was changed
        return super().log_change(request, obj, message)  # type: ignore[misc]
