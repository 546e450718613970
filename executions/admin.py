"""Admin for flow executions, task executions and corrections.

Operators correct a task execution here exactly as through PUT /task-executions/{id}: the
change form's save calls executions.corrections.task_executions.correct_task_execution
(transition rules, optimistic lock, stale marking, optional re-execution, a Correction with
source `admin`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from simple_history.admin import SimpleHistoryAdmin

from executions import selectors, services, transitions
from executions.admin_upgrades import FlowExecutionUpgrades
from executions.corrections import task_executions
from executions.dag_svg import iteration_line, render_dag_svg
from executions.engine import staleness
from executions.executors import get_executor
from executions.models import Correction, FlowExecution, TaskExecution
from flowplatform.admin import (
    ReadOnlyModelAdmin,
    ScopedHistoryMixin,
    ScopedOrganizationFilter,
    TenantAdmin,
)
from flowplatform.api.serializers import REASON_MAX_LENGTH
from flowplatform.exceptions import ConcurrentUpdate, DomainError, InvalidInput
from flowplatform.tenancy.services import user_actor
from flows.definitions import spec_for


def task_execution_url(pk: Any) -> str:
    return reverse("admin:executions_taskexecution_change", args=[pk])


NAMING = ["task_name", "task_execution_idx", "iteration"]  # what names an attempt in a list


class TaskExecutionInline(admin.TabularInline):
    model = TaskExecution
    fields = [*NAMING, "status", "modified_by", "updated_at"]
    readonly_fields = fields
    ordering = ["task_name", "task_execution_idx"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(FlowExecution)
class FlowExecutionAdmin(FlowExecutionUpgrades, TenantAdmin):
    list_display = ["id", "flow", "organization", "status", "created_at", "updated_at"]
    list_filter = ["status", ("organization", ScopedOrganizationFilter)]
    list_select_related = ["flow", "organization"]
    search_fields = ["flow__name"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "dag",
        *(f.name for f in FlowExecution._meta.fields if f.name != "reexecuted_at"),
    ]
    fields = readonly_fields
    inlines = [TaskExecutionInline]
    actions = ["reexecute_flow", "reexecute_stale"]

    @admin.display(description="DAG (latest attempt of each task)")
    def dag(self, obj: FlowExecution) -> str:
        spec = spec_for(obj.flow_version)
        latest = selectors.latest_attempts(obj)
        return mark_safe(  # noqa: S308 - render_dag_svg escapes every name and value
            '<div style="overflow:auto;max-width:100%">'
            + render_dag_svg(
                spec,
                {name: a.status for name, a in latest.items()},
                lambda task: task_execution_url(latest[task].id) if task in latest else None,
                {name: iteration_line(a.members) for name, a in latest.items() if a.members},
            )
            + "</div>"
        )

    def has_correct_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def _reexecute(self, request: HttpRequest, queryset: QuerySet, only_stale: bool) -> None:
        done = 0
        for flow_execution in queryset.select_related("flow_version"):
            try:
                services.reexecute_flow_execution(
                    flow_execution, actor=user_actor(request.user), only_stale=only_stale
                )
                done += 1
            except DomainError as exc:
                self.message_user(request, f"{flow_execution.pk}: {exc.message}", messages.ERROR)
        if done:
            what = "stale tasks of" if only_stale else "every task of"
            self.message_user(request, f"Re-executing {what} {done} flow execution(s).")

    @admin.action(description="Re-execute the whole flow", permissions=["correct"])
    def reexecute_flow(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._reexecute(request, queryset, only_stale=False)

    @admin.action(description="Re-execute only the stale tasks", permissions=["correct"])
    def reexecute_stale(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._reexecute(request, queryset, only_stale=True)


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


class StrictJSONDecoder(json.JSONDecoder):
    """JSON as the API accepts it: no NaN or Infinity (the database cannot store them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "parse_constant": _no_constant})


class TaskExecutionCorrectionForm(forms.ModelForm):
    """status / output / error of the attempt, plus what PUT takes in its query and body."""

    output = forms.JSONField(
        required=False, decoder=StrictJSONDecoder, widget=forms.Textarea(attrs={"rows": 8})
    )
    error = forms.JSONField(
        required=False, decoder=StrictJSONDecoder, widget=forms.Textarea(attrs={"rows": 3})
    )
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

    class Meta:
        model = TaskExecution
        fields = ["status", "output", "error"]

    request: HttpRequest  # set by TaskExecutionAdmin.get_form

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["lock"] = self.instance.updated_at.isoformat()
        if self.instance.pk:  # only the statuses a person may move it to (and where it is)
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
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from None
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


