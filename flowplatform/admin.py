"""Admin building blocks: every tenant model's admin is scoped to the user's organizations.

Superusers see every organization. A staff user sees only the organizations they are a member
of (tenancy.Membership), everywhere admin reads rows: change lists, change forms (another
organization's object is "not found"), foreign-key choices, autocomplete and actions, which
all go through `get_queryset`. Membership is what grants access: a staff member of an
organization may view its data and correct it through the same services as the API.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from flowplatform.admin_history import HistoryDiffs


def organization_ids(request: HttpRequest) -> list[Any] | None:
    """The organizations the admin user may see; None means all (a superuser). Cached per
    request."""
    user = request.user
    if user.is_superuser:
        return None
    cached = getattr(request, "_flowplatform_org_ids", None)
    if cached is None:
        cached = list(user.memberships.values_list("organization_id", flat=True))
        request._flowplatform_org_ids = cached
    return cached


def scope(queryset: QuerySet, request: HttpRequest, field: str = "organization") -> QuerySet:
    ids = organization_ids(request)
    if ids is None:
        return queryset
    return queryset.filter(**{f"{field}__in": ids})


class ScopedOrganizationFilter(admin.RelatedFieldListFilter):
    """The organization list filter, offering only the organizations the user may see."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> list:
        return [
            (org.pk, str(org))
            for org in scope(field.related_model.objects.order_by("slug"), request, "pk")
        ]


class TenantAdmin(admin.ModelAdmin):
    """A tenant model's admin, scoped to the user's organizations (module docstring)."""

    organization_field = "organization"
    editable = False  # whether members may change rows (through `save_model`'s service call)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return scope(super().get_queryset(request), request, self.organization_field)

    def _member(self, request: HttpRequest) -> bool:
        user = request.user
        return (
            user.is_active
            and user.is_staff
            and (user.is_superuser or bool(organization_ids(request)))
        )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._member(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._member(request) and (obj is None or self._sees(request, obj))

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.editable and self.has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def _sees(self, request: HttpRequest, obj: Model) -> bool:
        ids = organization_ids(request)
        if ids is None:
            return True
        owner = obj
        for part in self.organization_field.split("__")[:-1]:
            owner = getattr(owner, part)
        return getattr(owner, "organization_id", None) in ids

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if related._meta.model_name == "organization":
            kwargs["queryset"] = scope(related.objects.all(), request, "pk")
        elif any(f.name == "organization" for f in related._meta.fields):
            kwargs["queryset"] = scope(related._default_manager.all(), request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ScopedHistoryMixin(HistoryDiffs):
    """django-simple-history's views for rows the user may see only; another organization's
    row is "not found" (its history view would otherwise answer 403, revealing it exists).
    Reverting from history is disabled (SIMPLE_HISTORY_REVERT_DISABLED): it would bypass the
    services. Each history row shows its field diffs and reason (flowplatform.admin_history)."""

    def history_view(self, request: HttpRequest, object_id: str, *args: Any, **kwargs: Any) -> Any:
        from django.contrib.admin.utils import unquote
        from django.http import Http404

        try:
            visible = self.get_queryset(request).filter(pk=unquote(object_id)).exists()
        except (ValueError, ValidationError):
            visible = False
        if not visible:
            raise Http404("No such object.")
        return super().history_view(request, object_id, *args, **kwargs)

    def history_form_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        raise PermissionDenied


class ReadOnlyModelAdmin(TenantAdmin):
    """Scoped and read-only: rows change only through the services (API, commands)."""
