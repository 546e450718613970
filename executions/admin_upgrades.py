"""Upgrades in admin: a flow execution's "Upgrade to another version" page, a flow version's
"Upgrade executions to this version" page, and the upgrade jobs (read-only, with their items).

Both pages work in two steps without JavaScript: the form, then a dry run of what was asked
(upgrades.preview_upgrade; for many executions a dry-run UpgradeJob processed in the request)
with "Confirm", which carries the choices in hidden fields and calls the API's services with
`source: admin` and the admin user as actor (one execution's confirm carries the preview token:
it applies only what was shown). A refusal is an error message and writes nothing. Rows are
read through the admin's scoping (flowplatform.admin) in the request's row-level security scope
(AdminScopeMiddleware): another organization's execution or version is "not found".
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from executions.admin_upgrade_forms import UpgradeForm, UpgradeJobForm, admin_form, confirm_data
from executions.corrections import upgrade_jobs, upgrades
from executions.corrections.preview import PreviewOutdated
from executions.models import UpgradeJob, UpgradeJobItem
from flowplatform.admin import ReadOnlyModelAdmin, ScopedOrganizationFilter, scope
from flowplatform.exceptions import DomainError, InvalidInput
from flows.models import FlowVersion

ROWS = 100  # executions listed per page (the dry run, a job's page)
NOT_SHOWN = {"status", "to_version", "lease_expires_at"}  # on a job's page (`version`: its number)
PREVIEW_LIMIT = 1000  # the most executions the flow version page dry-runs within its request
OUTDATED = (
    "Not upgraded: the flow execution changed since your preview (or the choices differ from "
    "it), so nothing was applied. Review the fresh preview below and confirm again."
)


def _refusal(exc: DomainError) -> str:
    if isinstance(exc, InvalidInput):
        return "; ".join(message for _, message, _ in exc.errors)
    return exc.message


class FlowExecutionUpgrades:
    """FlowExecutionAdmin's /admin/executions/flowexecution/<id>/upgrade/ (an object tool)."""

    admin_site: Any
    model: Any

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.upgrade_view)
        upgrade = path("<path:object_id>/upgrade/", view, name="executions_flowexecution_upgrade")
        return [upgrade, *super().get_urls()]  # type: ignore[misc]

    def upgrade_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_correct_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        fe = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        if fe is None:
            raise Http404("No such flow execution.")
        posted = request.method == "POST"
        form = UpgradeForm(fe, request.POST if posted else None)
        if not posted or "_edit" in request.POST or not form.is_valid():
            return self._render(request, fe, form)
        kwargs = form.upgrade_kwargs(request)
        if "_confirm" in request.POST:
            token = form.cleaned_data["preview_token"]  # blank: never matches, so re-previewed
            try:
                result = upgrades.upgrade_flow_execution(fe, preview_token=token, **kwargs)
            except PreviewOutdated:
                messages.error(request, OUTDATED)
            except DomainError as exc:
                messages.error(request, f"Not upgraded: {_refusal(exc)}")
                return self._render(request, fe, form)
            else:
                messages.success(request, _upgraded(result))
                change = reverse("admin:executions_flowexecution_change", args=[fe.pk])
                return HttpResponseRedirect(change)
        try:
            preview = upgrades.preview_upgrade(fe, **kwargs)
        except DomainError as exc:
            messages.error(request, f"Cannot upgrade: {_refusal(exc)}")
            return self._render(request, fe, form)
        confirm = UpgradeForm(fe, confirm_data(request, preview_token=preview.preview_token))
        return self._render(request, fe, confirm, preview)

    def _render(self, request: HttpRequest, fe: Any, form: Any, preview: Any = None) -> Any:
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upgrade flow execution {fe.pk} to another version",
            "opts": self.model._meta,
            "original": fe,
            "form": form,
            "adminform": admin_form(form),
            "preview": preview,
            "changed": list(preview.change.changed.items()) if preview else [],  # DAG order
        }
        return TemplateResponse(request, "admin/executions/flowexecution/upgrade.html", context)


def _upgraded(result: upgrades.UpgradeResult) -> str:
    stale = result.stale_tasks
    started = [a.task_name for a in result.started]
    return (
        f"Upgraded from version {result.from_version} to {result.to_version}: "
        f"{len(stale)} task(s) marked stale"
        + (f" ({', '.join(stale)})" if stale else "")
        + (f"; started {', '.join(started)}" if started else "")
        + "."
    )


def outcome_counts(job: UpgradeJob) -> dict[str, Any]:
    """How many items ended each way, and the skipped and failed ones by reason. One query."""
    counts: dict[str, Any] = {"pending": 0, "skipped_by": {}, "failed_by": {}}
    rows = job.items.values_list("outcome", "code").annotate(n=Count("id")).order_by("code")
    for outcome, code, n in rows:
        if outcome in (UpgradeJobItem.Outcome.SKIPPED, UpgradeJobItem.Outcome.FAILED):
            counts[f"{outcome}_by"][code or "-"] = n
        elif outcome == UpgradeJobItem.Outcome.PENDING:
            counts["pending"] += n
    counts["skipped_by"] = sorted(counts["skipped_by"].items())
    counts["failed_by"] = sorted(counts["failed_by"].items())
    return counts


