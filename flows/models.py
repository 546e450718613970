"""Flow and its immutable FlowVersions (1, 2, …); executions pin the version they ran."""

from __future__ import annotations

from django.db import models

from flowplatform.tenancy.models import TenantOwned


class Flow(TenantOwned):
    name = models.CharField(max_length=200, help_text="Flow name, unique in the organization.")
    description = models.TextField(blank=True, default="", help_text="Free-text description.")
    current_version = models.ForeignKey(
        "FlowVersion",
        on_delete=models.PROTECT,
        null=True,
        related_name="+",
        help_text="The latest version; new executions run it unless they name another.",
    )
    modified_by = models.CharField(max_length=200, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Set when soft-deleted.")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=models.Q(deleted_at__isnull=True),
                name="flow_name_unique_per_org",
            ),
            models.CheckConstraint(condition=~models.Q(name=""), name="flow_name_not_empty"),
        ]
        indexes = [models.Index(fields=["organization", "created_at"])]

    def __str__(self) -> str:
        return self.name


class FlowVersion(TenantOwned):
    """One immutable revision of a flow's definition: the YAML text and its parsed form."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField(help_text="1 for the first definition, then +1.")
    definition = models.TextField(help_text="The YAML text exactly as submitted.")
    parsed = models.JSONField(help_text="The YAML parsed into JSON-compatible data.")
    created_by = models.CharField(max_length=200, default="system")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["flow", "version"]
        constraints = [
            models.UniqueConstraint(fields=["flow", "version"], name="flow_version_unique"),
            models.CheckConstraint(condition=models.Q(version__gte=1), name="flow_version_gte_1"),
        ]

    def __str__(self) -> str:
        return f"{self.flow_id} v{self.version}"