class IterationFilter(admin.SimpleListFilter):
    """Attempts with or without an iteration, or of one iteration (?iteration=N, below 10**9)."""

    title = parameter_name = "iteration"
    number = re.compile("0|[1-9][0-9]{0,8}")

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value() or ""
        exact = [(value, f"Iteration {value}")] if self.number.fullmatch(value) else []
        return [("any", "Has an iteration"), ("none", "No iteration"), *exact]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in ("any", "none"):
            return queryset.filter(iteration__isnull=value == "none")
        if value is not None and not self.number.fullmatch(value):
            raise IncorrectLookupParameters(f"iteration: {value!r} is not an iteration")
        return queryset if value is None else queryset.filter(iteration=int(value))


def _of_iteration(number: int | None) -> str:
    return "" if number is None else f" (iteration {number})"


@admin.register(TaskExecution)
class TaskExecutionAdmin(ScopedHistoryMixin, SimpleHistoryAdmin, TenantAdmin):
    editable = True
    form = TaskExecutionCorrectionForm
    list_display = [*NAMING, "status", "flow_execution", "modified_by"]
    list_filter = ["status", IterationFilter, ("organization", ScopedOrganizationFilter)]
    list_select_related = ["flow_execution__flow"]
    search_fields = ["task_name"]
    readonly_fields = [
        "correction_preview",
        "stale_cause",
        "id",
        "organization",
        "flow_execution",
        *NAMING,
        "input",
        "reused_from",
        "modified_by",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["flow_execution", *NAMING, "input"]}),
        (
            "Correction",
            {"fields": ["status", "output", "error", "execute_flow", "reason", "lock"]},
        ),
        ("What a save does", {"fields": ["correction_preview", "stale_cause"]}),
        (
            "Record",
            {"fields": ["id", "organization", "reused_from", "modified_by", "created_at"]},
        ),
        (None, {"fields": ["updated_at"]}),
    ]

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)
        return type(form.__name__, (form,), {"request": request})

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

    @admin.display(description="Why it is stale")
    def stale_cause(self, obj: TaskExecution) -> str:
        if obj.status != TaskExecution.Status.STALE or not obj.stale_reason:
            return "-"
        return format_html(
            "{} — {} {}{} by {} at {}",
            obj.stale_reason,
            "correction of" if obj.stale_correction_id else "upstream",
            obj.stale_upstream_task or "-",
            _of_iteration(obj.stale_upstream_iteration),
            obj.stale_by,
            obj.stale_at,
        )

    def save_model(self, request: HttpRequest, obj: TaskExecution, form: Any, change: bool) -> None:
        if not change:
            raise PermissionDenied
        stored = TaskExecution.objects.get(pk=obj.pk)
        kwargs = form.correction_kwargs()
        try:
            result = task_executions.correct_task_execution(
                stored, preview_token=form.preview.preview_token, **kwargs
            )
        except DomainError as exc:  # something changed between validation and save
            request._correction_error = exc.message
            return
        request._correction_result = result

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        """Nothing: the correction service wrote everything."""

    def response_change(self, request: HttpRequest, obj: TaskExecution) -> HttpResponse:
        error = getattr(request, "_correction_error", None)
        if error:
            self.message_user(request, f"Not saved: {error}", messages.ERROR)
            return HttpResponseRedirect(request.path)
        result = request._correction_result
        self.message_user(
            request,
            f"Corrected {obj.task_name}{_of_iteration(obj.iteration)}: "
            f"{len(result.stale_tasks)} task(s) marked stale"
            + (f" ({', '.join(result.stale_tasks)})" if result.stale_tasks else "")
            + (
                f"; started {', '.join(a.task_name for a in result.started)}"
                if result.started
                else ""
            )
            + ".",
        )
        return super().response_change(request, obj)

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if getattr(request, "_correction_error", None):
            return None  # nothing was changed
        return super().log_change(request, obj, message)


@admin.register(Correction)
class CorrectionAdmin(ReadOnlyModelAdmin):
    """Every correction: who, when, why, before/after, the stale set, the attempts it started."""

    list_display = [
        "created_at",
        "task_name",
        "iteration",
        "operation",
        "source",
        "modified_by",
        "execute_flow",
        "flow_execution",
    ]
    list_filter = [
        "operation",
        "source",
        "execute_flow",
        ("organization", ScopedOrganizationFilter),
    ]
    list_select_related = ["flow_execution__flow"]
    search_fields = ["task_name", "modified_by", "reason"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in Correction._meta.fields]