def items_page(request: HttpRequest, job: UpgradeJob) -> Any:
    """A page of the job's items, in its order (?p=N). Two queries, whatever the page size."""
    rows = job.items.order_by("position").select_related("flow_execution")
    return Paginator(rows, ROWS).get_page(request.GET.get("p"))


@admin.register(UpgradeJob)
class UpgradeJobAdmin(ReadOnlyModelAdmin):
    """Upgrade jobs, read-only: progress, outcome counts by reason, each execution's outcome;
    and the flow version page that starts one (/admin/executions/upgradejob/new/<version>/)."""

    list_display = [
        "created_at",
        "flow",
        "version",
        "status",
        "dry_run",
        "matched",
        "upgraded",
        "skipped",
        "failed",
    ]
    list_filter = ["status", "dry_run", "source", ("organization", ScopedOrganizationFilter)]
    list_select_related = ["flow", "to_version"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "status",
        "version",
        *(f.name for f in UpgradeJob._meta.fields if f.name not in NOT_SHOWN),
    ]
    fieldsets = [  # the counts are in the outcome table below them (with the reasons)
        (
            None,
            {
                "fields": [
                    ("status", "flow", "version"),
                    ("execute_flow", "dry_run", "source"),
                    *("filters", "reason", "error"),
                ]
            },
        ),
        (
            "Record",
            {
                "fields": [
                    ("modified_by", "created_at", "updated_at"),
                    ("started_at", "finished_at"),
                    ("id", "organization"),
                ]
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("flow", "to_version", "organization")

    @admin.display(description="To version", ordering="to_version__version")
    def version(self, obj: UpgradeJob) -> int:
        return obj.to_version.version

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.new_view)
        new = path("new/<path:version_id>/", view, name="executions_upgradejob_new")
        return [new, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        job = self.get_object(request, unquote(object_id))
        extra = dict(extra_context or {})
        if job is not None:
            extra.update(job=job, counts=outcome_counts(job), page=items_page(request, job))
            extra["running"] = job.status in (UpgradeJob.Status.QUEUED, UpgradeJob.Status.RUNNING)
        return super().change_view(request, object_id, form_url, extra)

    def new_view(self, request: HttpRequest, version_id: str) -> HttpResponse:
        """The flow version's "Upgrade executions to this version": form, dry run, confirm."""
        if not self._member(request):
            raise PermissionDenied
        try:
            rows = scope(FlowVersion.objects.select_related("flow"), request)
            version = rows.filter(pk=unquote(version_id)).first()
        except (ValueError, ValidationError):
            version = None
        if version is None:
            raise Http404("No such flow version.")
        flow = version.flow
        posted = request.method == "POST"
        form = UpgradeJobForm(flow, request.POST if posted else None)
        if flow.deleted_at is not None:
            messages.error(request, "The flow is deleted; its executions cannot be upgraded.")
            return self._render_new(request, version, None)
        if not posted or "_edit" in request.POST or not form.is_valid():
            return self._render_new(request, version, form)
        kwargs = form.job_kwargs(request, version)
        if "_confirm" in request.POST:
            try:
                job = upgrade_jobs.create_job(flow, **kwargs)
            except DomainError as exc:
                messages.error(request, f"Not started: {_refusal(exc)}")
                return self._render_new(request, version, form)
            self._started(request, job, form.cleaned_data["dry_run_job"])
            return HttpResponseRedirect(
                reverse("admin:executions_upgradejob_change", args=[job.pk])
            )
        matched = upgrade_jobs.matching(flow, **form.filters()).count()
        if matched > PREVIEW_LIMIT:
            messages.error(
                request,
                f"{matched} executions match; this page dry-runs at most {PREVIEW_LIMIT}. "
                "Narrow the filters, or use POST /flows/{id}/upgrade-executions or "
                "manage.py upgrade_executions.",
            )
            return self._render_new(request, version, form)
        try:
            dry = upgrade_jobs.create_job(flow, dry_run=True, enqueue=False, **kwargs)
        except DomainError as exc:
            messages.error(request, f"Cannot upgrade: {_refusal(exc)}")
            return self._render_new(request, version, form)
        dry = upgrade_jobs.process(dry.pk, flow.organization_id)
        confirm = UpgradeJobForm(flow, confirm_data(request, dry_run_job=str(dry.pk)))
        return self._render_new(request, version, confirm, dry)

    def _started(self, request: HttpRequest, job: UpgradeJob, dry_run_id: Any) -> None:
        messages.success(
            request,
            f"Upgrade job started: {job.matched} execution(s) matched, moving to version "
            f"{job.to_version.version}.",
        )
        dry = scope(UpgradeJob.objects.filter(pk=dry_run_id), request).values_list(
            "matched", flat=True
        )
        if dry_run_id and dry and dry[0] != job.matched:
            messages.warning(
                request,
                f"The dry run matched {dry[0]} execution(s); executions were added or changed "
                "since. The job's page shows what became of each.",
            )

    def _render_new(self, request: HttpRequest, version: Any, form: Any, dry: Any = None) -> Any:
        context = {
            **self.admin_site.each_context(request),
            "title": f"Upgrade executions of {version.flow.name} to version {version.version}",
            "opts": self.model._meta,
            "version": version,
            "form": form,
            "adminform": admin_form(form),
            "job": dry,
        }
        if dry is not None:
            context.update(counts=outcome_counts(dry), page=items_page(request, dry))
        return TemplateResponse(request, "admin/executions/upgradejob/new.html", context)
